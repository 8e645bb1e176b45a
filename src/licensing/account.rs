//! The account use cases: two-factor enrolment, profile changes, the
//! password, password reset (by mail and with a token), and minting reset
//! tokens for an allow-listed internal caller.
//!
//! Every guess at a secret is throttled before it reaches Cryptlex: a wrong
//! current password counts as a failed sign-in for the user's email (the
//! sign-in throttle), wrong two-factor codes and reset tokens have counters
//! of their own (`throttle::account`), and reset mail is limited per address
//! and per network. Each write drops what the read cache holds for the user
//! (`Change::User`), on this replica and, through the relay, on the others.
//!
//! It does not know how Cryptlex spells a refusal beyond the decided codes
//! in [`ErrorCode`] (`cryptlex::error`), nor anything of gRPC.

use super::changes::Change;
use super::error::{Credential, Denial, Missing, upstream};
use super::{Licensing, LicensingError, token_guard, user_call_failed};
use crate::cryptlex::{CryptlexError, ErrorCode, Rejection};
use crate::domain::{
    AccountHolder, AllowedClient, ClientIdentity, CryptlexId, Email, MintedResetToken, Operation,
    Password, ProfileUpdate, RecoveryCodes, RequestContext, ResetToken, TwoFactorCode,
    TwoFactorEnrollment, UserProfile, UserToken,
};

/// A parsed `ChangePassword` request.
#[derive(Debug)]
pub struct ChangePasswordCommand {
    /// Checked by Cryptlex; only its upper bound is checked here, like a
    /// password at login.
    pub current_password: Password,
    /// Held to sign-up's rules.
    pub new_password: Password,
}

/// A parsed `ResetPassword` request.
#[derive(Debug)]
pub struct ResetPasswordCommand {
    pub holder: AccountHolder,
    pub token: ResetToken,
    /// Held to sign-up's rules.
    pub new_password: Password,
}

impl Licensing {
    // === two-factor authentication ===

