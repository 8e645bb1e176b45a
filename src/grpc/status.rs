//! The one table from failures to gRPC status.
//!
//! [`answer`] maps every [`LicensingError`] to its code, its stable
//! `google.rpc.ErrorInfo` reason, the message the caller sees and the level it
//! is logged at; the match is exhaustive, so a new variant forces a decision
//! here. Every status carries `ErrorInfo` (domain [`ERROR_DOMAIN`]), plus
//! `BadRequest` field violations for invalid input and `RetryInfo` where a
//! delay is known. Messages are written here, never taken from upstream
//! bodies, so they are safe to show and free of secrets.
//!
//! Each failure is logged once, here, at a level that matches who must act:
//! DEBUG and INFO for the caller's own mistakes, WARN for refusals an
//! operator may want to see (policy, throttling, shedding), ERROR when the
//! gateway or Cryptlex failed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use tracing::Level;

use crate::cryptlex::CryptlexError;
use crate::licensing::{Denial, LicensingError, Missing};

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "licensing-gateway";

/// Suggested back-off when an upstream failure gave no delay of its own.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Suggested back-off for a call shed because every call slot was taken.
const OVERLOADED_RETRY_DELAY: Duration = Duration::from_millis(250);

/// How one failure is answered and logged.
struct Answer {
    code: Code,
    /// `ErrorInfo.reason`: stable, machine-readable, documented in the README.
    reason: &'static str,
    /// What the caller reads in `grpc-message`.
    message: Cow<'static, str>,
    level: Level,
    /// The log line's text.
    log: &'static str,
}

