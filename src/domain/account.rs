//! What the account calls speak: two-factor codes and recovery codes, the
//! secrets of an enrolment, password-reset tokens, a profile change, and
//! who a password reset is for.
//!
//! Every secret here wraps a [`SecretString`], so `Debug` prints a redaction
//! and nothing but an `expose_secret()` where a Cryptlex body or a response
//! message is built can read it. Nothing here knows about gRPC or HTTP.

use secrecy::{ExposeSecret, SecretString};

use super::validation::{FieldViolation, ValidationErrors, check_length, check_no_control_chars};
use super::{CryptlexId, Email, PersonName};

/// A current code from the user's authenticator app: exactly six ASCII
/// digits (RFC 6238 with Cryptlex's settings).
#[derive(Debug, Clone)]
pub struct TwoFactorCode(SecretString);

impl TwoFactorCode {
    /// The number of digits of a code.
    pub const DIGITS: usize = 6;

    /// Parses a code for `field`. Spaces are not removed: an app shows
    /// `123 456`, but the website's form is the place to strip them.
    pub fn parse(field: &str, value: String) -> Result<Self, FieldViolation> {
        let well_formed =
            value.len() == Self::DIGITS && value.bytes().all(|byte| byte.is_ascii_digit());
        if !well_formed {
            return Err(FieldViolation::new(field, "must be exactly 6 digits"));
        }
        Ok(Self(SecretString::from(value)))
    }

    /// Returns the code for the upstream request body.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// One of the user's recovery codes, typed instead of a code at sign-in.
///
/// Cryptlex documents only its length (1 to 256 characters at login), not
/// its alphabet, so only control characters are refused besides the bounds.
#[derive(Debug, Clone)]
pub struct RecoveryCode(SecretString);

impl RecoveryCode {
    /// Parses a recovery code for `field`.
    pub fn parse(field: &str, value: String) -> Result<Self, FieldViolation> {
        check_length(field, &value, 1, 256)?;
        check_no_control_chars(field, &value)?;
        Ok(Self(SecretString::from(value)))
    }

    /// Returns the code for the upstream request body.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// The second factor a sign-in carries, for an account with two-factor
/// authentication.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    /// A current code from the authenticator app.
    Code(TwoFactorCode),
    /// One of the recovery codes, each usable once.
    RecoveryCode(RecoveryCode),
}

/// A new TOTP secret, as `StartTwoFactorEnrollment` hands it to the user:
/// the `otpauth://` URI for a QR code and the base32 secret it holds.
#[derive(Debug, Clone)]
pub struct TwoFactorEnrollment {
    otpauth_url: SecretString,
    secret: SecretString,
}

impl TwoFactorEnrollment {
    /// Reads the secret out of the `otpauth://totp/...?secret=...` URI
    /// Cryptlex returned; `None` when the URI holds no base32 secret.
    pub fn from_otpauth_url(otpauth_url: String) -> Option<Self> {
        let url = url::Url::parse(&otpauth_url).ok()?;
        if !url.scheme().eq_ignore_ascii_case("otpauth") {
            return None;
        }
        let secret = url
            .query_pairs()
            .find(|(name, _)| name == "secret")
            .map(|(_, value)| value.into_owned())?;
        let base32 = !secret.is_empty()
            && secret
                .bytes()
                .all(|byte| matches!(byte, b'A'..=b'Z' | b'a'..=b'z' | b'2'..=b'7' | b'='));
        if !base32 {
            return None;
        }
        Some(Self {
            otpauth_url: SecretString::from(otpauth_url),
            secret: SecretString::from(secret),
        })
    }

    /// The `otpauth://` URI, for the response only.
    pub fn expose_otpauth_url(&self) -> &str {
        self.otpauth_url.expose_secret()
    }

    /// The base32 secret, for the response only.
    pub fn expose_secret(&self) -> &str {
        self.secret.expose_secret()
    }
}

/// A new set of recovery codes, for the response only.
#[derive(Debug, Clone)]
pub struct RecoveryCodes(Vec<SecretString>);

impl RecoveryCodes {
    /// Wraps the codes Cryptlex returned.
    pub fn from_upstream(codes: Vec<String>) -> Self {
        Self(codes.into_iter().map(SecretString::from).collect())
    }

    /// The codes, for the response message only.
    pub fn expose_secrets(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(ExposeSecret::expose_secret)
    }

    /// How many codes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A password-reset token: from a reset mail (Cryptlex's own, or the
/// website's with a token from `CreatePasswordResetToken`). Whoever holds it
/// can take the account over, so it is a secret like a password.
#[derive(Debug, Clone)]
pub struct ResetToken(SecretString);

impl ResetToken {
    /// The longest token accepted (the contract's bound; Cryptlex's own is
    /// 2048).
    pub const MAX_LEN: usize = 1024;

    /// Parses a token for `field`: printable ASCII without spaces, as a
    /// token read from a link is.
    pub fn parse(field: &str, value: String) -> Result<Self, FieldViolation> {
        check_length(field, &value, 1, Self::MAX_LEN)?;
        if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(FieldViolation::new(field, "is not a well-formed token"));
        }
        Ok(Self(SecretString::from(value)))
    }

