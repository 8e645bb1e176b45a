//! Secret values: passwords and tokens.
//!
//! Each is a distinct type so a user token can never be passed where the
//! administrator's token is expected, and each wraps a [`SecretString`] so
//! `Debug` prints a redaction and the value is zeroed on drop. The only way to
//! read one is `expose_secret()`, which appears where an HTTP header or body
//! is built for Cryptlex.

use secrecy::{ExposeSecret, SecretString};

use super::validation::{FieldViolation, check_length};

/// Upper bound for access tokens. Cryptlex's JWTs are well under 2 KiB; the
/// bound stops a caller from making us forward megabytes upstream.
const MAX_ACCESS_TOKEN_LEN: usize = 4096;

/// A user's password, as typed at login or sign-up.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// Parses a password for `field`; Cryptlex accepts 8 to 256 characters.
    pub fn parse(field: &str, value: String) -> Result<Self, FieldViolation> {
        check_length(field, &value, 8, 256)?;
        Ok(Self(SecretString::from(value)))
    }

    /// Parses a password for login, where only presence and the upper bound
    /// are checked: a too-short password simply cannot match, and saying so
    /// would differ from the answer for a wrong one.
    pub fn parse_for_login(field: &str, value: String) -> Result<Self, FieldViolation> {
        check_length(field, &value, 1, 256)?;
        Ok(Self(SecretString::from(value)))
    }

    /// Whether the password is long enough to be any Cryptlex user's
    /// password. Cryptlex refuses shorter ones at sign-up, so a login with one
    /// can be answered "invalid credentials" without asking upstream.
    pub fn could_match_an_account(&self) -> bool {
        self.0.expose_secret().chars().count() >= 8
    }

    /// Returns the password for building the upstream request body.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A Cryptlex user access token, taken from `authorization: Bearer` metadata.
///
/// The gateway treats it as opaque: it is forwarded, never trusted.
#[derive(Debug, Clone)]
pub struct UserToken(SecretString);

impl UserToken {
    /// Parses a bearer token: visible ASCII without spaces (RFC 6750
    /// `b64token` is narrower, but Cryptlex tokens are plain JWTs), bounded.
    pub fn parse(value: &str) -> Result<Self, FieldViolation> {
        let well_formed = !value.is_empty()
            && value.len() <= MAX_ACCESS_TOKEN_LEN
            && value.bytes().all(|byte| byte.is_ascii_graphic());
        if !well_formed {
            return Err(FieldViolation::new(
                "authorization",
                "must be `Bearer <token>` with a well-formed token",
            ));
        }
        Ok(Self(SecretString::from(value)))
    }

    /// Wraps an access token Cryptlex returned.
    pub fn from_upstream(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// Returns the token for the upstream `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A Cryptlex refresh token.
#[derive(Debug, Clone)]
pub struct RefreshToken(SecretString);

impl RefreshToken {
    /// Parses a refresh token; Cryptlex accepts 1 to 256 characters.
    pub fn parse(field: &str, value: String) -> Result<Self, FieldViolation> {
        check_length(field, &value, 1, 256)?;
        if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(FieldViolation::new(field, "is not a well-formed token"));
        }
        Ok(Self(SecretString::from(value)))
    }

    /// Wraps a refresh token Cryptlex returned.
    pub fn from_upstream(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// Returns the token for the upstream request body.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// The Cryptlex personal access token (PAT) the gateway holds for issuance
/// and sign-up. It never leaves the service.
#[derive(Debug, Clone)]
pub struct AdminToken(SecretString);

impl AdminToken {
    /// Wraps a PAT read from configuration.
    pub fn new(value: SecretString) -> Self {
        Self(value)
    }

    /// Returns the token for the upstream `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_secret() {
        let token = UserToken::parse("eyJ-very-secret-token").expect("valid token");
        let password = Password::parse("password", "hunter2-hunter2".to_owned()).expect("valid");
        let rendered = format!("{token:?} {password:?}");
        assert!(!rendered.contains("very-secret"), "{rendered}");
        assert!(!rendered.contains("hunter2"), "{rendered}");
    }

    #[test]
    fn bearer_tokens_with_spaces_or_control_characters_are_refused() {
        assert!(UserToken::parse("").is_err());
        assert!(UserToken::parse("two words").is_err());
        assert!(UserToken::parse("tab\there").is_err());
        assert!(UserToken::parse(&"x".repeat(MAX_ACCESS_TOKEN_LEN + 1)).is_err());
        assert!(UserToken::parse("abc.def.ghi").is_ok());
    }

    #[test]
    fn short_passwords_are_refused_at_sign_up_but_reach_login() {
        assert!(Password::parse("password", "short".to_owned()).is_err());
        assert!(Password::parse_for_login("password", "short".to_owned()).is_ok());
        assert!(Password::parse_for_login("password", String::new()).is_err());
    }
}
