//! Secret values: passwords and tokens.
//!
//! Each is a distinct type so a user token can never be passed where the
//! administrator's token is expected, and each wraps a [`SecretString`] so
//! `Debug` prints a redaction and the value is zeroed on drop. The only way to
//! read one is `expose_secret()`, which appears where an HTTP header or body
//! is built for Cryptlex. A user token also gives what the gateway works out
//! from it (its SHA-256, its unverified `exp` and `sub` claims), which its
//! `Debug` does not show either.

use std::fmt;
use std::sync::OnceLock;

use secrecy::{ExposeSecret, SecretString};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest as _, Sha256};

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
///
/// What a call needs to know about the token (its SHA-256, its unverified
/// claims) is worked out on first use and kept with it, so a call hashes the
/// text once and decodes the claims once however many places ask. Clones
/// share what was already worked out.
#[derive(Clone)]
pub struct UserToken {
    text: SecretString,
    /// SHA-256 of the text, filled on first use.
    digest: OnceLock<[u8; 32]>,
    /// The claims, read on first use; `None` when the token has no second
    /// part that is base64url of a JSON object.
    claims: OnceLock<Option<Claims>>,
}

/// Prints what `SecretString` prints: a redaction. Neither the text nor
/// anything derived from it (the digest, the claims) is shown.
impl fmt::Debug for UserToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserToken").field(&self.text).finish()
    }
}

impl UserToken {
    fn new(text: SecretString) -> Self {
        Self {
            text,
            digest: OnceLock::new(),
            claims: OnceLock::new(),
        }
    }

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
        Ok(Self::new(SecretString::from(value)))
    }

    /// Wraps an access token Cryptlex returned.
    pub fn from_upstream(value: String) -> Self {
        Self::new(SecretString::from(value))
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
        let mut parts = self.text.expose_secret().split('.');
        let (Some(header), Some(_claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        if !is_json_object(header) {
            return false;
        }
        // The second part, read once for every caller.
        let Some(claims) = self.claims() else {
            return false;
        };
        if signature.is_empty() || base64::Engine::decode(&JWT_PART, signature).is_err() {
            return false;
        }
        // `exp` is a NumericDate (seconds, possibly fractional). Any other
        // type is left for Cryptlex to judge.
        let long_ago = now.timestamp().saturating_sub(EXPIRY_LEEWAY_SECONDS) as f64;
        let expired = claims.exp.is_some_and(|exp| exp < long_ago);
        !expired
    }

    /// The SHA-256 of the token's text, computed on first use. It stands in
    /// for the token wherever one must be recognised again (cache keys,
    /// refusals, vouches) without keeping it.
    pub fn digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| {
            #[cfg(test)]
            counts::DIGESTS.with(|count| count.set(count.get() + 1));
            Sha256::digest(self.text.expose_secret().as_bytes()).into()
        })
    }

    /// The token's `exp` claim, unverified, when the token's second part is a
    /// JSON object whose `exp` is a number.
    pub fn claimed_expiry(&self) -> Option<f64> {
        self.claims()?.exp
    }

    /// The token's `sub` claim, unverified, when the token's second part is
    /// a JSON object whose `sub` is a string.
    pub fn claimed_subject(&self) -> Option<&str> {
        self.claims()?.sub.as_deref()
    }

    /// The claims of the token's second part (whether or not the token has
    /// exactly three), read on first use.
    fn claims(&self) -> Option<&Claims> {
        self.claims
            .get_or_init(|| {
                #[cfg(test)]
                counts::CLAIMS.with(|count| count.set(count.get() + 1));
                let part = self.text.expose_secret().split('.').nth(1)?;
                Claims::read(part)
            })
            .as_ref()
    }

    /// Returns the token for the upstream `Authorization` header.
    pub fn expose_secret(&self) -> &str {
        self.text.expose_secret()
    }
}

