//! The account calls: two-factor enrolment, profile changes, the password
//! and password reset. Like `endpoints`, each describes its request and
//! decodes the answer into domain values; what a refusal means is the use
//! cases' business.
//!
//! None of these is retried after Cryptlex may have acted on it
//! ([`Retry::IfNotProcessed`]): a repeated password change would be refused
//! with the old password gone, a repeated reset with the token used, and a
//! repeated enrolment would replace the secret the user is scanning.

use super::retry::Retry;
use super::transport::{Request, decode};
use super::{Account, Client, CryptlexError, Priority, wire, wire_account};
use crate::domain::{
    AdminToken, CryptlexId, Email, Password, ProfileUpdate, RecoveryCodes, RequestContext,
    ResetToken, TwoFactorCode, TwoFactorEnrollment, UserProfile, UserToken,
};

impl Client {
    // === the user's own token ===

    /// Makes a new TOTP secret for the token's owner
    /// (`POST /v3/me/2fa-secret`, no body) and reads it from the otpauth URI
    /// Cryptlex returns.
    pub async fn start_two_factor_enrollment(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<TwoFactorEnrollment, CryptlexError> {
        let request = Request::post(
            &["me", "2fa-secret"],
            Priority::SignIn,
            Retry::IfNotProcessed,
        )
        .bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        let dto = decode::<wire_account::TwoFactorSecretDto>(&answer)?;
        TwoFactorEnrollment::from_otpauth_url(dto.url).ok_or_else(|| CryptlexError::Malformed {
            // Never the URI itself: it holds the secret.
            detail: "the two-factor secret's url holds no base32 secret".to_owned(),
        })
    }

    /// Turns two-factor authentication on or off with a current code
    /// (`PATCH /v3/me` with `twoFactorEnabled` and `twoFactorCode`) and
    /// returns the profile after the change.
    pub async fn set_two_factor(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        enabled: bool,
        code: &TwoFactorCode,
    ) -> Result<UserProfile, CryptlexError> {
        let body = wire_account::MeUpdateBody {
            two_factor_enabled: Some(enabled),
            two_factor_code: Some(code.expose_secret()),
            ..wire_account::MeUpdateBody::default()
        };
        self.patch_me(ctx, token, &body).await
    }

    /// Makes a new set of recovery codes with a current code
    /// (`POST /v3/me/2fa-recovery-codes`).
    pub async fn create_recovery_codes(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        code: &TwoFactorCode,
    ) -> Result<RecoveryCodes, CryptlexError> {
        let body = wire_account::TwoFactorCodeBody {
            two_factor_code: code.expose_secret(),
        };
        let request = Request::post(
            &["me", "2fa-recovery-codes"],
            Priority::SignIn,
            Retry::IfNotProcessed,
        )
        .bearer(token.expose_secret())
        .json(&body);
        let answer = self.call(ctx, request).await?;
        let dto = decode::<wire_account::TwoFactorRecoveryCodesDto>(&answer)?;
        Ok(RecoveryCodes::from_upstream(dto.recovery_codes))
    }

    /// Changes the token owner's names (`PATCH /v3/me`, only the names that
    /// change) and returns the profile after the change.
    pub async fn update_profile(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        update: &ProfileUpdate,
    ) -> Result<UserProfile, CryptlexError> {
        let body = wire_account::MeUpdateBody {
            first_name: update.first_name.as_ref().map(|name| name.as_str()),
            last_name: update.last_name.as_ref().map(|name| name.as_str()),
            ..wire_account::MeUpdateBody::default()
        };
        self.patch_me(ctx, token, &body).await
    }

    async fn patch_me(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        body: &wire_account::MeUpdateBody<'_>,
    ) -> Result<UserProfile, CryptlexError> {
        let request = Request::patch(&["me"], Priority::SignIn, Retry::IfNotProcessed)
            .bearer(token.expose_secret())
            .json(body);
        let answer = self.call(ctx, request).await?;
        decode::<wire::ProfileDto>(&answer).map(UserProfile::from)
    }

    /// Changes the password of `user_id`, the token's owner
    /// (`POST /v3/users/{id}/update-password` with the user's own token).
    pub async fn update_password(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        user_id: &CryptlexId,
        current: &Password,
        new: &Password,
    ) -> Result<(), CryptlexError> {
        let body = wire_account::UpdatePasswordBody {
            old_password: current.expose_secret(),
            new_password: new.expose_secret(),
        };
        let path = ["users", user_id.as_str(), "update-password"];
        let request = Request::post(&path, Priority::SignIn, Retry::IfNotProcessed)
            .bearer(token.expose_secret())
            .json(&body);
        self.call(ctx, request).await.map(drop)
    }

    // === no credential at all ===

    /// Asks Cryptlex to mail a reset link to `email`
    /// (`POST /v3/accounts/reset-password-request`, no authentication). The
    /// account's alias goes along when the gateway is configured with one;
    /// the body has no field for the account's id.
    pub async fn request_password_reset(
        &self,
        ctx: &RequestContext,
        email: &Email,
    ) -> Result<(), CryptlexError> {
        let account_alias = match &self.account {
            Account::Alias(alias) => Some(alias.as_str()),
            Account::Id(_) => None,
        };
        let body = wire_account::ResetRequestBody {
            email: email.as_str(),
            account_alias,
        };
        let request = Request::post(
            &["accounts", "reset-password-request"],
            // Anyone can ask, for any address: held to the share of calls
            // that need no proven credential.
            Priority::Session,
            Retry::IfNotProcessed,
        )
        .json(&body);
        self.call(ctx, request).await.map(drop)
    }

    /// Sets a new password for `user_id` with a reset token
    /// (`POST /v3/users/{id}/reset-password`, no authentication).
    pub async fn reset_password(
        &self,
        ctx: &RequestContext,
        user_id: &CryptlexId,
        token: &ResetToken,
        new_password: &Password,
    ) -> Result<(), CryptlexError> {
        let body = wire_account::ResetPasswordBody {
            token: token.expose_secret(),
            new_password: new_password.expose_secret(),
        };
        let path = ["users", user_id.as_str(), "reset-password"];
        let request = Request::post(&path, Priority::SignIn, Retry::IfNotProcessed).json(&body);
        self.call(ctx, request).await.map(drop)
    }

    // === the PAT ===

    /// Mints a password-reset token for `user_id`
    /// (`POST /v3/users/{id}/reset-password-token`, scope `user:write`, no
    /// body). The token is returned as Cryptlex sends it (URL-encoded, ready
    /// for a link).
    pub async fn create_reset_password_token(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        user_id: &CryptlexId,
    ) -> Result<ResetToken, CryptlexError> {
        let path = ["users", user_id.as_str(), "reset-password-token"];
        let request = Request::post(&path, Priority::Issuance, Retry::IfNotProcessed)
            .bearer(pat.expose_secret());
        let answer = self.call(ctx, request).await?;
        let dto = decode::<wire_account::ResetPasswordTokenDto>(&answer)?;
        Ok(ResetToken::from_upstream(dto.reset_password_token))
    }
}
