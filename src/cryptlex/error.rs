//! What can go wrong talking to Cryptlex.
//!
//! The variants say what happened on the wire, not what it means for the
//! caller: the use cases decide that (a 401 is the user's expired token on a
//! `/v3/me` call but a server fault on a PAT call).

use std::time::Duration;

/// What a 4xx answer means, decided here once from the status and Cryptlex's
/// error `code`, so the use cases match on meaning rather than on numbers and
/// strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 400 or 422: the request was refused as invalid.
    Invalid,
    /// 401: the credential the call carried is not accepted.
    Unauthenticated,
    /// 403: the credential is good but may not do this.
    Forbidden,
    /// 404: what the call named does not exist (for this credential).
    NotFound,
    /// 409, or 400 with `DUPLICATE_FIELD_VALUE`: a uniqueness conflict, such
    /// as an email address that already has an account.
    Conflict,
    /// Any other 4xx.
    Other,
    /// A 4xx whose body is not Cryptlex's error body (`{"message": ...}` as
    /// JSON), so something in between answered: a proxy, a load balancer, a
    /// web application firewall, a captive portal. It says nothing about the
    /// request itself, so it is treated as a transient fault of the way to
    /// Cryptlex, never as a refusal (which would, for example, reject an
    /// issuance request id for good).
    Unrecognized,
}

impl Rejection {
    /// Classifies a 4xx status and Cryptlex's error `code`, for an answer
    /// known to come from Cryptlex.
    pub(crate) fn classify(status: u16, code: Option<ErrorCode>) -> Self {
        match (status, code) {
            (409, _) | (400, Some(ErrorCode::DuplicateFieldValue)) => Self::Conflict,
            (400 | 422, _) => Self::Invalid,
            (401, _) => Self::Unauthenticated,
            (403, _) => Self::Forbidden,
            (404, _) => Self::NotFound,
            _ => Self::Other,
        }
    }
}

/// The error `code`s Cryptlex documents (its OpenAPI document and the
/// activation clients' constants, see `cryptlex-api.md`). Only these are kept
/// from an answer: any other string (which could hold markup, or anything at
/// all, when a proxy or an attacker on the path writes the body) is dropped,
/// so nothing Cryptlex-controlled but this fixed set can reach a caller's
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// An email address (or another unique field) is already taken.
    DuplicateFieldValue,
    AuthenticationFailed,
    InvalidProductId,
    InvalidLicenseKey,
    InvalidLicenseType,
    RevokedLicense,
    ActivationLimitReached,
    DeactivationLimitReached,
    InvalidActivationFingerprint,
    VmActivationNotAllowed,
    CountryNotAllowed,
    IpAddressNotAllowed,
    MeterAttributeUsesLimitReached,
    // Decided, not documented: Cryptlex's document does not say how login,
    // `PATCH /v3/me` and the password calls refuse these. The sandbox answers
    // with these codes (`cryptlex_sandbox::portal`, the one place that says
    // so); correct both together if the real API differs.
    /// Login of an account with two-factor authentication, without a code.
    TwoFactorCodeRequired,
    /// A two-factor code or recovery code that does not match.
    InvalidTwoFactorCode,
    /// Enabling two-factor authentication before a secret was generated, or
    /// recovery codes for an account without two-factor authentication.
    TwoFactorNotEnabled,
    /// `update-password` with a wrong `oldPassword`.
    InvalidPassword,
    /// `reset-password` with an unknown, used or expired token.
    InvalidResetToken,
}

impl ErrorCode {
    const ALL: [Self; 18] = [
        Self::DuplicateFieldValue,
        Self::AuthenticationFailed,
        Self::InvalidProductId,
        Self::InvalidLicenseKey,
        Self::InvalidLicenseType,
        Self::RevokedLicense,
        Self::ActivationLimitReached,
        Self::DeactivationLimitReached,
        Self::InvalidActivationFingerprint,
        Self::VmActivationNotAllowed,
        Self::CountryNotAllowed,
        Self::IpAddressNotAllowed,
        Self::MeterAttributeUsesLimitReached,
        Self::TwoFactorCodeRequired,
        Self::InvalidTwoFactorCode,
        Self::TwoFactorNotEnabled,
        Self::InvalidPassword,
        Self::InvalidResetToken,
    ];

    /// The documented code spelled exactly `code`, or `None` for any other
    /// string.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == code)
    }

    /// The code as Cryptlex spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DuplicateFieldValue => "DUPLICATE_FIELD_VALUE",
            Self::AuthenticationFailed => "AUTHENTICATION_FAILED",
            Self::InvalidProductId => "INVALID_PRODUCT_ID",
            Self::InvalidLicenseKey => "INVALID_LICENSE_KEY",
            Self::InvalidLicenseType => "INVALID_LICENSE_TYPE",
            Self::RevokedLicense => "REVOKED_LICENSE",
            Self::ActivationLimitReached => "ACTIVATION_LIMIT_REACHED",
            Self::DeactivationLimitReached => "DEACTIVATION_LIMIT_REACHED",
            Self::InvalidActivationFingerprint => "INVALID_ACTIVATION_FINGERPRINT",
            Self::VmActivationNotAllowed => "VM_ACTIVATION_NOT_ALLOWED",
            Self::CountryNotAllowed => "COUNTRY_NOT_ALLOWED",
            Self::IpAddressNotAllowed => "IP_ADDRESS_NOT_ALLOWED",
            Self::MeterAttributeUsesLimitReached => "METER_ATTRIBUTE_USES_LIMIT_REACHED",
            Self::TwoFactorCodeRequired => "TWO_FACTOR_CODE_REQUIRED",
            Self::InvalidTwoFactorCode => "INVALID_TWO_FACTOR_CODE",
            Self::TwoFactorNotEnabled => "TWO_FACTOR_NOT_ENABLED",
            Self::InvalidPassword => "INVALID_PASSWORD",
            Self::InvalidResetToken => "INVALID_RESET_TOKEN",
        }
    }
}

