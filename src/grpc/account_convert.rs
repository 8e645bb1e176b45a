//! Conversions of the account calls' messages (`UserService`'s profile,
//! password, password-reset and two-factor RPCs, and `AccountService`):
//! requests into parsed commands, every field checked and every violation
//! reported at once, before any upstream call; results into responses.
//! Secrets leave their `secrecy` wrappers here only, into response messages.

use super::pb::{self, create_password_reset_token_request, reset_password_request};
use crate::domain::{
    AccountHolder, CryptlexId, Email, FieldViolation, MintedResetToken, Password, ProfileUpdate,
    RecoveryCode, RecoveryCodes, ResetToken, SecondFactor, TwoFactorCode, TwoFactorEnrollment,
    ValidationErrors,
};
use crate::licensing::{ChangePasswordCommand, ResetPasswordCommand};

/// A sign-in's second factor: at most one of the two fields, each optional.
pub(super) fn second_factor(
    errors: &mut ValidationErrors,
    code: String,
    recovery_code: String,
) -> Option<SecondFactor> {
    match (code.is_empty(), recovery_code.is_empty()) {
        (true, true) => None,
        (false, true) => errors
            .check(TwoFactorCode::parse("two_factor_code", code))
            .map(SecondFactor::Code),
        (true, false) => errors
            .check(RecoveryCode::parse(
                "two_factor_recovery_code",
                recovery_code,
            ))
            .map(SecondFactor::RecoveryCode),
        (false, false) => {
            errors.push(FieldViolation::new(
                "two_factor_recovery_code",
                "set either two_factor_code or two_factor_recovery_code, not both",
            ));
            None
        }
    }
}

impl TryFrom<pb::UpdateProfileRequest> for ProfileUpdate {
    type Error = ValidationErrors;

    fn try_from(request: pb::UpdateProfileRequest) -> Result<Self, Self::Error> {
        let profile = request.profile.unwrap_or_default();
        let paths = request.update_mask.map(|mask| mask.paths);
        ProfileUpdate::parse(paths.as_deref(), &profile.first_name, &profile.last_name)
    }
}

impl TryFrom<pb::ChangePasswordRequest> for ChangePasswordCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::ChangePasswordRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let current_password = errors.check(Password::parse_for_login(
            "current_password",
            request.current_password,
        ));
        let new_password = errors.check(Password::parse("new_password", request.new_password));
        match (current_password, new_password) {
            (Some(current_password), Some(new_password)) if errors.is_empty() => Ok(Self {
                current_password,
                new_password,
            }),
            _ => Err(errors),
        }
    }
}

impl TryFrom<pb::RequestPasswordResetRequest> for Email {
    type Error = ValidationErrors;

    fn try_from(request: pb::RequestPasswordResetRequest) -> Result<Self, Self::Error> {
        Ok(Email::parse("email", &request.email)?)
    }
}

impl TryFrom<pb::ResetPasswordRequest> for ResetPasswordCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::ResetPasswordRequest) -> Result<Self, Self::Error> {
        use reset_password_request::User;
        let mut errors = ValidationErrors::new();
        let holder = match request.user {
            Some(User::Email(email)) => {
                errors.check(Email::parse("email", &email).map(AccountHolder::Email))
            }
            Some(User::UserId(id)) => {
                errors.check(CryptlexId::parse("user_id", &id).map(AccountHolder::Id))
            }
            None => {
                errors.push(FieldViolation::new(
                    "user",
                    "one of email or user_id is required",
                ));
                None
            }
        };
        let token = errors.check(ResetToken::parse("token", request.token));
        let new_password = errors.check(Password::parse("new_password", request.new_password));
        match (holder, token, new_password) {
            (Some(holder), Some(token), Some(new_password)) if errors.is_empty() => Ok(Self {
                holder,
                token,
                new_password,
            }),
            _ => Err(errors),
        }
    }
}

/// The `code` of `EnableTwoFactor`, `CreateRecoveryCodes` and
/// `DisableTwoFactor`.
pub(super) fn current_code(code: String) -> Result<TwoFactorCode, ValidationErrors> {
    Ok(TwoFactorCode::parse("code", code)?)
}

impl TryFrom<pb::CreatePasswordResetTokenRequest> for AccountHolder {
    type Error = ValidationErrors;

    fn try_from(request: pb::CreatePasswordResetTokenRequest) -> Result<Self, Self::Error> {
        use create_password_reset_token_request::User;
        match request.user {
            Some(User::UserId(id)) => Ok(CryptlexId::parse("user_id", &id).map(Self::Id)?),
            Some(User::Email(email)) => Ok(Email::parse("email", &email).map(Self::Email)?),
            None => Err(FieldViolation::new("user", "one of user_id or email is required").into()),
        }
    }
}

impl From<TwoFactorEnrollment> for pb::StartTwoFactorEnrollmentResponse {
    fn from(enrollment: TwoFactorEnrollment) -> Self {
        Self {
            otpauth_url: enrollment.expose_otpauth_url().to_owned(),
            secret: enrollment.expose_secret().to_owned(),
        }
    }
}

impl From<RecoveryCodes> for pb::CreateRecoveryCodesResponse {
    fn from(codes: RecoveryCodes) -> Self {
        Self {
            recovery_codes: codes.expose_secrets().map(str::to_owned).collect(),
        }
    }
}

