//! What the caller can act on: the use cases' one error enum.
//!
//! Upstream failures are translated here once, with the context that decides
//! their meaning (a 401 is the user's bad token on a user call, but a server
//! fault on a call made with the gateway's own PAT). The gRPC layer maps each
//! variant to a status in one exhaustive table (`grpc::status`).

use std::sync::Arc;
use std::time::Duration;

use crate::cryptlex::CryptlexError;
use crate::domain::ValidationErrors;

/// A failed use case.
///
/// `Clone` (causes are shared) so one upstream outcome can answer every
/// caller of a coalesced read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LicensingError {
    /// The request is malformed; nothing was sent upstream.
    #[error("invalid request: {0}")]
    InvalidArgument(ValidationErrors),
    /// Email and password do not match an account (or the account does not
    /// exist: the answer is the same on purpose).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// No `authorization: Bearer` metadata, or it is malformed.
    #[error("missing or malformed bearer token")]
    TokenMissing,
    /// The access or refresh token is unknown, expired or revoked.
    #[error("token is invalid or expired")]
    TokenInvalid,
    /// The caller is authenticated but not allowed to do this.
    #[error("permission denied: {reason}")]
    PermissionDenied { reason: &'static str },
    /// What the caller asked for does not exist (for them).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Too many login or sign-up attempts for this email or from this
    /// address; nothing was sent upstream.
    #[error("too many attempts")]
    TooManyAttempts { retry_after: Duration },
    /// Sign-up with an email that already has an account.
    #[error("email address is already taken")]
    EmailTaken,
    /// Sign-up is switched off in the configuration.
    #[error("sign-up is disabled")]
    SignUpDisabled,
    /// An issuance request id was reused for a different request.
    #[error("request id reused with a different request")]
    RequestIdReused,
    /// The same issuance request is being processed right now.
    #[error("request is already in progress")]
    RequestInProgress { retry_after: Duration },
    /// Cryptlex permanently refused the issuance (for example an unknown
    /// product); the same answer is replayed for this request id.
    #[error("cryptlex rejected the request ({reason})")]
    IssuanceRejected { reason: String, message: String },
    /// Cryptlex could not be reached or did not answer properly; the call may
    /// succeed later.
    #[error("cryptlex is unavailable")]
    Unavailable {
        retry_after: Option<Duration>,
        #[source]
        source: Arc<CryptlexError>,
    },
    /// The caller's deadline passed before the work finished.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// Cryptlex refused the gateway's own PAT: a server misconfiguration, not
    /// the caller's fault.
    #[error("cryptlex rejected the gateway's personal access token")]
    AdminTokenRejected(#[source] Arc<CryptlexError>),
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl From<ValidationErrors> for LicensingError {
    fn from(errors: ValidationErrors) -> Self {
        Self::InvalidArgument(errors)
    }
}

impl From<crate::domain::FieldViolation> for LicensingError {
    fn from(violation: crate::domain::FieldViolation) -> Self {
        Self::InvalidArgument(violation.into())
    }
}

impl LicensingError {
    /// Wraps an unexpected failure.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(Arc::from(error.into()))
    }

    /// The stable machine-readable reason sent in `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenInvalid => "TOKEN_INVALID",
            Self::PermissionDenied { reason } => reason,
            Self::NotFound { .. } => "NOT_FOUND",
            Self::TooManyAttempts { .. } => "TOO_MANY_ATTEMPTS",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::SignUpDisabled => "SIGN_UP_DISABLED",
            Self::RequestIdReused => "REQUEST_ID_REUSED",
            Self::RequestInProgress { .. } => "REQUEST_IN_PROGRESS",
            Self::IssuanceRejected { reason, .. } => reason,
            Self::Unavailable { source, .. } => match source.as_ref() {
                CryptlexError::RateLimited { .. } => "UPSTREAM_RATE_LIMITED",
                CryptlexError::BudgetExhausted { .. } => "UPSTREAM_BUDGET_EXHAUSTED",
                CryptlexError::CircuitOpen { .. } => "UPSTREAM_CIRCUIT_OPEN",
                CryptlexError::Timeout { .. } => "UPSTREAM_TIMEOUT",
                CryptlexError::Malformed { .. }
                | CryptlexError::TooLarge { .. }
                | CryptlexError::Redirected { .. } => "UPSTREAM_BAD_RESPONSE",
                _ => "UPSTREAM_UNAVAILABLE",
            },
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::AdminTokenRejected(_) | Self::Internal(_) => "INTERNAL",
        }
    }
}

/// Whose token a Cryptlex call carried; decides what 401/403 mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// `POST /v3/accounts/login`: any 4xx means the credentials did not work.
    Login,
    /// A refresh-token exchange: any 4xx means the refresh token is no good.
    Refresh,
    /// A call with the user's own access token.
    User,
    /// A call with the gateway's PAT.
    Admin,
}

/// Translates a Cryptlex failure for a call made as `caller`.
pub(crate) fn upstream(caller: Caller, error: CryptlexError) -> LicensingError {
    match error {
        CryptlexError::RateLimited { retry_after }
        | CryptlexError::ServerError { retry_after, .. } => LicensingError::Unavailable {
            retry_after,
            source: Arc::new(error),
        },
        CryptlexError::Timeout { .. }
        | CryptlexError::Connect(_)
        | CryptlexError::Transport(_)
        | CryptlexError::Malformed { .. }
        | CryptlexError::TooLarge { .. }
        | CryptlexError::Redirected { .. } => LicensingError::Unavailable {
            retry_after: None,
            source: Arc::new(error),
        },
        CryptlexError::BudgetExhausted { retry_after, .. }
        | CryptlexError::CircuitOpen { retry_after } => LicensingError::Unavailable {
            retry_after: Some(retry_after),
            source: Arc::new(error),
        },
        CryptlexError::DeadlineExceeded { .. } => LicensingError::DeadlineExceeded,
        CryptlexError::Status { status, .. } => match (caller, status) {
            (Caller::Login, 400..=499) => LicensingError::InvalidCredentials,
            (Caller::Refresh, 400..=499) => LicensingError::TokenInvalid,
            (Caller::User, 401) => LicensingError::TokenInvalid,
            (Caller::User, 403) => LicensingError::PermissionDenied {
                reason: "UPSTREAM_PERMISSION_DENIED",
            },
            (Caller::Admin, 401 | 403) => LicensingError::AdminTokenRejected(Arc::new(error)),
            (Caller::User | Caller::Admin, 404) => LicensingError::NotFound { what: "resource" },
            // Anything else means we sent something Cryptlex considers wrong
            // after our own validation passed: our bug, not the caller's.
            _ => LicensingError::internal(error),
        },
    }
}