/// The table: every failure's code, reason, message and log level.
fn answer(error: &LicensingError) -> Answer {
    use LicensingError as E;
    let row = |code, reason, message: &'static str, level, log| Answer {
        code,
        reason,
        message: Cow::Borrowed(message),
        level,
        log,
    };
    match error {
        E::InvalidArgument(violations) => Answer {
            code: Code::InvalidArgument,
            reason: "INVALID_ARGUMENT",
            message: Cow::Owned(format!("invalid request: {violations}")),
            level: Level::DEBUG,
            log: "rejected invalid request",
        },
        E::InvalidCredentials => row(
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
            "invalid email or password",
            Level::INFO,
            "login refused: invalid credentials",
        ),
        E::TokenMissing => row(
            Code::Unauthenticated,
            "TOKEN_MISSING",
            "missing or malformed `authorization: Bearer <token>` metadata",
            Level::INFO,
            "call without a well-formed bearer token",
        ),
        E::TokenInvalid => row(
            Code::Unauthenticated,
            "TOKEN_INVALID",
            "the token is invalid or has expired; sign in again",
            Level::INFO,
            "token refused by cryptlex",
        ),
        E::PermissionDenied(denial) => row(
            Code::PermissionDenied,
            match denial {
                Denial::ClientNotAllowed => "CLIENT_NOT_ALLOWED",
                Denial::ProductNotAllowed => "PRODUCT_NOT_ALLOWED",
                Denial::OperationNotAllowed => "OPERATION_NOT_ALLOWED",
                Denial::UpstreamDenied => "UPSTREAM_PERMISSION_DENIED",
            },
            "permission denied",
            Level::WARN,
            "permission denied",
        ),
        E::NotFound(missing) => row(
            Code::NotFound,
            "NOT_FOUND",
            match missing {
                Missing::User => "user not found",
                Missing::Resource => "resource not found",
                Missing::License => "license not found",
                Missing::Activation => "activation not found",
            },
            Level::DEBUG,
            "not found",
        ),
        E::TooManyAttempts { .. } => row(
            Code::ResourceExhausted,
            "TOO_MANY_ATTEMPTS",
            "too many attempts; try again later",
            Level::WARN,
            "sign-in throttled",
        ),
        E::TooManyRequests { .. } => row(
            Code::ResourceExhausted,
            "TOO_MANY_REQUESTS",
            "too many requests from this network; try again shortly",
            Level::WARN,
            "upstream calls from one network throttled",
        ),
        E::TwoFactorRequired => row(
            Code::Unauthenticated,
            "TWO_FACTOR_REQUIRED",
            "this account uses two-factor authentication: sign in again with the code from the authenticator app",
            Level::INFO,
            "login needs a two-factor code",
        ),
        E::InvalidTwoFactorCode => row(
            Code::InvalidArgument,
            "INVALID_TWO_FACTOR_CODE",
            "the two-factor code is wrong or has expired",
            Level::INFO,
            "two-factor code refused",
        ),
        E::TwoFactorNotEnabled => row(
            Code::FailedPrecondition,
            "TWO_FACTOR_NOT_ENABLED",
            "two-factor authentication is not set up: start enrolment first",
            Level::INFO,
            "two-factor call without enrolment",
        ),
        E::WrongCurrentPassword => row(
            Code::InvalidArgument,
            "WRONG_CURRENT_PASSWORD",
            "the current password is wrong",
            Level::INFO,
            "password change refused: wrong current password",
        ),
        E::ResetTokenInvalid => row(
            Code::FailedPrecondition,
            "RESET_TOKEN_INVALID",
            "the password-reset link is invalid or has expired; ask for a new one",
            Level::INFO,
            "password reset refused: invalid token",
        ),
        E::DeactivationLimitReached => row(
            Code::FailedPrecondition,
            "DEACTIVATION_LIMIT_REACHED",
            "this license has used all its allowed deactivations",
            Level::INFO,
            "deactivation refused: limit reached",
        ),
        E::EmailTaken => row(
            Code::AlreadyExists,
            "EMAIL_TAKEN",
            "an account with this email address already exists",
            Level::INFO,
            "sign-up refused: email taken",
        ),
        E::SignUpDisabled => row(
            Code::Unimplemented,
            "SIGN_UP_DISABLED",
            "sign-up is disabled on this gateway",
            Level::INFO,
            "sign-up refused: disabled",
        ),
        E::RequestIdReused => row(
            Code::FailedPrecondition,
            "REQUEST_ID_REUSED",
            "request_id was already used for a different request; use a new request_id for a new request",
            Level::WARN,
            "request id reused with a different request",
        ),
        E::RequestInProgress { .. } => row(
            Code::Aborted,
            "REQUEST_IN_PROGRESS",
            "the same request is being processed; retry with the same request_id",
            Level::INFO,
            "request in progress",
        ),
        E::IssuanceRejected { detail } => Answer {
            code: Code::FailedPrecondition,
            reason: "UPSTREAM_REJECTED",
            message: Cow::Owned(detail.clone()),
            level: Level::WARN,
            log: "issuance rejected by cryptlex",
        },
        E::Unavailable { source, .. } => {
            let (reason, level, log) = match source.as_ref() {
                // The gateway's own budget or breaker: expected under load.
                CryptlexError::BudgetExhausted { .. } => (
                    "UPSTREAM_BUDGET_EXHAUSTED",
                    Level::WARN,
                    "read shed before reaching cryptlex",
                ),
                CryptlexError::CircuitOpen { .. } => (
                    "UPSTREAM_CIRCUIT_OPEN",
                    Level::WARN,
                    "read shed before reaching cryptlex",
                ),
                CryptlexError::RateLimited { .. } => (
                    "UPSTREAM_RATE_LIMITED",
                    Level::ERROR,
                    "cryptlex unavailable",
                ),
                CryptlexError::Timeout { .. } => {
                    ("UPSTREAM_TIMEOUT", Level::ERROR, "cryptlex unavailable")
                }
                CryptlexError::Malformed { .. }
                | CryptlexError::TooLarge { .. }
                | CryptlexError::Redirected { .. } => (
                    "UPSTREAM_BAD_RESPONSE",
                    Level::ERROR,
                    "cryptlex unavailable",
                ),
                CryptlexError::ServerError { .. }
                | CryptlexError::Connect(_)
                | CryptlexError::Transport(_)
                | CryptlexError::Rejected { .. }
                | CryptlexError::DeadlineExceeded { .. } => {
                    ("UPSTREAM_UNAVAILABLE", Level::ERROR, "cryptlex unavailable")
                }
            };
            Answer {
                code: Code::Unavailable,
                reason,
                message: Cow::Borrowed("cryptlex is temporarily unavailable; retry later"),
                level,
                log,
            }
        }
        E::DeadlineExceeded => row(
            Code::DeadlineExceeded,
            "DEADLINE_EXCEEDED",
            "the deadline expired before the call could complete",
            Level::INFO,
            "deadline exceeded",
        ),
        // Loud: issuance and sign-up are down until an operator acts.
        E::AdminTokenRejected(_) => row(
            Code::Internal,
            "INTERNAL",
            "internal error",
            Level::ERROR,
            "CRYPTLEX REJECTED THE GATEWAY'S PERSONAL ACCESS TOKEN: check cryptlex.pat and its scopes",
        ),
        E::Internal(_) => row(
            Code::Internal,
            "INTERNAL",
            "internal error",
            Level::ERROR,
            "internal error",
        ),
    }
}