/// What the gateway reads of a token's claims. Read with
/// [`Claims::read`], which decodes the part once and keeps only these two
/// values; every other claim is checked to be JSON and skipped.
#[derive(Debug, Clone, Default, PartialEq)]
struct Claims {
    /// `exp` when it is a JSON number.
    exp: Option<f64>,
    /// `sub` when it is a JSON string.
    sub: Option<String>,
}

impl Claims {
    /// Decodes one base64url part of a JWT into its claims, if it is a JSON
    /// object. The JSON accepted is exactly what `serde_json::Value` accepts
    /// (an object of any valid JSON), and a repeated key counts with its last
    /// value, as it did in a `serde_json::Map`.
    fn read(part: &str) -> Option<Self> {
        let bytes = base64::Engine::decode(&JWT_PART, part).ok()?;
        let mut json = serde_json::Deserializer::from_slice(&bytes);
        let claims = json.deserialize_map(ClaimsVisitor).ok()?;
        json.end().ok()?;
        Some(claims)
    }
}

/// Whether one base64url part of a JWT is a JSON object (its contents are
/// checked, not kept).
fn is_json_object(part: &str) -> bool {
    let Ok(bytes) = base64::Engine::decode(&JWT_PART, part) else {
        return false;
    };
    let mut json = serde_json::Deserializer::from_slice(&bytes);
    json.deserialize_map(SkipVisitor).is_ok() && json.end().is_ok()
}

struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let mut claims = Claims::default();
        // A repeated key overwrites: the last value counts.
        while let Some(key) = map.next_key::<ClaimKey>()? {
            match key {
                ClaimKey::Exp => claims.exp = map.next_value::<NumberClaim>()?.0,
                ClaimKey::Sub => claims.sub = map.next_value::<StringClaim>()?.0,
                ClaimKey::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(claims)
    }
}

/// A claim's name, as far as the gateway cares.
enum ClaimKey {
    Exp,
    Sub,
    Other,
}

