//! Access, refresh and personal access tokens: issuing, looking up, expiring and revoking.
//!
//! Tokens are JWT-shaped (`header.claims.signature`, HS256 with a random per-process key) so a
//! client that peeks at them sees what the real API hands out, but the server never trusts
//! the signature alone: every token must also be in [`TokenTable`], which is what makes expiry
//! and revocation enforceable server-side. Clients must treat tokens as opaque.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore as _;
use ring::hmac;
use uuid::Uuid;

/// The `aud` claim of every token, matching the real API's host.
const AUDIENCE: &str = "https://api.cryptlex.com";

/// The `iss` claim, so a sandbox token can never be mistaken for a production one.
const ISSUER: &str = "https://sandbox.cryptlex.invalid";

/// What a valid bearer token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// A user's login token: reaches `/v3/me*` and logout only.
    User { user_id: String },
    /// A personal access token: reaches admin endpoints its scopes allow.
    Pat {
        owner_id: String,
        scopes: Vec<String>,
    },
}

/// Why a bearer token was refused; both become a 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    Unknown,
    Expired,
}

/// A freshly issued access/refresh pair.
#[derive(Debug)]
pub(crate) struct TokenPair {
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
}

#[derive(Debug)]
struct IssuedToken {
    grant: Grant,
    /// `None` for PATs, which in the sandbox live until revoked.
    expires_at: Option<DateTime<Utc>>,
    /// The refresh token issued with a login token, so logout can revoke both.
    refresh_token: Option<String>,
}

#[derive(Debug)]
struct RefreshGrant {
    user_id: String,
    expires_at: DateTime<Utc>,
}

/// Every token the sandbox has issued and not yet revoked.
pub(crate) struct TokenTable {
    signing_key: hmac::Key,
    access_token_ttl: TimeDelta,
    refresh_token_ttl: TimeDelta,
    tokens: HashMap<String, IssuedToken>,
    refresh_tokens: HashMap<String, RefreshGrant>,
}

impl std::fmt::Debug for TokenTable {
    // Hand-written so the signing key and the live tokens can never reach a log line.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TokenTable")
            .field("tokens", &self.tokens.len())
            .field("refresh_tokens", &self.refresh_tokens.len())
            .finish_non_exhaustive()
    }
}

impl TokenTable {
    /// Creates an empty table with a fresh random signing key.
    pub(crate) fn new(access_token_ttl: TimeDelta, refresh_token_ttl: TimeDelta) -> Self {
        let mut key_bytes = [0_u8; 32];
        rand::rng().fill_bytes(&mut key_bytes);
        TokenTable {
            signing_key: hmac::Key::new(hmac::HMAC_SHA256, &key_bytes),
            access_token_ttl,
            refresh_token_ttl,
            tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
        }
    }

    /// Looks a bearer token up; the table, not the signature, is the authority.
    pub(crate) fn resolve(&self, token: &str, now: DateTime<Utc>) -> Result<Grant, TokenRejection> {
        let issued = self.tokens.get(token).ok_or(TokenRejection::Unknown)?;
        match issued.expires_at {
            Some(expires_at) if expires_at <= now => Err(TokenRejection::Expired),
            _ => Ok(issued.grant.clone()),
        }
    }

    /// Issues a login token and its refresh token for `user_id`.
    pub(crate) fn issue_login(&mut self, user_id: &str, now: DateTime<Utc>) -> TokenPair {
        self.forget_expired(now);
        let expires_at = now + self.access_token_ttl;
        let access_token = self.sign(user_id, now, expires_at, serde_json::json!("user"));
        let refresh_token = random_opaque_token();
        self.refresh_tokens.insert(
            refresh_token.clone(),
            RefreshGrant {
                user_id: user_id.to_owned(),
                expires_at: now + self.refresh_token_ttl,
            },
        );
        self.tokens.insert(
            access_token.clone(),
            IssuedToken {
                grant: Grant::User {
                    user_id: user_id.to_owned(),
                },
                expires_at: Some(expires_at),
                refresh_token: Some(refresh_token.clone()),
            },
        );
        TokenPair {
            access_token,
            refresh_token,
        }
    }