impl From<LicensingError> for Status {
    fn from(error: LicensingError) -> Self {
        let answer = answer(&error);
        log(&error, &answer);
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        match &error {
            LicensingError::InvalidArgument(violations) => {
                details.set_bad_request(
                    violations
                        .violations()
                        .iter()
                        .map(|violation| {
                            FieldViolation::new(&violation.field, &violation.description)
                        })
                        .collect::<Vec<_>>(),
                );
            }
            LicensingError::TooManyAttempts { retry_after }
            | LicensingError::TooManyRequests { retry_after }
            | LicensingError::RequestInProgress { retry_after } => {
                details.set_retry_info(Some(*retry_after));
            }
            LicensingError::Unavailable {
                retry_after,
                source,
            } => {
                if let Some(status) = source.http_status() {
                    metadata.insert("upstreamStatus".to_owned(), status.to_string());
                }
                details.set_retry_info(Some(retry_after.unwrap_or(DEFAULT_RETRY_DELAY)));
            }
            _ => {}
        }
        details.set_error_info(answer.reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(answer.code, answer.message, details)
    }
}

/// Logs one failure at its level, with what an operator needs and nothing a
/// caller could use against anyone (no upstream bodies, no secrets).
fn log(error: &LicensingError, answer: &Answer) {
    let reason = answer.reason;
    let log = answer.log;
    match error {
        LicensingError::InvalidArgument(_) => tracing::debug!(%error, "{log}"),
        LicensingError::TooManyAttempts { retry_after }
        | LicensingError::TooManyRequests { retry_after }
        | LicensingError::RequestInProgress { retry_after } => {
            let retry_after_ms = retry_after.as_millis() as u64;
            match answer.level {
                Level::WARN => tracing::warn!(retry_after_ms, "{log}"),
                _ => tracing::info!(retry_after_ms, "{log}"),
            }
        }
        LicensingError::Unavailable { source, .. } if answer.level == Level::ERROR => {
            tracing::error!(cause = %source, upstream_status = ?source.http_status(), "{log}");
        }
        LicensingError::Unavailable { source, .. } => tracing::warn!(cause = %source, "{log}"),
        LicensingError::AdminTokenRejected(source) => tracing::error!(cause = %source, "{log}"),
        LicensingError::Internal(source) => tracing::error!(cause = %source, "{log}"),
        _ => match answer.level {
            Level::ERROR => tracing::error!(reason, "{log}"),
            Level::WARN => tracing::warn!(reason, "{log}"),
            Level::INFO => tracing::info!(reason, "{log}"),
            _ => tracing::debug!(reason, "{log}"),
        },
    }
}

/// Calls the listeners' stacks refuse before any use case runs: the other
/// half of the table, for failures that are not a [`LicensingError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Every call slot of the listener was taken.
    Overloaded,
    /// The request was not a well-formed gRPC message: a protobuf that does
    /// not decode, a broken length-prefixed frame, bad gRPC-Web base64. The
    /// caller's fault, whoever it is, so it must not read as INTERNAL (which
    /// pages an operator).
    MalformedRequest,
    /// The request message is larger than the listener accepts.
    RequestTooLarge,
    /// The request message did not arrive completely in time.
    RequestBodyTimeout,
    /// A Connect call in a compression, charset or message encoding this
    /// listener does not speak.
    UnsupportedEncoding,
    /// A Connect GET of a method that has side effects (those take POST).
    MethodNotAllowed,
}