    /// Wraps a token Cryptlex minted.
    pub fn from_upstream(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// Returns the token for the upstream request body or the response.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A new password-reset token for a user, as the internal
/// `CreatePasswordResetToken` returns it.
#[derive(Debug, Clone)]
pub struct MintedResetToken {
    pub user_id: CryptlexId,
    /// Where to mail the link.
    pub email: String,
    pub token: ResetToken,
}

/// Whose password a reset is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountHolder {
    Id(CryptlexId),
    Email(Email),
}

/// What `UpdateProfile` changes: each name is `None` when it stays as is.
/// Never both `None` (parsing refuses a change of nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUpdate {
    /// Never empty: Cryptlex requires a first name.
    pub first_name: Option<PersonName>,
    /// May be empty, which clears it.
    pub last_name: Option<PersonName>,
}

impl ProfileUpdate {
    /// The paths an update mask may name.
    pub const MASK_PATHS: [&'static str; 3] = ["first_name", "last_name", "*"];

    /// Parses an `UpdateProfile` request (AIP-134): the paths of its
    /// `update_mask` (`None`, or no paths, when it has none) and the names it
    /// carries. Without a mask the names that are not empty change; with
    /// one, exactly the names it lists (`*`: both), which may then be empty
    /// (only the last name may end up so). Every problem is reported at once.
    pub fn parse(
        mask: Option<&[String]>,
        first_name: &str,
        last_name: &str,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let (change_first, change_last) = match mask.filter(|paths| !paths.is_empty()) {
            None => {
                let change = (!first_name.trim().is_empty(), !last_name.trim().is_empty());
                if change == (false, false) {
                    errors.push(FieldViolation::new(
                        "profile",
                        "nothing to change: set first_name or last_name (or name them in update_mask)",
                    ));
                }
                change
            }
            Some(paths) => {
                let (mut first, mut last) = (false, false);
                for path in paths {
                    match path.as_str() {
                        "first_name" => first = true,
                        "last_name" => last = true,
                        "*" => (first, last) = (true, true),
                        "email" => errors.push(FieldViolation::new(
                            "update_mask",
                            "email cannot be changed with the user's own session: Cryptlex would not verify the new address, so a stolen session could move the account to another mailbox and take it over with a password reset",
                        )),
                        other => errors.push(FieldViolation::new(
                            "update_mask",
                            format!(
                                "{:?} cannot be changed: UpdateProfile changes first_name and last_name (`*` for both)",
                                shown(other)
                            ),
                        )),
                    }
                }
                (first, last)
            }
        };
        let first_name = if change_first {
            if first_name.trim().is_empty() {
                errors.push(FieldViolation::new(
                    "profile.first_name",
                    "cannot be set empty: Cryptlex requires a first name",
                ));
                None
            } else {
                errors.check(PersonName::parse("profile.first_name", first_name, 1))
            }
        } else {
            None
        };
        let last_name = if change_last {
            errors.check(PersonName::parse("profile.last_name", last_name, 0))
        } else {
            None
        };
        errors.into_result()?;
        Ok(Self {
            first_name,
            last_name,
        })
    }
}

/// A caller's mask path as it may appear in an error message: no control
/// characters, at most 64 of the rest.
fn shown(path: &str) -> String {
    path.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_exactly_six_ascii_digits() {
        assert!(TwoFactorCode::parse("code", "123456".into()).is_ok());
        for refused in [
            "",
            "12345",
            "1234567",
            "12345a",
            "123 456",
            "١٢٣٤٥٦",
            " 123456",
        ] {
            assert!(
                TwoFactorCode::parse("code", refused.into()).is_err(),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_recovery_code_has_one_to_256_characters_without_control_characters() {
        assert!(RecoveryCode::parse("code", "abcd-efgh-1234".into()).is_ok());
        assert!(RecoveryCode::parse("code", "x".repeat(256)).is_ok());
        assert!(RecoveryCode::parse("code", String::new()).is_err());
        assert!(RecoveryCode::parse("code", "x".repeat(257)).is_err());
        assert!(RecoveryCode::parse("code", "abc\ndef".into()).is_err());
    }

    #[test]
    fn a_reset_token_is_printable_ascii_up_to_1024_characters() {
        assert!(ResetToken::parse("token", "abc-DEF_123%2B".into()).is_ok());
        assert!(ResetToken::parse("token", "t".repeat(1024)).is_ok());
        assert!(ResetToken::parse("token", "t".repeat(1025)).is_err());
        assert!(ResetToken::parse("token", String::new()).is_err());
        assert!(ResetToken::parse("token", "two words".into()).is_err());
    }

    #[test]
    fn the_secret_is_read_from_the_otpauth_url_query() {
        let url = "otpauth://totp/Cryptlex%20Sandbox:demo%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Cryptlex%20Sandbox&algorithm=SHA1&digits=6&period=30";
        let enrollment = TwoFactorEnrollment::from_otpauth_url(url.into()).expect("parses");
        assert_eq!(enrollment.expose_secret(), "JBSWY3DPEHPK3PXP");
        assert_eq!(enrollment.expose_otpauth_url(), url);
    }

    #[test]
    fn an_otpauth_url_without_a_base32_secret_is_refused() {
        for url in [
            "otpauth://totp/x?issuer=y",
            "otpauth://totp/x?secret=",
            "otpauth://totp/x?secret=not%20base32!",
            "https://example.com/?secret=JBSWY3DPEHPK3PXP",
            "not a url",
        ] {
            assert!(
                TwoFactorEnrollment::from_otpauth_url(url.into()).is_none(),
                "{url}"
            );
        }
    }

    fn paths(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|path| (*path).to_owned()).collect()
    }

    fn fields(result: Result<ProfileUpdate, ValidationErrors>) -> Vec<String> {
        result
            .expect_err("refused")
            .violations()
            .iter()
            .map(|violation| violation.field.clone())
            .collect()
    }

    fn names(update: &ProfileUpdate) -> (Option<&str>, Option<&str>) {
        (
            update.first_name.as_ref().map(PersonName::as_str),
            update.last_name.as_ref().map(PersonName::as_str),
        )
    }

    #[test]
    fn without_a_mask_the_names_that_are_set_change() {
        let both = ProfileUpdate::parse(None, " Ada ", "Lovelace").expect("valid");
        assert_eq!(names(&both), (Some("Ada"), Some("Lovelace")));
        let first = ProfileUpdate::parse(None, "Ada", "").expect("valid");
        assert_eq!(names(&first), (Some("Ada"), None));
        let last = ProfileUpdate::parse(Some(&[]), "", "Lovelace").expect("an empty mask is none");
        assert_eq!(names(&last), (None, Some("Lovelace")));
        assert_eq!(fields(ProfileUpdate::parse(None, " ", "")), ["profile"]);
    }

    #[test]
    fn a_mask_changes_exactly_the_names_it_lists() {
        let first =
            ProfileUpdate::parse(Some(&paths(&["first_name"])), "Ada", "ignored").expect("valid");
        assert_eq!(names(&first), (Some("Ada"), None));
        let cleared = ProfileUpdate::parse(Some(&paths(&["last_name"])), "ignored", "")
            .expect("the last name may be cleared");
        assert_eq!(names(&cleared), (None, Some("")));
        let both = ProfileUpdate::parse(Some(&paths(&["*"])), "Ada", "").expect("valid");
        assert_eq!(names(&both), (Some("Ada"), Some("")));
    }

    #[test]
    fn the_first_name_cannot_be_set_empty() {
        assert_eq!(
            fields(ProfileUpdate::parse(Some(&paths(&["first_name"])), "", "x")),
            ["profile.first_name"]
        );
        assert_eq!(
            fields(ProfileUpdate::parse(Some(&paths(&["*"])), "  ", "")),
            ["profile.first_name"]
        );
    }

    #[test]
    fn email_and_unknown_paths_are_refused_with_a_reason() {
        let refused = ProfileUpdate::parse(
            Some(&paths(&[
                "first_name",
                "email",
                "company",
                "profile.last_name",
            ])),
            "Ada",
            "",
        )
        .expect_err("refused");
        let violations = refused.violations();
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations.iter().all(|v| v.field == "update_mask"));
        assert!(violations[0].description.contains("stolen session"));
        assert!(violations[1].description.contains("\"company\""));
        assert!(violations[2].description.contains("\"profile.last_name\""));
    }

    #[test]
    fn names_are_held_to_cryptlex_s_bounds() {
        let long = "x".repeat(257);
        assert_eq!(
            fields(ProfileUpdate::parse(None, &long, &long)),
            ["profile.first_name", "profile.last_name"]
        );
        assert!(ProfileUpdate::parse(None, &"x".repeat(256), "").is_ok());
        assert_eq!(
            fields(ProfileUpdate::parse(None, "Ada\u{7}", "")),
            ["profile.first_name"]
        );
    }

    #[test]
    fn debug_output_never_contains_the_secrets() {
        let code = TwoFactorCode::parse("code", "918273".into()).expect("code");
        let recovery = RecoveryCode::parse("code", "recovery-secret".into()).expect("code");
        let token = ResetToken::parse("token", "reset-secret".into()).expect("token");
        let enrollment = TwoFactorEnrollment::from_otpauth_url(
            "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP".into(),
        )
        .expect("parses");
        let codes = RecoveryCodes::from_upstream(vec!["code-one-secret".into()]);
        let rendered = format!("{code:?} {recovery:?} {token:?} {enrollment:?} {codes:?}");
        for secret in [
            "918273",
            "recovery-secret",
            "reset-secret",
            "JBSWY3DPEHPK3PXP",
            "code-one-secret",
        ] {
            assert!(!rendered.contains(secret), "{rendered}");
        }
    }
}