/// A failed Cryptlex call.
#[derive(Debug, thiserror::Error)]
pub enum CryptlexError {
    /// Cryptlex (or, for [`Rejection::Unrecognized`], something in between)
    /// refused the call with a 4xx answer (other than 429).
    #[error("cryptlex answered http {status}")]
    Rejected {
        status: u16,
        /// What the refusal means, classified once (see [`Rejection`]).
        kind: Rejection,
        /// Cryptlex's error `code`, when it sent a documented one: the only
        /// part of an error body that may be shown to a caller.
        code: Option<ErrorCode>,
        /// Cryptlex's error `message`, for logs only (never shown to callers).
        message: Option<String>,
    },
    /// Cryptlex refused the call for its rate limit (HTTP 429).
    #[error("cryptlex rate limit reached")]
    RateLimited {
        /// How long Cryptlex asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// Cryptlex answered 5xx: a server-side fault, possibly transient.
    #[error("cryptlex server error http {status}")]
    ServerError {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Our per-request timeout fired before Cryptlex answered.
    #[error("cryptlex request timed out")]
    Timeout {
        /// Whether the request may have reached Cryptlex.
        maybe_sent: bool,
    },
    /// The caller's deadline left no time for (the rest of) the call.
    #[error("deadline exceeded before cryptlex answered")]
    DeadlineExceeded {
        /// Whether the request may have reached Cryptlex.
        maybe_sent: bool,
    },
    /// No connection could be made; the request was certainly not sent.
    #[error("could not connect to cryptlex")]
    Connect(#[source] reqwest::Error),
    /// The connection failed after the request may have been sent (reset,
    /// closed, truncated).
    #[error("connection to cryptlex failed")]
    Transport(#[source] reqwest::Error),
    /// A success status with a body that is not what the API documents.
    #[error("cryptlex sent a malformed response: {detail}")]
    Malformed { detail: String },
    /// The gateway's own rate budget has no slot in time for this call; it
    /// was not sent.
    #[error("cryptlex rate budget exhausted for {} calls", priority.as_str())]
    BudgetExhausted {
        retry_after: Duration,
        priority: super::Priority,
    },
    /// The circuit breaker is open after repeated upstream faults; the call
    /// was not sent.
    #[error("cryptlex circuit breaker open")]
    CircuitOpen { retry_after: Duration },
    /// The response body exceeded the size limit.
    #[error("cryptlex response exceeded {limit} bytes")]
    TooLarge { limit: usize },
    /// Cryptlex answered with a redirect, which the API never does; we do not
    /// follow redirects (they could send a token to another host).
    #[error("cryptlex answered with an unexpected redirect http {status}")]
    Redirected { status: u16 },
}

impl CryptlexError {
    /// Whether a mutating request may have taken effect upstream even though
    /// no success answer arrived. Such outcomes must be reconciled, never
    /// blindly retried.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Self::Timeout { maybe_sent } | Self::DeadlineExceeded { maybe_sent } => *maybe_sent,
            // A 5xx may come from a proxy after the API did the work, and a
            // broken connection may have lost the answer.
            Self::Transport(_) | Self::ServerError { .. } => true,
            // A success status with a body we could not read: the work was
            // done and we do not know its result.
            Self::Malformed { .. } | Self::TooLarge { .. } => true,
            // Whoever answered instead of Cryptlex may have passed the
            // request on first.
            Self::Rejected {
                kind: Rejection::Unrecognized,
                ..
            } => true,
            Self::Rejected { .. }
            | Self::RateLimited { .. }
            | Self::Connect(_)
            | Self::Redirected { .. }
            | Self::BudgetExhausted { .. }
            | Self::CircuitOpen { .. } => false,
        }
    }

    /// Whether this failure says Cryptlex (or the way to it) is unhealthy,
    /// which is what the circuit breaker counts.
    pub fn is_upstream_fault(&self) -> bool {
        match self {
            Self::ServerError { .. }
            | Self::Timeout { .. }
            | Self::Connect(_)
            | Self::Transport(_)
            | Self::Malformed { .. }
            | Self::TooLarge { .. }
            | Self::Redirected { .. } => true,
            // Something in between answers instead of Cryptlex: the way to it
            // is broken, as with a redirect.
            Self::Rejected {
                kind: Rejection::Unrecognized,
                ..
            } => true,
            Self::Rejected { .. }
            | Self::RateLimited { .. }
            | Self::DeadlineExceeded { .. }
            | Self::BudgetExhausted { .. }
            | Self::CircuitOpen { .. } => false,
        }
    }

    /// Whether the gateway itself refused to send the call (its rate budget or
    /// its circuit breaker): load shedding, not an upstream failure.
    pub fn is_shed_by_gateway(&self) -> bool {
        matches!(
            self,
            Self::BudgetExhausted { .. } | Self::CircuitOpen { .. }
        )
    }

    /// The HTTP status Cryptlex answered with, if it answered at all.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Rejected { status, .. }
            | Self::ServerError { status, .. }
            | Self::Redirected { status } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_parses_back_from_its_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn codes_that_cryptlex_does_not_document_are_dropped() {
        for unknown in [
            "",
            "duplicate_field_value",
            " DUPLICATE_FIELD_VALUE",
            "<b>DUPLICATE_FIELD_VALUE</b>",
            "INVALID_USER_ID",
        ] {
            assert_eq!(ErrorCode::parse(unknown), None, "{unknown:?}");
        }
    }
}