impl Refusal {
    /// The refusal's status with a more precise `message` in place of the
    /// general one (the same code and details).
    pub(super) fn with_message(self, message: impl Into<String>) -> Status {
        let general = Status::from(self);
        Status::with_details(general.code(), message, general.details().to_vec().into())
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        let (code, reason, message, level) = match refusal {
            Refusal::Overloaded => (
                Code::Unavailable,
                "OVERLOADED",
                "the gateway is overloaded; retry shortly",
                Level::WARN,
            ),
            Refusal::MalformedRequest => (
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
                "the request is not a well-formed gRPC message of this method",
                Level::DEBUG,
            ),
            Refusal::RequestTooLarge => (
                Code::ResourceExhausted,
                "REQUEST_TOO_LARGE",
                "the request message is too large",
                Level::DEBUG,
            ),
            Refusal::RequestBodyTimeout => (
                Code::DeadlineExceeded,
                "REQUEST_BODY_TIMEOUT",
                "the request message did not arrive in time",
                Level::INFO,
            ),
            Refusal::UnsupportedEncoding => (
                Code::Unimplemented,
                "UNSUPPORTED_ENCODING",
                "the request's encoding or compression is not supported",
                Level::DEBUG,
            ),
            Refusal::MethodNotAllowed => (
                Code::Unimplemented,
                "METHOD_NOT_ALLOWED",
                "this method takes POST",
                Level::DEBUG,
            ),
        };
        match level {
            Level::WARN => tracing::warn!(reason, "call refused"),
            Level::INFO => tracing::info!(reason, "call refused"),
            _ => tracing::debug!(reason, "call refused"),
        }
        let mut details = ErrorDetails::new();
        details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
        if refusal == Refusal::Overloaded {
            details.set_retry_info(Some(OVERLOADED_RETRY_DELAY));
        }
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_carries_error_info_in_the_gateway_domain() {
        let status = Status::from(LicensingError::TokenMissing);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "TOKEN_MISSING");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(status.code(), Code::Unauthenticated);
    }

    #[test]
    fn denials_keep_their_own_reasons() {
        for (denial, reason) in [
            (Denial::ClientNotAllowed, "CLIENT_NOT_ALLOWED"),
            (Denial::ProductNotAllowed, "PRODUCT_NOT_ALLOWED"),
            (Denial::OperationNotAllowed, "OPERATION_NOT_ALLOWED"),
            (Denial::UpstreamDenied, "UPSTREAM_PERMISSION_DENIED"),
        ] {
            let status = Status::from(LicensingError::PermissionDenied(denial));
            assert_eq!(status.code(), Code::PermissionDenied);
            assert_eq!(
                status.get_details_error_info().expect("error info").reason,
                reason
            );
        }
    }

    #[test]
    fn refusals_carry_error_info_and_only_overload_suggests_a_retry() {
        for (refusal, code, reason) in [
            (Refusal::Overloaded, Code::Unavailable, "OVERLOADED"),
            (
                Refusal::MalformedRequest,
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
            ),
            (
                Refusal::RequestTooLarge,
                Code::ResourceExhausted,
                "REQUEST_TOO_LARGE",
            ),
            (
                Refusal::RequestBodyTimeout,
                Code::DeadlineExceeded,
                "REQUEST_BODY_TIMEOUT",
            ),
            (
                Refusal::UnsupportedEncoding,
                Code::Unimplemented,
                "UNSUPPORTED_ENCODING",
            ),
            (
                Refusal::MethodNotAllowed,
                Code::Unimplemented,
                "METHOD_NOT_ALLOWED",
            ),
        ] {
            let precise = refusal.with_message("precise");
            assert_eq!(precise.message(), "precise");
            assert_eq!(precise.code(), code);
            assert_eq!(
                precise.get_details_error_info().expect("error info").reason,
                reason
            );
            let status = Status::from(refusal);
            assert_eq!(status.code(), code);
            let info = status.get_details_error_info().expect("error info");
            assert_eq!(
                (info.reason.as_str(), info.domain.as_str()),
                (reason, ERROR_DOMAIN)
            );
            assert_eq!(
                status.get_details_retry_info().is_some(),
                refusal == Refusal::Overloaded
            );
        }
    }
}
