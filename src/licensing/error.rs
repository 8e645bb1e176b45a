//! What the caller can act on: the use cases' one error enum.
//!
//! Upstream failures are translated here once, with the context that decides
//! their meaning (a 401 is the user's bad token on a user call, but a server
//! fault on a call made with the gateway's own PAT). The gRPC layer maps each
//! variant to a status, an `ErrorInfo.reason` and a log level in one
//! exhaustive table (`grpc::status`); variants carry meanings (enums), never
//! wire strings.

use std::sync::Arc;
use std::time::Duration;

use crate::cryptlex::{CryptlexError, Rejection};
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
    #[error("permission denied: {0:?}")]
    PermissionDenied(Denial),
    /// What the caller asked for does not exist (for them).
    #[error("{0:?} not found")]
    NotFound(Missing),
    /// Too many login or sign-up attempts for this email or from this
    /// address; nothing was sent upstream.
    #[error("too many attempts")]
    TooManyAttempts { retry_after: Duration },
    /// Too many calls that needed Cryptlex came from this client's network
    /// in a short time; nothing was sent upstream.
    #[error("too many requests")]
    TooManyRequests { retry_after: Duration },
    /// The account has two-factor authentication and the sign-in carried no
    /// code: ask the user for one and sign in again.
    #[error("two-factor code required")]
    TwoFactorRequired,
    /// A two-factor code or recovery code that does not match.
    #[error("invalid two-factor code")]
    InvalidTwoFactorCode,
    /// Two-factor enrolment was not started (or two-factor authentication is
    /// off) for a call that needs it.
    #[error("two-factor authentication is not set up")]
    TwoFactorNotEnabled,
    /// `ChangePassword` with a wrong current password.
    #[error("wrong current password")]
    WrongCurrentPassword,
    /// A password-reset token that is unknown, used or expired, or names a
    /// user who does not exist (the answer is the same on purpose).
    #[error("invalid password-reset token")]
    ResetTokenInvalid,
    /// The license has used all its allowed deactivations.
    #[error("deactivation limit reached")]
    DeactivationLimitReached,
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
    /// product) or a lifecycle change (for example renewing by interval a
    /// license that has none); the same answer is replayed for this request
    /// id. `detail` is the gateway's own description (never Cryptlex's
    /// text), as stored in the ledger.
    #[error("cryptlex rejected the request: {detail}")]
    IssuanceRejected { detail: String },
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
}

/// Why a caller may not do what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The internal caller's certificate is not on the allow-list.
    ClientNotAllowed,
    /// The internal caller may not issue licenses for this product.
    ProductNotAllowed,
    /// The internal caller is on the allow-list, but its entry does not name
    /// this operation (`operations` in `[[internal.allowed_clients]]`).
    OperationNotAllowed,
    /// Cryptlex refused the user's own token for this call (403).
    UpstreamDenied,
}

/// What was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The user a license was to be issued for.
    User,
    /// Whatever a user call named (Cryptlex answered 404).
    Resource,
    /// A license that does not exist or is not the caller's.
    License,
    /// An activation that does not exist or is not the caller's.
    Activation,
}

/// Which credential a Cryptlex call carried; decides what a refusal means
/// (a 401 is the user's expired token on a user call, but a server fault on a
/// call made with the gateway's PAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential {
    /// `POST /v3/accounts/login`: any refusal means the email and password
    /// did not work. (The login use case reads the two-factor codes of a
    /// refusal first: those say the password did work.)
    Password,
    /// A refresh-token exchange: any refusal means the refresh token is no good.
    RefreshToken,
    /// The user's own access token.
    UserToken,
    /// The gateway's personal access token.
    Pat,
    /// None at all (`reset-password-request`, `reset-password`): a refusal
    /// is about the request, and one our validation should have prevented is
    /// our bug.
    Anonymous,
}

/// Translates a Cryptlex failure for a call made with `credential`.
pub(crate) fn upstream(credential: Credential, error: CryptlexError) -> LicensingError {
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
        CryptlexError::Rejected { kind, .. } => match (credential, kind) {
            // Not Cryptlex's answer (a proxy's error page): it says nothing
            // about the credential or the request, so it is no refusal.
            (_, Rejection::Unrecognized) => LicensingError::Unavailable {
                retry_after: None,
                source: Arc::new(error),
            },
            (Credential::Password, _) => LicensingError::InvalidCredentials,
            (Credential::RefreshToken, _) => LicensingError::TokenInvalid,
            (Credential::UserToken, Rejection::Unauthenticated) => LicensingError::TokenInvalid,
            (Credential::UserToken, Rejection::Forbidden) => {
                LicensingError::PermissionDenied(Denial::UpstreamDenied)
            }
            (Credential::Pat, Rejection::Unauthenticated | Rejection::Forbidden) => {
                LicensingError::AdminTokenRejected(Arc::new(error))
            }
            (
                Credential::UserToken | Credential::Pat | Credential::Anonymous,
                Rejection::NotFound,
            ) => LicensingError::NotFound(Missing::Resource),
            // Anything else means we sent something Cryptlex considers wrong
            // after our own validation passed: our bug, not the caller's.
            _ => LicensingError::internal(error),
        },
    }
}
