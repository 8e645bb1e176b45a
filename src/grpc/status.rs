//! The one table from [`LicensingError`] to gRPC status.
//!
//! Every status carries `google.rpc.ErrorInfo` (a stable `reason` in our
//! domain), plus `BadRequest` field violations for invalid input and
//! `RetryInfo` where a delay is known. Messages are written here, never taken
//! from upstream bodies, so they are safe to show and free of secrets.
//!
//! Each failure is logged once, here, at a level that matches who must act.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::licensing::LicensingError;

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "licensing-gateway";

impl From<LicensingError> for Status {
    fn from(error: LicensingError) -> Self {
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        let (code, message): (Code, String) = match &error {
            LicensingError::InvalidArgument(violations) => {
                tracing::debug!(error = %error, "rejected invalid request");
                details.set_bad_request(
                    violations
                        .violations()
                        .iter()
                        .map(|violation| {
                            FieldViolation::new(&violation.field, &violation.description)
                        })
                        .collect::<Vec<_>>(),
                );
                (
                    Code::InvalidArgument,
                    format!("invalid request: {violations}"),
                )
            }
            LicensingError::InvalidCredentials => {
                tracing::info!("login refused: invalid credentials");
                (Code::Unauthenticated, "invalid email or password".into())
            }
            LicensingError::TokenMissing => {
                tracing::info!("call without a well-formed bearer token");
                (
                    Code::Unauthenticated,
                    "missing or malformed `authorization: Bearer <token>` metadata".into(),
                )
            }
            LicensingError::TokenInvalid => {
                tracing::info!("token refused by cryptlex");
                (
                    Code::Unauthenticated,
                    "the token is invalid or has expired; sign in again".into(),
                )
            }
            LicensingError::PermissionDenied { reason } => {
                tracing::warn!(reason, "permission denied");
                (Code::PermissionDenied, "permission denied".into())
            }
            LicensingError::NotFound { what } => {
                tracing::debug!(what, "not found");
                (Code::NotFound, format!("{what} not found"))
            }
            LicensingError::TooManyAttempts { retry_after } => {
                tracing::warn!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "sign-in throttled"
                );
                details.set_retry_info(Some(*retry_after));
                (
                    Code::ResourceExhausted,
                    "too many attempts; try again later".into(),
                )
            }
            LicensingError::EmailTaken => {
                tracing::info!("sign-up refused: email taken");
                (
                    Code::AlreadyExists,
                    "an account with this email address already exists".into(),
                )
            }
            LicensingError::SignUpDisabled => {
                tracing::info!("sign-up refused: disabled");
                (
                    Code::Unimplemented,
                    "sign-up is disabled on this gateway".into(),
                )
            }
            LicensingError::RequestIdReused => {
                tracing::warn!("request id reused with a different request");
                (
                    Code::FailedPrecondition,
                    "request_id was already used for a different request; use a new request_id for a new request".into(),
                )
            }
            LicensingError::RequestInProgress { retry_after } => {
                tracing::info!(
                    retry_after_ms = retry_after.as_millis() as u64,
                    "request in progress"
                );
                details.set_retry_info(Some(*retry_after));
                (
                    Code::Aborted,
                    "the same request is being processed; retry with the same request_id".into(),
                )
            }
            LicensingError::IssuanceRejected { reason, message } => {
                tracing::warn!(reason, "issuance rejected by cryptlex");
                (Code::FailedPrecondition, message.clone())
            }
            LicensingError::Unavailable {
                retry_after,
                source,
            } => {
                if source.is_shed_by_gateway() {
                    // The gateway's own budget or breaker: expected under load.
                    tracing::warn!(cause = %source, "read shed before reaching cryptlex");
                } else {
                    tracing::error!(
                        cause = %source,
                        upstream_status = ?source.http_status(),
                        "cryptlex unavailable"
                    );
                }
                if let Some(status) = source.http_status() {
                    metadata.insert("upstreamStatus".to_owned(), status.to_string());
                }
                details.set_retry_info(Some(retry_after.unwrap_or(DEFAULT_RETRY_DELAY)));
                (
                    Code::Unavailable,
                    "cryptlex is temporarily unavailable; retry later".into(),
                )
            }
            LicensingError::DeadlineExceeded => {
                tracing::info!("deadline exceeded");
                (
                    Code::DeadlineExceeded,
                    "the deadline expired before the call could complete".into(),
                )
            }
            LicensingError::AdminTokenRejected(source) => {
                // Loud: issuance and sign-up are down until an operator acts.
                tracing::error!(cause = %source, "CRYPTLEX REJECTED THE GATEWAY'S PERSONAL ACCESS TOKEN: check cryptlex.pat and its scopes");
                (Code::Internal, "internal error".into())
            }
            LicensingError::Internal(source) => {
                tracing::error!(cause = %source, "internal error");
                (Code::Internal, "internal error".into())
            }
        };
        details.set_error_info(error.reason(), ERROR_DOMAIN, metadata);
        Status::with_error_details(code, message, details)
    }
}

/// Suggested back-off when an upstream failure gave no delay of its own.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