    /// Trades a refresh token for a new pair. The old refresh token is consumed (rotation);
    /// the access token issued with it stays valid until it expires on its own.
    pub(crate) fn refresh(
        &mut self,
        refresh_token: &str,
        now: DateTime<Utc>,
    ) -> Result<TokenPair, TokenRejection> {
        let grant = self
            .refresh_tokens
            .remove(refresh_token)
            .ok_or(TokenRejection::Unknown)?;
        if grant.expires_at <= now {
            return Err(TokenRejection::Expired);
        }
        Ok(self.issue_login(&grant.user_id, now))
    }

    /// Issues a personal access token owned by `owner_id` with exactly `scopes`.
    pub(crate) fn issue_pat(
        &mut self,
        owner_id: &str,
        scopes: &[&str],
        now: DateTime<Utc>,
    ) -> String {
        let scopes: Vec<String> = scopes.iter().map(|scope| (*scope).to_owned()).collect();
        // PATs carry a far-future `exp` in their claims only for realism; the table keeps no
        // expiry, so they stay valid until revoked, like a PAT created without an expiry date.
        let token = self.sign(
            owner_id,
            now,
            now + TimeDelta::days(3650),
            serde_json::json!(scopes),
        );
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                grant: Grant::Pat {
                    owner_id: owner_id.to_owned(),
                    scopes,
                },
                expires_at: None,
                refresh_token: None,
            },
        );
        token
    }

    /// Revokes a token and, for a login token, the refresh token issued with it.
    pub(crate) fn revoke(&mut self, token: &str) -> bool {
        let Some(issued) = self.tokens.remove(token) else {
            return false;
        };
        if let Some(refresh_token) = issued.refresh_token {
            self.refresh_tokens.remove(&refresh_token);
        }
        true
    }

    /// Makes every user access token expired while keeping it known, so the next use gets
    /// the "expired" path rather than the "never issued" one. PATs and refresh tokens stay.
    pub(crate) fn expire_all_access_tokens(&mut self, now: DateTime<Utc>) {
        for issued in self.tokens.values_mut() {
            if matches!(issued.grant, Grant::User { .. }) {
                issued.expires_at = Some(now - TimeDelta::seconds(1));
            }
        }
    }

    /// Drops long-expired entries so a long-running sandbox does not grow without bound.
    /// Recently expired tokens are kept a while so they still answer "expired".
    fn forget_expired(&mut self, now: DateTime<Utc>) {
        let horizon = now - TimeDelta::hours(1);
        self.tokens.retain(|_, issued| {
            issued
                .expires_at
                .is_none_or(|expires_at| expires_at > horizon)
        });
        self.refresh_tokens
            .retain(|_, grant| grant.expires_at > horizon);
    }

    fn sign(
        &self,
        subject: &str,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        scope: serde_json::Value,
    ) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "sub": subject,
            "tid": crate::seed::ACCOUNT_ID,
            "scope": scope,
            "jti": Uuid::new_v4().to_string(),
            "iat": issued_at.timestamp(),
            "nbf": issued_at.timestamp(),
            "exp": expires_at.timestamp(),
            "iss": ISSUER,
            "aud": AUDIENCE,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = hmac::sign(&self.signing_key, signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }
}

/// Refresh tokens are opaque in Cryptlex, so they are just 256 random bits, hex-encoded.
fn random_opaque_token() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn table() -> TokenTable {
        TokenTable::new(TimeDelta::minutes(15), TimeDelta::days(30))
    }

    #[test]
    fn login_tokens_are_hs256_jwts_whose_signature_verifies() {
        let mut tokens = table();
        let pair = tokens.issue_login("user-1", Utc::now());

        let parts: Vec<&str> = pair.access_token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "user-1");
        assert_eq!(claims["aud"], AUDIENCE);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        hmac::verify(&tokens.signing_key, signing_input.as_bytes(), &signature).unwrap();
    }

    #[test]
    fn an_access_token_past_its_ttl_is_expired() {
        let mut tokens = table();
        let issued_at = Utc::now();
        let pair = tokens.issue_login("user-1", issued_at);

        let later = issued_at + TimeDelta::minutes(16);
        assert_eq!(
            tokens.resolve(&pair.access_token, later),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn a_refresh_token_can_be_used_only_once() {
        let mut tokens = table();
        let now = Utc::now();
        let pair = tokens.issue_login("user-1", now);

        assert!(tokens.refresh(&pair.refresh_token, now).is_ok());
        assert_eq!(
            tokens.refresh(&pair.refresh_token, now).unwrap_err(),
            TokenRejection::Unknown
        );
    }
}
