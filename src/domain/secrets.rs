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

/// How long past its `exp` a token may still be accepted by Cryptlex, as far
/// as the gateway knows. Cryptlex runs on ASP.NET Core, whose JWT validation
/// tolerates 5 minutes of clock skew by default, and our clock may differ from
/// Cryptlex's too; a token is only called expired well past both.
const EXPIRY_LEEWAY_SECONDS: i64 = 10 * 60;

/// Decodes JWT parts leniently: with or without padding, and with non-zero
/// trailing bits. The shape check only refuses, so it must not be stricter
/// than any decoder Cryptlex might use.
const JWT_PART: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A Cryptlex user access token, taken from `authorization: Bearer` metadata.
///
/// The gateway treats it as opaque: it is forwarded, never trusted. Its shape
/// may be looked at, but only to refuse a token that cannot work
/// ([`UserToken::could_be_cryptlex_token`]), never to accept one.
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

    /// Whether the token has the shape of a Cryptlex access token that has
    /// not yet expired at `now`: a JWT (RFC 7519) in compact form, three
    /// base64url parts, the first two JSON objects and the signature not
    /// empty, whose `exp` claim (when present as a number) is not well past.
    ///
    /// Cryptlex's API declares its bearer scheme as `bearerFormat: JWT`, its
    /// login tokens are JWTs signed with HS256 or RS256, and the sandbox issues
    /// the same shape, so a token that fails this check would be refused by
    /// Cryptlex with a 401 and can be answered so without spending the
    /// upstream budget.
    ///
    /// The claims are unverified (the gateway cannot check the signature), so
    /// they are only ever used to refuse: a token that passes proves nothing
    /// and still goes to Cryptlex, which alone decides. Claims other than
    /// `exp` are not looked at: Cryptlex does not document them.
    pub fn could_be_cryptlex_token(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        let mut parts = self.0.expose_secret().split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Some(_) = json_object(header) else {
            return false;
        };
        let Some(claims) = json_object(claims) else {
            return false;
        };
        if signature.is_empty() || base64::Engine::decode(&JWT_PART, signature).is_err() {
            return false;
        }
        // `exp` is a NumericDate (seconds, possibly fractional). Any other
        // type is left for Cryptlex to judge.
        let long_ago = now.timestamp().saturating_sub(EXPIRY_LEEWAY_SECONDS) as f64;
        let expired = claims
            .get("exp")
            .and_then(serde_json::Value::as_f64)
            .is_some_and(|exp| exp < long_ago);
        !expired
    }

    /// Returns the token for the upstream `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Decodes one base64url part of a JWT into a JSON object.
fn json_object(part: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let bytes = base64::Engine::decode(&JWT_PART, part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(object) => Some(object),
        _ => None,
    }
}

/// A Cryptlex refresh token.
///
/// Opaque in every sense: Cryptlex documents it only as a string of 1 to 256
/// characters, so, unlike access tokens, no shape can tell junk from a real
/// one.
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

    fn jwt(header: &str, claims: &str, signature: &str) -> UserToken {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = format!(
            "{}.{}.{signature}",
            base64::Engine::encode(&URL_SAFE_NO_PAD, header),
            base64::Engine::encode(&URL_SAFE_NO_PAD, claims),
        );
        UserToken::parse(&token).expect("well-formed bearer token")
    }

    #[test]
    fn jwt_shaped_tokens_that_have_not_expired_could_be_cryptlex_tokens() {
        let now = chrono::Utc::now();
        let exp = now.timestamp() + 900;
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        let rs256 = r#"{"alg":"RS256","kid":"k1"}"#;
        let cases = [
            // What the sandbox issues.
            jwt(
                hs256,
                &format!(r#"{{"sub":"u","exp":{exp}}}"#),
                "c2lnbmF0dXJl",
            ),
            // RS256, claims Cryptlex does not document, no `exp` at all.
            jwt(rs256, r#"{"tid":"t","role":"user"}"#, "c2ln"),
            // A fractional or non-numeric `exp` is not ours to judge.
            jwt(hs256, &format!(r#"{{"exp":{exp}.5}}"#), "c2ln"),
            jwt(hs256, r#"{"exp":"soon"}"#, "c2ln"),
            // Expired, but within the clock skew Cryptlex may allow.
            jwt(
                hs256,
                &format!(r#"{{"exp":{}}}"#, now.timestamp() - 300),
                "c2ln",
            ),
        ];
        for token in &cases {
            assert!(token.could_be_cryptlex_token(now));
        }
        // Padded parts, which a lenient issuer might send.
        let padded = UserToken::parse("eyJhbGciOiJIUzI1NiJ9.e30=.c2lnbg==").expect("token");
        assert!(padded.could_be_cryptlex_token(now));
    }

    #[test]
    fn tokens_that_are_no_live_jwt_cannot_be_cryptlex_tokens() {
        let now = chrono::Utc::now();
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        let expired = format!(r#"{{"exp":{}}}"#, now.timestamp() - 3600);
        let shaped = [
            jwt(hs256, &expired, "c2ln"),
            jwt(hs256, "[1,2]", "c2ln"),
            jwt("not json", "{}", "c2ln"),
            jwt(hs256, "{}", ""),
            jwt(hs256, "{}", "not*base64"),
        ];
        for token in &shaped {
            assert!(!token.could_be_cryptlex_token(now));
        }
        for raw in [
            "abc.def",
            "garbage.token.value",
            "opaque",
            "a.b.c.d",
            "..",
            "e30.e30",
        ] {
            let token = UserToken::parse(raw).expect("well-formed bearer token");
            assert!(!token.could_be_cryptlex_token(now), "{raw}");
        }
    }

    #[test]
    fn short_passwords_are_refused_at_sign_up_but_reach_login() {
        assert!(Password::parse("password", "short".to_owned()).is_err());
        assert!(Password::parse_for_login("password", "short".to_owned()).is_ok());
        assert!(Password::parse_for_login("password", String::new()).is_err());
    }
}