impl From<MintedResetToken> for pb::CreatePasswordResetTokenResponse {
    fn from(minted: MintedResetToken) -> Self {
        Self {
            user_id: minted.user_id.to_string(),
            email: minted.email,
            token: minted.token.expose_secret().to_owned(),
            // Cryptlex does not say when its tokens expire.
            expires_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violated_fields(errors: ValidationErrors) -> Vec<String> {
        errors
            .violations()
            .iter()
            .map(|violation| violation.field.clone())
            .collect()
    }

    fn login(code: &str, recovery: &str) -> pb::LoginRequest {
        pb::LoginRequest {
            email: "demo@example.com".into(),
            password: "demo-password".into(),
            two_factor_code: code.into(),
            two_factor_recovery_code: recovery.into(),
        }
    }

    #[test]
    fn a_login_carries_a_code_or_a_recovery_code_or_neither() {
        use crate::licensing::LoginCommand;
        let plain = LoginCommand::try_from(login("", "")).expect("valid");
        assert!(plain.second_factor.is_none());
        let code = LoginCommand::try_from(login("123456", "")).expect("valid");
        assert!(matches!(code.second_factor, Some(SecondFactor::Code(_))));
        let recovery = LoginCommand::try_from(login("", "abcd-efgh")).expect("valid");
        assert!(matches!(
            recovery.second_factor,
            Some(SecondFactor::RecoveryCode(_))
        ));
    }

    #[test]
    fn a_login_with_both_factors_or_a_malformed_code_is_refused() {
        use crate::licensing::LoginCommand;
        let both = LoginCommand::try_from(login("123456", "abcd")).expect_err("both");
        assert_eq!(violated_fields(both), ["two_factor_recovery_code"]);
        let short = LoginCommand::try_from(login("12345", "")).expect_err("five digits");
        assert_eq!(violated_fields(short), ["two_factor_code"]);
        let long = LoginCommand::try_from(login("", &"r".repeat(257))).expect_err("too long");
        assert_eq!(violated_fields(long), ["two_factor_recovery_code"]);
    }

    #[test]
    fn a_password_change_checks_the_new_password_like_sign_up() {
        let refused = ChangePasswordCommand::try_from(pb::ChangePasswordRequest {
            current_password: String::new(),
            new_password: "short".into(),
        })
        .expect_err("refused");
        assert_eq!(
            violated_fields(refused),
            ["current_password", "new_password"]
        );
        let short_current = ChangePasswordCommand::try_from(pb::ChangePasswordRequest {
            current_password: "short".into(),
            new_password: "long-enough-password".into(),
        });
        assert!(
            short_current.is_ok(),
            "a short current password just cannot match"
        );
    }

    #[test]
    fn a_reset_names_exactly_one_user_and_carries_a_token_and_a_new_password() {
        let refused = ResetPasswordCommand::try_from(pb::ResetPasswordRequest {
            user: None,
            token: String::new(),
            new_password: "short".into(),
        })
        .expect_err("refused");
        assert_eq!(violated_fields(refused), ["user", "token", "new_password"]);
        let by_id = ResetPasswordCommand::try_from(pb::ResetPasswordRequest {
            user: Some(reset_password_request::User::UserId("user-1".into())),
            token: "t".into(),
            new_password: "long-enough-password".into(),
        })
        .expect("valid");
        assert_eq!(
            by_id.holder,
            AccountHolder::Id(CryptlexId::parse("user_id", "user-1").expect("id"))
        );
        let bad_email = ResetPasswordCommand::try_from(pb::ResetPasswordRequest {
            user: Some(reset_password_request::User::Email("nope".into())),
            token: "t".repeat(1025),
            new_password: "long-enough-password".into(),
        })
        .expect_err("refused");
        assert_eq!(violated_fields(bad_email), ["email", "token"]);
    }

    #[test]
    fn a_reset_token_is_minted_for_exactly_one_user() {
        use create_password_reset_token_request::User;
        let none = AccountHolder::try_from(pb::CreatePasswordResetTokenRequest { user: None });
        assert_eq!(violated_fields(none.expect_err("no user")), ["user"]);
        let email = AccountHolder::try_from(pb::CreatePasswordResetTokenRequest {
            user: Some(User::Email(" demo@example.com ".into())),
        })
        .expect("valid");
        assert_eq!(
            email,
            AccountHolder::Email(Email::parse("email", "demo@example.com").expect("email"))
        );
        let bad_id = AccountHolder::try_from(pb::CreatePasswordResetTokenRequest {
            user: Some(User::UserId("../admin".into())),
        });
        assert_eq!(violated_fields(bad_id.expect_err("bad id")), ["user_id"]);
    }

    #[test]
    fn an_update_mask_reaches_the_profile_update() {
        let request = pb::UpdateProfileRequest {
            profile: Some(pb::Profile {
                first_name: "Ada".into(),
                email: "someone-else@example.com".into(),
                ..pb::Profile::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["email".into()],
            }),
        };
        let refused = ProfileUpdate::try_from(request).expect_err("email refused");
        assert_eq!(violated_fields(refused), ["update_mask"]);
        let without_mask = ProfileUpdate::try_from(pb::UpdateProfileRequest {
            profile: Some(pb::Profile {
                first_name: "Ada".into(),
                email: "ignored@example.com".into(),
                ..pb::Profile::default()
            }),
            update_mask: None,
        })
        .expect("the other fields are ignored without a mask");
        assert!(without_mask.first_name.is_some() && without_mask.last_name.is_none());
    }
}