    /// Makes a new TOTP secret for the user who owns `token`; nothing changes
    /// until [`Self::enable_two_factor`] confirms a code.
    #[tracing::instrument(name = "licensing.start_two_factor_enrollment", skip_all)]
    pub async fn start_two_factor_enrollment(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<TwoFactorEnrollment, LicensingError> {
        self.shared.tokens.check_access(token)?;
        self.upstream_allowed(ctx)?;
        self.cryptlex()
            .start_two_factor_enrollment(ctx, token)
            .await
            .map_err(|error| {
                two_factor_refusal(&error)
                    .unwrap_or_else(|| user_call_failed(&self.shared.tokens, token, error))
            })
    }

    /// Turns two-factor authentication on with a current `code` from the
    /// secret of the last enrolment, and returns the profile after it.
    #[tracing::instrument(name = "licensing.enable_two_factor", skip_all)]
    pub async fn enable_two_factor(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        code: TwoFactorCode,
    ) -> Result<UserProfile, LicensingError> {
        let cryptlex = self.cryptlex();
        let (user_id, result) = self
            .with_code_attempt(ctx, token, || {
                cryptlex.set_two_factor(ctx, token, true, &code)
            })
            .await?;
        self.user_changed(user_id, &result).await;
        result
    }

    /// Makes a new set of recovery codes (the old ones stop working) with a
    /// current `code`.
    #[tracing::instrument(name = "licensing.create_recovery_codes", skip_all)]
    pub async fn create_recovery_codes(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        code: TwoFactorCode,
    ) -> Result<RecoveryCodes, LicensingError> {
        let cryptlex = self.cryptlex();
        let (_, result) = self
            .with_code_attempt(ctx, token, || {
                cryptlex.create_recovery_codes(ctx, token, &code)
            })
            .await?;
        // Nothing cached shows recovery codes: no change to announce.
        result
    }

    /// Turns two-factor authentication off with a current `code`, and
    /// returns the profile after it.
    #[tracing::instrument(name = "licensing.disable_two_factor", skip_all)]
    pub async fn disable_two_factor(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        code: TwoFactorCode,
    ) -> Result<UserProfile, LicensingError> {
        let cryptlex = self.cryptlex();
        let (user_id, result) = self
            .with_code_attempt(ctx, token, || {
                cryptlex.set_two_factor(ctx, token, false, &code)
            })
            .await?;
        self.user_changed(user_id, &result).await;
        result
    }

    /// Runs `call`, a Cryptlex call that carries a two-factor code of the
    /// user who owns `token`, inside that user's code throttle: refused
    /// before it is sent while the user's wrong codes back off, counted as a
    /// failure when Cryptlex says the code is wrong.
    ///
    /// Returns the user's id (for the change to announce) and the call's
    /// outcome; fails early only when the call was not sent.
    async fn with_code_attempt<T, Call, Sent>(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        call: Call,
    ) -> Result<(CryptlexId, Result<T, LicensingError>), LicensingError>
    where
        Call: FnOnce() -> Sent,
        Sent: Future<Output = Result<T, CryptlexError>>,
    {
        self.shared.tokens.check_access(token)?;
        // Whose codes these are, as Cryptlex said for this token (usually
        // answered from memory): never the token's unverified claims, which
        // would let made-up tokens spend another user's allowance.
        let profile = self.profile(ctx, token).await?;
        let user_id = CryptlexId::from_upstream(profile.id);
        let attempt = self
            .shared
            .throttle
            .begin_code_attempt(&user_id)
            .map_err(|retry_after| LicensingError::TooManyAttempts { retry_after })?;
        self.upstream_allowed(ctx)?;
        let result = match call().await {
            Ok(answer) => {
                attempt.succeeded();
                Ok(answer)
            }
            Err(error) => {
                let refusal = two_factor_refusal(&error);
                match &refusal {
                    Some(LicensingError::InvalidTwoFactorCode) => attempt.failed(),
                    // No verdict on the code (not enrolled, an upstream fault).
                    _ => drop(attempt),
                }
                Err(refusal.unwrap_or_else(|| user_call_failed(&self.shared.tokens, token, error)))
            }
        };
        Ok((user_id, result))
    }

    // === profile and password ===

    /// Changes the names of the user who owns `token`, and returns the
    /// profile Cryptlex answered with.
    #[tracing::instrument(name = "licensing.update_profile", skip_all)]
    pub async fn update_profile(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        update: ProfileUpdate,
    ) -> Result<UserProfile, LicensingError> {
        self.shared.tokens.check_access(token)?;
        self.upstream_allowed(ctx)?;
        match self.cryptlex().update_profile(ctx, token, &update).await {
            Ok(profile) => {
                let user_id = CryptlexId::from_upstream(profile.id.clone());
                self.apply_change_relayed(&Change::User { user_id }).await;
                Ok(profile)
            }
            Err(error) => {
                if error.outcome_unknown() {
                    // The change may have happened; the profile is the only
                    // way to the user's id left, and it may be cached.
                    if let Some(user_id) = token_guard::claimed_user_id(token)
                        .and_then(|id| CryptlexId::parse("sub", &id).ok())
                    {
                        self.apply_change_relayed(&Change::User { user_id }).await;
                    }
                }
                Err(user_call_failed(&self.shared.tokens, token, error))
            }
        }
    }

    /// Changes the password of the user who owns `token`. A wrong current
    /// password counts as a failed sign-in for the user's email, so a session
    /// cannot guess the password faster than sign-in can.
    #[tracing::instrument(name = "licensing.change_password", skip_all)]
    pub async fn change_password(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        command: ChangePasswordCommand,
    ) -> Result<(), LicensingError> {
        self.shared.tokens.check_access(token)?;
        let profile = self.profile(ctx, token).await?;
        let email = Email::parse("email", &profile.email)
            .map_err(|_| LicensingError::internal("cryptlex's profile has no usable email"))?;
        let user_id = CryptlexId::from_upstream(profile.id);
        let attempt = self
            .shared
            .throttle
            .begin_login(&email, ctx.client_address)
            .map_err(|retry_after| LicensingError::TooManyAttempts { retry_after })?;
        // Cryptlex refuses such passwords, and its `oldPassword` has the same
        // lower bound: it cannot be the current one.
        if !command.current_password.could_match_an_account() {
            attempt.failed();
            return Err(LicensingError::WrongCurrentPassword);
        }
        let result = self
            .cryptlex()
            .update_password(
                ctx,
                token,
                &user_id,
                &command.current_password,
                &command.new_password,
            )
            .await;
        match result {
            Ok(()) => {
                attempt.succeeded();
                self.apply_change_relayed(&Change::User { user_id }).await;
                Ok(())
            }
            Err(error) if refusal_code(&error) == Some(ErrorCode::InvalidPassword) => {
                attempt.failed();
                Err(LicensingError::WrongCurrentPassword)
            }
            Err(error) => {
                drop(attempt);
                if error.outcome_unknown() {
                    self.apply_change_relayed(&Change::User { user_id }).await;
                }
                Err(user_call_failed(&self.shared.tokens, token, error))
            }
        }
    }

    // === password reset ===

    /// Asks Cryptlex to mail a reset link to `email`. The answer is the same
    /// whether or not an account has the address: the call always goes to
    /// Cryptlex (the gateway cannot know), and Cryptlex's refusals of an
    /// address are answered like a mail sent.
    #[tracing::instrument(name = "licensing.request_password_reset", skip_all)]
    pub async fn request_password_reset(
        &self,
        ctx: &RequestContext,
        email: &Email,
    ) -> Result<(), LicensingError> {
        self.shared
            .throttle
            .begin_reset_mail(email, ctx.client_address)
            .map_err(|retry_after| LicensingError::TooManyAttempts { retry_after })?;
        match self.cryptlex().request_password_reset(ctx, email).await {
            Ok(()) => Ok(()),
            Err(CryptlexError::Rejected { status, kind, .. })
                if kind != Rejection::Unrecognized =>
            {
                // An unknown address, one Cryptlex will not mail: telling the
                // caller would tell who has an account.
                tracing::debug!(
                    status,
                    "cryptlex refused the reset mail; answered as if sent"
                );
                Ok(())
            }
            Err(error) => Err(upstream(Credential::Anonymous, error)),
        }
    }

    /// Sets a new password with a reset token. An unknown user, like an
    /// unknown, used or expired token, is [`LicensingError::ResetTokenInvalid`]
    /// and counts against the account's and the network's allowance.
    #[tracing::instrument(name = "licensing.reset_password", skip_all)]
    pub async fn reset_password(
        &self,
        ctx: &RequestContext,
        command: ResetPasswordCommand,
    ) -> Result<(), LicensingError> {
        let attempt = self
            .shared
            .throttle
            .begin_reset(&command.holder, ctx.client_address)
            .map_err(|retry_after| LicensingError::TooManyAttempts { retry_after })?;
        let user_id = match &command.holder {
            AccountHolder::Id(id) => id.clone(),
            AccountHolder::Email(email) => {
                let pat = self.admin_token()?;
                let found = self
                    .cryptlex()
                    .find_user_by_email(ctx, pat, email)
                    .await
                    .map_err(|error| upstream(Credential::Pat, error))?;
                let Some(user) = found else {
                    attempt.failed();
                    return Err(LicensingError::ResetTokenInvalid);
                };
                user.id
            }
        };
        let result = self
            .cryptlex()
            .reset_password(ctx, &user_id, &command.token, &command.new_password)
            .await;
        match result {
            Ok(()) => {
                attempt.succeeded();
                tracing::info!(user_id = %user_id, "password reset with a token");
                self.apply_change_relayed(&Change::User { user_id }).await;
                Ok(())
            }
            Err(error)
                if refusal_code(&error) == Some(ErrorCode::InvalidResetToken)
                    || matches!(
                        error,
                        CryptlexError::Rejected {
                            kind: Rejection::NotFound,
                            ..
                        }
                    ) =>
            {
                attempt.failed();
                Err(LicensingError::ResetTokenInvalid)
            }
            Err(error) => {
                drop(attempt);
                if error.outcome_unknown() {
                    self.apply_change_relayed(&Change::User { user_id }).await;
                }
                Err(upstream(Credential::Anonymous, error))
            }
        }
    }

    // === the internal listener ===

    /// Returns the allow-list entry of the internal caller whose verified
    /// certificate names `presented`, when that entry may call `operation`.
    /// Called before anything else about the request is looked at.
    pub fn authorize_call(
        &self,
        presented: &[ClientIdentity],
        operation: Operation,
    ) -> Result<AllowedClient, LicensingError> {
        let client = self.authorize_client(presented)?;
        if !client.may_call(operation) {
            tracing::warn!(client = %client.identity, %operation, "allow-listed client may not call this operation");
            return Err(LicensingError::PermissionDenied(
                Denial::OperationNotAllowed,
            ));
        }
        Ok(client)
    }

    /// Mints a password-reset token for `holder` with the PAT, for an internal
    /// caller allowed to (its website mails the link). An unknown user is
    /// [`Missing::User`]: this caller is trusted.
    #[tracing::instrument(name = "licensing.create_password_reset_token", skip_all, fields(client = %caller.identity))]
    pub async fn create_password_reset_token(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        holder: AccountHolder,
    ) -> Result<MintedResetToken, LicensingError> {
        if !caller.may_call(Operation::CreatePasswordResetToken) {
            return Err(LicensingError::PermissionDenied(
                Denial::OperationNotAllowed,
            ));
        }
        let pat = self.admin_token()?;
        let cryptlex = self.cryptlex();
        let found = match &holder {
            AccountHolder::Id(id) => cryptlex.get_user(ctx, pat, id).await,
            AccountHolder::Email(email) => cryptlex.find_user_by_email(ctx, pat, email).await,
        }
        .map_err(|error| upstream(Credential::Pat, error))?;
        let user = found.ok_or(LicensingError::NotFound(Missing::User))?;
        let token = cryptlex
            .create_reset_password_token(ctx, pat, &user.id)
            .await
            .map_err(|error| match error {
                // Deleted between the two calls.
                CryptlexError::Rejected {
                    kind: Rejection::NotFound,
                    ..
                } => LicensingError::NotFound(Missing::User),
                error => upstream(Credential::Pat, error),
            })?;
        tracing::info!(user_id = %user.id, "minted a password-reset token");
        Ok(MintedResetToken {
            user_id: user.id,
            email: user.email,
            token,
        })
    }

    /// Announces that `user_id` changed, unless `result` says certainly not
    /// (a refusal).
    async fn user_changed<T>(&self, user_id: CryptlexId, result: &Result<T, LicensingError>) {
        let may_have_changed = match result {
            Ok(_) => true,
            Err(LicensingError::Unavailable { source, .. }) => source.outcome_unknown(),
            Err(LicensingError::DeadlineExceeded) => true,
            Err(_) => false,
        };
        if may_have_changed {
            self.apply_change_relayed(&Change::User { user_id }).await;
        }
    }
}

/// The decided code of a refusal Cryptlex itself sent, if any.
fn refusal_code(error: &CryptlexError) -> Option<ErrorCode> {
    match error {
        CryptlexError::Rejected { kind, code, .. } if *kind != Rejection::Unrecognized => *code,
        _ => None,
    }
}

/// What a refusal of a call that carries a two-factor code means, when its
/// code says (see `cryptlex_sandbox::portal` for the decided codes).
fn two_factor_refusal(error: &CryptlexError) -> Option<LicensingError> {
    match refusal_code(error)? {
        ErrorCode::InvalidTwoFactorCode => Some(LicensingError::InvalidTwoFactorCode),
        ErrorCode::TwoFactorNotEnabled => Some(LicensingError::TwoFactorNotEnabled),
        ErrorCode::TwoFactorCodeRequired => Some(LicensingError::TwoFactorRequired),
        _ => None,
    }
}

/// What a refusal of a sign-in means when its code is about the second
/// factor: the password was right. `None` for any other answer.
pub(super) fn sign_in_refusal(error: &CryptlexError) -> Option<LicensingError> {
    match refusal_code(error)? {
        ErrorCode::TwoFactorCodeRequired => Some(LicensingError::TwoFactorRequired),
        ErrorCode::InvalidTwoFactorCode => Some(LicensingError::InvalidTwoFactorCode),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: Option<ErrorCode>) -> CryptlexError {
        CryptlexError::Rejected {
            status,
            kind: Rejection::classify(status, code),
            code,
            message: None,
        }
    }

    #[test]
    fn sign_in_refusals_about_the_second_factor_are_told_apart_from_wrong_passwords() {
        assert!(matches!(
            sign_in_refusal(&refused(400, Some(ErrorCode::TwoFactorCodeRequired))),
            Some(LicensingError::TwoFactorRequired)
        ));
        assert!(matches!(
            sign_in_refusal(&refused(400, Some(ErrorCode::InvalidTwoFactorCode))),
            Some(LicensingError::InvalidTwoFactorCode)
        ));
        assert!(sign_in_refusal(&refused(400, None)).is_none());
        assert!(sign_in_refusal(&refused(400, Some(ErrorCode::AuthenticationFailed))).is_none());
    }

    #[test]
    fn a_code_in_a_body_that_is_not_cryptlex_s_means_nothing() {
        let proxy = CryptlexError::Rejected {
            status: 400,
            kind: Rejection::Unrecognized,
            code: Some(ErrorCode::InvalidTwoFactorCode),
            message: None,
        };
        assert!(two_factor_refusal(&proxy).is_none());
        assert!(sign_in_refusal(&proxy).is_none());
    }

    #[test]
    fn two_factor_refusals_keep_their_meaning() {
        assert!(matches!(
            two_factor_refusal(&refused(409, Some(ErrorCode::TwoFactorNotEnabled))),
            Some(LicensingError::TwoFactorNotEnabled)
        ));
        assert!(matches!(
            two_factor_refusal(&refused(400, Some(ErrorCode::InvalidTwoFactorCode))),
            Some(LicensingError::InvalidTwoFactorCode)
        ));
        assert!(two_factor_refusal(&refused(401, None)).is_none());
    }
}