impl<'de> Deserialize<'de> for ClaimKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ClaimKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<ClaimKey, E> {
                Ok(match name {
                    "exp" => ClaimKey::Exp,
                    "sub" => ClaimKey::Sub,
                    _ => ClaimKey::Other,
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A claim's value when it is a JSON number (as `Value::as_f64` reads one),
/// else `None`; any JSON is accepted.
struct NumberClaim(Option<f64>);

impl<'de> Deserialize<'de> for NumberClaim {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl<'de> Visitor<'de> for NumberVisitor {
            type Value = NumberClaim;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<NumberClaim, E> {
                Ok(NumberClaim(Some(value as f64)))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<NumberClaim, E> {
                Ok(NumberClaim(Some(value as f64)))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<NumberClaim, E> {
                Ok(NumberClaim(Some(value)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<NumberClaim, E> {
                Ok(NumberClaim(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<NumberClaim, E> {
                Ok(NumberClaim(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<NumberClaim, E> {
                Ok(NumberClaim(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<NumberClaim, A::Error> {
                SkipVisitor.visit_seq(seq).map(|Skip| NumberClaim(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<NumberClaim, A::Error> {
                SkipVisitor.visit_map(map).map(|Skip| NumberClaim(None))
            }
        }
        deserializer.deserialize_any(NumberVisitor)
    }
}

/// A claim's value when it is a JSON string, else `None`; any JSON is
/// accepted.
struct StringClaim(Option<String>);

impl<'de> Deserialize<'de> for StringClaim {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringVisitor;
        impl<'de> Visitor<'de> for StringVisitor {
            type Value = StringClaim;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<StringClaim, E> {
                Ok(StringClaim(Some(value.to_owned())))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<StringClaim, E> {
                Ok(StringClaim(Some(value)))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<StringClaim, E> {
                Ok(StringClaim(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<StringClaim, E> {
                Ok(StringClaim(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<StringClaim, E> {
                Ok(StringClaim(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<StringClaim, E> {
                Ok(StringClaim(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<StringClaim, E> {
                Ok(StringClaim(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<StringClaim, A::Error> {
                SkipVisitor.visit_seq(seq).map(|Skip| StringClaim(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<StringClaim, A::Error> {
                SkipVisitor.visit_map(map).map(|Skip| StringClaim(None))
            }
        }
        deserializer.deserialize_any(StringVisitor)
    }
}

/// Any JSON value, checked and dropped. Unlike `serde::de::IgnoredAny`,
/// which serde_json skips without reading numbers and strings (so it takes
/// `1e400` and a lone surrogate `"\ud800"`, which `serde_json::Value`
/// refuses), this visits every value the way `Value` does, so it accepts
/// exactly the same JSON, without allocating.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// How often this thread worked out a digest or read claims, so tests can
/// check each is done once per token.
#[cfg(test)]
pub(crate) mod counts {
    use std::cell::Cell;

    thread_local! {
        pub(super) static DIGESTS: Cell<usize> = const { Cell::new(0) };
        pub(super) static CLAIMS: Cell<usize> = const { Cell::new(0) };
    }

    /// Digests computed and claims read on this thread so far.
    pub(crate) fn get() -> (usize, usize) {
        (DIGESTS.with(Cell::get), CLAIMS.with(Cell::get))
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

    /// The shape check as it was before the claims were read once and kept:
    /// each part parsed into a `serde_json::Value`.
    fn shape_check_before(text: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
        let mut parts = text.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Some(_) = object_before(header) else {
            return false;
        };
        let Some(claims) = object_before(claims) else {
            return false;
        };
        if signature.is_empty() || base64::Engine::decode(&JWT_PART, signature).is_err() {
            return false;
        }
        let long_ago = now.timestamp().saturating_sub(EXPIRY_LEEWAY_SECONDS) as f64;
        !claims
            .get("exp")
            .and_then(serde_json::Value::as_f64)
            .is_some_and(|exp| exp < long_ago)
    }

    /// `exp` and `sub` as read before, from the second part of any token.
    fn claims_before(text: &str) -> (Option<f64>, Option<String>) {
        let claims = text.split('.').nth(1).and_then(object_before);
        let Some(claims) = claims else {
            return (None, None);
        };
        (
            claims.get("exp").and_then(serde_json::Value::as_f64),
            claims
                .get("sub")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        )
    }

    fn object_before(part: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let bytes = base64::Engine::decode(&JWT_PART, part).ok()?;
        match serde_json::from_slice(&bytes).ok()? {
            serde_json::Value::Object(object) => Some(object),
            _ => None,
        }
    }

    fn part(text: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        base64::Engine::encode(&URL_SAFE_NO_PAD, text)
    }

    /// Token texts covering every rule of the shape check and of the claims.
    fn token_texts(now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
        let hs256 = part(r#"{"alg":"HS256","typ":"JWT"}"#);
        let sig = "c2lnbmF0dXJl";
        let live = now.timestamp() + 900;
        let past = now.timestamp() - 3600;
        let skewed = now.timestamp() - 300;
        let claims = [
            format!(r#"{{"sub":"user-1","exp":{live}}}"#),
            r#"{"sub":"user-1"}"#.to_owned(),
            format!(r#"{{"exp":{live}.5}}"#),
            r#"{"exp":"soon","sub":"u"}"#.to_owned(),
            format!(r#"{{"exp":{past},"sub":"u"}}"#),
            format!(r#"{{"exp":{skewed}}}"#),
            format!(r#"{{"exp":-{past}}}"#),
            r#"{"exp":1e300}"#.to_owned(),
            r#"{"exp":18446744073709551616}"#.to_owned(),
            r#"{"exp":null,"sub":null}"#.to_owned(),
            r#"{"exp":true,"sub":false}"#.to_owned(),
            r#"{"exp":[1],"sub":["u"]}"#.to_owned(),
            r#"{"exp":{"at":1},"sub":{"id":"u"}}"#.to_owned(),
            r#"{"sub":7}"#.to_owned(),
            r#"{"sub":""}"#.to_owned(),
            r#"{"sub":"a b"}"#.to_owned(),
            // Repeated keys: the last value counts, whatever its type.
            r#"{"sub":"first","sub":"second"}"#.to_owned(),
            r#"{"sub":"first","sub":7}"#.to_owned(),
            format!(r#"{{"exp":"soon","exp":{past}}}"#),
            format!(r#"{{"exp":{past},"exp":"soon"}}"#),
            // Escaped names and values are read unescaped.
            r#"{"s\u0075b":"esc\u0061ped","\u0065xp":1}"#.to_owned(),
            // Other claims of every type, nested.
            r#"{"sub":"u","roles":["a",{"b":[null,1.5,-2]}],"tid":"t"}"#.to_owned(),
            // Not JSON objects, or not JSON at all.
            "[1,2]".to_owned(),
            "[]".to_owned(),
            "\"text\"".to_owned(),
            "42".to_owned(),
            "null".to_owned(),
            "not json".to_owned(),
            r#"{"sub":"u"} trailing"#.to_owned(),
            r#"{"sub":"u"}  "#.to_owned(),
            r#"{"sub":"u",}"#.to_owned(),
            // JSON a `Value` refuses, in a claim nobody reads.
            r#"{"sub":"u","big":1e400}"#.to_owned(),
            r#"{"sub":"u","bad":"\ud800"}"#.to_owned(),
            format!(
                r#"{{"sub":"u","deep":{}{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            format!(
                r#"{{"sub":"u","deep":{}{}}}"#,
                "[".repeat(100),
                "]".repeat(100)
            ),
        ];
        let mut texts: Vec<String> = claims
            .iter()
            .map(|claims| format!("{hs256}.{}.{sig}", part(claims)))
            .collect();
        let good = part(r#"{"sub":"u"}"#);
        texts.extend([
            // Headers that are no JSON object.
            format!("{}.{good}.{sig}", part("[]")),
            format!("{}.{good}.{sig}", part(r#"["alg"]"#)),
            format!("{}.{good}.{sig}", part("not json")),
            format!("{}.{good}.{sig}", part(r#"{"alg":1e400}"#)),
            format!("{}.{good}.{sig}", part("{}")),
            // Signatures.
            format!("{hs256}.{good}."),
            format!("{hs256}.{good}.not*base64"),
            // Bad base64 in the header or the claims.
            format!("*.{good}.{sig}"),
            format!("{hs256}.*.{sig}"),
            // Two or four parts: no shape, but the claims of the second part
            // were read all the same.
            format!("{hs256}.{good}"),
            format!("{hs256}.{good}.{sig}.{sig}"),
            format!("x.{}", part(r#"{"sub":"two-parts","exp":1}"#)),
            // Padded parts, which a lenient issuer might send.
            "eyJhbGciOiJIUzI1NiJ9.e30=.c2lnbg==".to_owned(),
            "abc.def".to_owned(),
            "garbage.token.value".to_owned(),
            "opaque".to_owned(),
            "a.b.c.d".to_owned(),
            "..".to_owned(),
            "e30.e30".to_owned(),
            "e30.e30.e30".to_owned(),
        ]);
        texts
    }

    #[test]
    fn claims_read_once_give_what_parsing_into_json_values_gave() {
        let now = chrono::Utc::now();
        let (mut shaped, mut refused, mut with_sub) = (0, 0, 0);
        for text in token_texts(now) {
            let token = UserToken::parse(&text).expect("well-formed bearer token");
            let (exp, sub) = claims_before(&text);
            let before = shape_check_before(&text, now);
            assert_eq!(token.could_be_cryptlex_token(now), before, "{text}");
            if before {
                shaped += 1;
            } else {
                refused += 1;
            }
            with_sub += usize::from(sub.is_some());
            assert_eq!(token.claimed_expiry(), exp, "{text}");
            assert_eq!(token.claimed_subject(), sub.as_deref(), "{text}");
        }
        // The cases tell both ways.
        assert!(shaped >= 10 && refused >= 20 && with_sub >= 10);
    }

    #[test]
    fn repeated_claims_count_with_their_last_value() {
        let hs256 = part(r#"{"alg":"HS256"}"#);
        let token = |claims: &str| {
            UserToken::parse(&format!("{hs256}.{}.c2ln", part(claims))).expect("token")
        };
        let now = chrono::Utc::now();
        let past = now.timestamp() - 3600;

        assert_eq!(
            token(r#"{"sub":"a","sub":"b"}"#).claimed_subject(),
            Some("b")
        );
        assert_eq!(token(r#"{"sub":"a","sub":7}"#).claimed_subject(), None);
        let expired_last = token(&format!(r#"{{"exp":"soon","exp":{past}}}"#));
        assert!(!expired_last.could_be_cryptlex_token(now));
        let string_last = token(&format!(r#"{{"exp":{past},"exp":"soon"}}"#));
        assert!(string_last.could_be_cryptlex_token(now));
        assert_eq!(string_last.claimed_expiry(), None);
    }

    #[test]
    fn a_token_is_hashed_once_and_its_claims_read_once() {
        let now = chrono::Utc::now();
        let token = jwt(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"u","exp":{}}}"#, now.timestamp() + 900),
            "c2ln",
        );
        assert!(token.digest.get().is_none() && token.claims.get().is_none());
        let before = counts::get();

        let first = *token.digest();
        assert!(token.could_be_cryptlex_token(now));
        let copy = token.clone();
        for token in [&token, &copy] {
            assert_eq!(*token.digest(), first);
            assert!(token.could_be_cryptlex_token(now));
            assert_eq!(token.claimed_subject(), Some("u"));
            assert!(token.claimed_expiry().is_some());
        }

        let (digests, claims) = counts::get();
        assert_eq!((digests - before.0, claims - before.1), (1, 1));
        assert_eq!(token.digest.get(), Some(&first));
        let expected: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
        assert_eq!(first, expected);
    }

    #[test]
    fn a_token_refused_for_its_shape_is_never_hashed() {
        let before = counts::get();
        let token = UserToken::parse("opaque").expect("token");
        assert!(!token.could_be_cryptlex_token(chrono::Utc::now()));
        assert!(token.digest.get().is_none());
        assert_eq!(counts::get().0, before.0);
    }

    #[test]
    fn debug_output_shows_neither_the_token_nor_what_was_worked_out_from_it() {
        let text = format!(
            "{}.{}.c2lnbmF0dXJl",
            part(r#"{"alg":"HS256"}"#),
            part(r#"{"sub":"user-secret-id","exp":4102444800}"#)
        );
        let token = UserToken::parse(&text).expect("token");
        let blank = format!("{token:?}");
        let digest = hex::encode(token.digest());
        assert!(token.could_be_cryptlex_token(chrono::Utc::now()));
        let rendered = format!("{token:?} {token:#?}");

        assert_eq!(
            format!("{token:?}"),
            blank,
            "filling the cells shows nothing"
        );
        for hidden in [
            text.as_str(),
            "c2lnbmF0dXJl",
            digest.as_str(),
            "user-secret-id",
            "4102444800",
        ] {
            assert!(!rendered.contains(hidden), "{rendered}");
        }
        let bytes = format!("{:?}", token.digest());
        assert!(!rendered.contains(&bytes[1..bytes.len() - 1]), "{rendered}");
        assert!(rendered.contains("REDACTED"), "{rendered}");
    }

    #[test]
    fn short_passwords_are_refused_at_sign_up_but_reach_login() {
        assert!(Password::parse("password", "short".to_owned()).is_err());
        assert!(Password::parse_for_login("password", "short".to_owned()).is_ok());
        assert!(Password::parse_for_login("password", String::new()).is_err());
    }
}
