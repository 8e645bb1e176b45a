//! One method per Cryptlex endpoint the gateway calls: each describes its
//! request (path, query, credential, body, budget priority, whether it may be
//! retried) and decodes the answer into domain values.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::retry::Retry;
use super::transport::{Request, decode};
use super::{
    Account, Client, CryptlexError, CryptlexUser, MetadataMatches, NewLicense, NewUser, Priority,
    RateLimitStatus, Rejection, wire,
};
use crate::domain::{
    AdminToken, CryptlexId, Email, IssuedLicense, Password, PersonName, RefreshToken,
    RequestContext, SecondFactor, Session, UserLicense, UserProfile, UserToken,
};

impl Client {
    // === user calls (no token, or the user's own token) ===

    /// Signs a user in (`POST /v3/accounts/login`) with the configured account
    /// and, for an account with two-factor authentication, its second factor.
    ///
    /// With an alias, `accountId` still goes out, as `null` (see
    /// [`wire::LoginBody`]).
    pub async fn login(
        &self,
        ctx: &RequestContext,
        email: &Email,
        password: &Password,
        second_factor: Option<&SecondFactor>,
    ) -> Result<Session, CryptlexError> {
        let (account_id, account_alias) = match &self.account {
            Account::Id(id) => (Some(id.as_str()), None),
            Account::Alias(alias) => (None, Some(alias.as_str())),
        };
        let (two_factor_code, two_factor_recovery_code) = match second_factor {
            None => (None, None),
            Some(SecondFactor::Code(code)) => (Some(code.expose_secret()), None),
            Some(SecondFactor::RecoveryCode(code)) => (None, Some(code.expose_secret())),
        };
        let body = wire::LoginBody {
            account_id,
            account_alias,
            email: email.as_str(),
            password: password.expose_secret(),
            two_factor_code,
            two_factor_recovery_code,
        };
        let request =
            Request::post(&["accounts", "login"], Priority::SignIn, Retry::Safe).json(&body);
        let answer = self.call(ctx, request).await?;
        decode::<wire::AccessTokenDto>(&answer).map(session_from)
    }

    /// Exchanges a refresh token (`POST /v3/accounts/login-refresh-token`).
    pub async fn refresh(
        &self,
        ctx: &RequestContext,
        refresh_token: &RefreshToken,
    ) -> Result<Session, CryptlexError> {
        let body = wire::RefreshBody {
            refresh_token: refresh_token.expose_secret(),
        };
        let request = Request::post(
            &["accounts", "login-refresh-token"],
            Priority::Session,
            Retry::IfNotProcessed,
        )
        .json(&body);
        let answer = self.call(ctx, request).await?;
        decode::<wire::AccessTokenDto>(&answer).map(session_from)
    }

    /// Revokes the user's access token (`POST /v3/accounts/logout`).
    pub async fn logout(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<(), CryptlexError> {
        let request = Request::post(
            &["accounts", "logout"],
            Priority::Session,
            Retry::IfNotProcessed,
        )
        .bearer(token.expose_secret());
        self.call(ctx, request).await?;
        Ok(())
    }

    /// Returns the token owner's profile (`GET /v3/me`).
    pub async fn me(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<UserProfile, CryptlexError> {
        let request = Request::get(&["me"], Priority::Read).bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        decode::<wire::ProfileDto>(&answer).map(UserProfile::from)
    }

    /// Returns one page of the token owner's licenses (`GET /v3/me/licenses`).
    pub async fn my_licenses(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        page: u32,
        limit: u32,
        product_id: Option<&CryptlexId>,
    ) -> Result<Vec<UserLicense>, CryptlexError> {
        let page = page.to_string();
        let limit = limit.to_string();
        let mut query = vec![("page", page.as_str()), ("limit", limit.as_str())];
        if let Some(product_id) = product_id {
            query.push(("productId[eq]", product_id.as_str()));
        }
        let request = Request::get(&["me", "licenses"], Priority::Read)
            .query(&query)
            .bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        let licenses: Vec<wire::UserLicenseDto> = decode(&answer)?;
        Ok(licenses.into_iter().map(UserLicense::from).collect())
    }

    // === administrator calls (the PAT) ===

    /// Creates an end user (`POST /v3/users`) with role `user`.
    pub async fn create_user(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        user: &NewUser<'_>,
    ) -> Result<CryptlexUser, CryptlexError> {
        let body = wire::NewUserBody {
            email: user.email.as_str(),
            first_name: user.first_name.as_str(),
            last_name: user.last_name.map(PersonName::as_str),
            password: user.password.expose_secret(),
            // Sign-up never creates anything but an end user.
            role: "user",
        };
        let request = Request::post(&["users"], Priority::SignIn, Retry::Never)
            .bearer(pat.expose_secret())
            .json(&body);
        let answer = self.call(ctx, request).await?;
        decode::<wire::UserDto>(&answer).map(cryptlex_user)
    }

    /// Finds a user by exact email (`GET /v3/users?email[eq]=`).
    pub async fn find_user_by_email(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        email: &Email,
    ) -> Result<Option<CryptlexUser>, CryptlexError> {
        let query = [("email[eq]", email.as_str()), ("page", "1"), ("limit", "2")];
        let request = Request::get(&["users"], Priority::Issuance)
            .query(&query)
            .bearer(pat.expose_secret());
        let answer = self.call(ctx, request).await?;
        let users: Vec<wire::UserDto> = decode(&answer)?;
        Ok(users
            .into_iter()
            .find(|user| user.email.eq_ignore_ascii_case(email.as_str()))
            .map(cryptlex_user))
    }

    /// Returns the user with `id` (`GET /v3/users/{id}`), or `None` when
    /// there is none.
    pub async fn get_user(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
    ) -> Result<Option<CryptlexUser>, CryptlexError> {
        let path = ["users", id.as_str()];
        let request = Request::get(&path, Priority::Issuance).bearer(pat.expose_secret());
        let Some(answer) = unless_not_found(self.call(ctx, request).await)? else {
            return Ok(None);
        };
        decode::<wire::UserDto>(&answer)
            .map(cryptlex_user)
            .map(Some)
    }

    /// Creates a license (`POST /v3/licenses`).
    ///
    /// Not idempotent upstream: callers must have recorded the attempt first
    /// and must reconcile (never retry) when [`CryptlexError::outcome_unknown`].
    pub async fn create_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        license: &NewLicense<'_>,
    ) -> Result<IssuedLicense, CryptlexError> {
        let body = wire::NewLicenseBody {
            product_id: license.product_id.as_str(),
            user_id: license.user_id.as_str(),
            license_template_id: license.license_template_id.map(CryptlexId::as_str),
            allowed_activations: license.allowed_activations,
            metadata: license
                .metadata
                .iter()
                .map(|(key, value)| wire::NewMetadataBody {
                    key,
                    value,
                    view_permissions: Vec::new(),
                })
                .collect(),
        };
        let request = Request::post(&["licenses"], Priority::Issuance, Retry::Never)
            .bearer(pat.expose_secret())
            .json(&body);
        let answer = self.call(ctx, request).await?;
        decode::<wire::LicenseDto>(&answer).map(|dto| dto.into_issued(license.hidden_keys))
    }

    /// Finds every license carrying metadata `key` = `value`
    /// (`GET /v3/licenses?metadata.key[eq]=&metadata.value[eq]=`), oldest first, reading
    /// page after page until a short one, or until [`METADATA_SEARCH_MAX_PAGES`].
    ///
    /// Cryptlex may match the key and the value on two different entries of a license, so
    /// callers must check the entry themselves.
    pub async fn find_licenses_by_metadata(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        key: &str,
        value: &str,
        hidden_keys: &[&str],
    ) -> Result<MetadataMatches, CryptlexError> {
        let limit = METADATA_SEARCH_PAGE_SIZE.to_string();
        let mut licenses = Vec::new();
        for page in 1..=METADATA_SEARCH_MAX_PAGES {
            let page = page.to_string();
            let query = [
                ("metadata.key[eq]", key),
                ("metadata.value[eq]", value),
                ("page", page.as_str()),
                ("limit", limit.as_str()),
            ];
            let request = Request::get(&["licenses"], Priority::Issuance)
                .query(&query)
                .bearer(pat.expose_secret());
            let answer = self.call(ctx, request).await?;
            let found: Vec<wire::LicenseDto> = decode(&answer)?;
            let last_page = found.len() < METADATA_SEARCH_PAGE_SIZE;
            licenses.extend(found.into_iter().map(|dto| dto.into_issued(hidden_keys)));
            if last_page {
                return Ok(MetadataMatches {
                    licenses,
                    complete: true,
                });
            }
        }
        Ok(MetadataMatches {
            licenses,
            complete: false,
        })
    }
    // === read-only checks of the configuration (`check-upstream`) ===

    /// Asks `GET /v3/me` without a token: Cryptlex answers 401, which shows the
    /// base URL reaches it without spending any credential.
    pub async fn ping(&self, ctx: &RequestContext) -> Result<(), CryptlexError> {
        match self.call(ctx, Request::get(&["me"], Priority::Read)).await {
            Ok(_)
            | Err(CryptlexError::Rejected {
                kind: Rejection::Unauthenticated,
                ..
            }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Returns the PAT owner's profile (`GET /v3/me` with the PAT, which any
    /// valid token may call) and the rate-limit headroom Cryptlex reported.
    pub async fn pat_owner(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
    ) -> Result<(UserProfile, RateLimitStatus), CryptlexError> {
        let request = Request::get(&["me"], Priority::Read).bearer(pat.expose_secret());
        let answer = self.call(ctx, request).await?;
        let profile = decode::<wire::ProfileDto>(&answer).map(UserProfile::from)?;
        Ok((profile, answer.rate_limit))
    }

    /// Reads one user (`GET /v3/users?limit=1`): succeeds exactly when the
    /// PAT holds `user:read`. Nothing is changed.
    pub async fn probe_user_read(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
    ) -> Result<(), CryptlexError> {
        self.read_first::<wire::UserDto>(ctx, pat, "users").await
    }

    /// Reads one license (`GET /v3/licenses?limit=1`): succeeds exactly when
    /// the PAT holds `license:read`. Nothing is changed.
    pub async fn probe_license_read(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
    ) -> Result<(), CryptlexError> {
        self.read_first::<wire::LicenseDto>(ctx, pat, "licenses")
            .await
    }

    /// Reads the first item of a list, decoding it as `T`.
    async fn read_first<T: serde::de::DeserializeOwned>(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        collection: &str,
    ) -> Result<(), CryptlexError> {
        let query = [("page", "1"), ("limit", "1")];
        let path = [collection];
        let request = Request::get(&path, Priority::Read)
            .query(&query)
            .bearer(pat.expose_secret());
        let answer = self.call(ctx, request).await?;
        decode::<Vec<T>>(&answer).map(drop)
    }

    /// Returns the product with `id` (`GET /v3/products/{id}`, scope
    /// `product:read`), or `None` when there is none.
    pub async fn get_product(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
    ) -> Result<Option<Product>, CryptlexError> {
        let path = ["products", id.as_str()];
        let request = Request::get(&path, Priority::Read).bearer(pat.expose_secret());
        let Some(answer) = unless_not_found(self.call(ctx, request).await)? else {
            return Ok(None);
        };
        let dto = decode::<wire::ProductDto>(&answer)?;
        Ok(Some(Product {
            id: CryptlexId::from_upstream(dto.id),
            display_name: dto.display_name.or(dto.name).unwrap_or_default(),
        }))
    }

    /// Returns the account with `id` (`GET /v3/accounts/{id}`, scope
    /// `account:read`), or `None` when there is none.
    pub async fn get_account(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &str,
    ) -> Result<Option<AccountInfo>, CryptlexError> {
        let path = ["accounts", id];
        let request = Request::get(&path, Priority::Read).bearer(pat.expose_secret());
        let Some(answer) = unless_not_found(self.call(ctx, request).await)? else {
            return Ok(None);
        };
        let dto = decode::<wire::AccountDto>(&answer)?;
        Ok(Some(AccountInfo {
            id: dto.id,
            alias: dto.account_alias.unwrap_or_default(),
            company: dto.company.unwrap_or_default(),
        }))
    }
}

/// Turns a 404 into `None`, for lookups of one thing by id.
fn unless_not_found<T>(result: Result<T, CryptlexError>) -> Result<Option<T>, CryptlexError> {
    match result {
        Ok(answer) => Ok(Some(answer)),
        Err(CryptlexError::Rejected {
            kind: Rejection::NotFound,
            ..
        }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// A product, as `check-upstream` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: CryptlexId,
    pub display_name: String,
}

/// A Cryptlex account, as `check-upstream` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub id: String,
    pub alias: String,
    pub company: String,
}

/// The largest page Cryptlex serves (`limit` is 1..100).
const METADATA_SEARCH_PAGE_SIZE: usize = 100;

/// How many pages a metadata search reads at most. A request id belongs to one license, so
/// a search never legitimately needs a second page; the bound keeps a search for a value that
/// many licenses share (someone else's metadata) from spending the whole rate budget.
const METADATA_SEARCH_MAX_PAGES: usize = 5;

fn cryptlex_user(dto: wire::UserDto) -> CryptlexUser {
    CryptlexUser {
        id: CryptlexId::from_upstream(dto.id),
        email: dto.email,
    }
}

pub(super) fn session_from(dto: wire::AccessTokenDto) -> Session {
    let expires_at = jwt_expiry(&dto.access_token);
    Session {
        access_token: UserToken::from_upstream(dto.access_token),
        refresh_token: dto.refresh_token.map(RefreshToken::from_upstream),
        expires_at,
    }
}

/// Reads the `exp` claim of a JWT without verifying it. Display only: the
/// gateway never makes an authorization decision on unverified claims.
fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let exp = jwt_claims(token)?.get("exp")?.as_i64()?;
    DateTime::from_timestamp(exp, 0)
}

/// The claims of a JWT, unverified; `None` for an opaque token.
fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What a PAT's own claims say about it, when it is a JWT that says anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatClaims {
    /// The scopes listed in `scope`, `scopes` or `scp` (a list, or one
    /// space-separated string).
    pub scopes: Option<Vec<String>>,
    /// The account (tenant) id in `tid`, `tenantId` or `accountId`.
    pub account_id: Option<String>,
}

impl PatClaims {
    /// Reads `pat`'s claims without verifying them, for `check-upstream`'s
    /// report only. Cryptlex does not document its claims (these are the usual
    /// names, and the sandbox's); an opaque token gives nothing, and nothing
    /// here ever decides what a call may do.
    pub fn read(pat: &AdminToken) -> Self {
        let Some(claims) = jwt_claims(pat.expose_secret()) else {
            return Self::default();
        };
        let first = |names: &[&str]| names.iter().find_map(|name| claims.get(*name));
        let scopes = first(&["scope", "scopes", "scp"]).and_then(|value| match value {
            serde_json::Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect(),
            ),
            serde_json::Value::String(text) => {
                Some(text.split_whitespace().map(str::to_owned).collect())
            }
            _ => None,
        });
        let account_id = first(&["tid", "tenantId", "accountId"])
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Self { scopes, account_id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_expiry_reads_exp_and_tolerates_opaque_tokens() {
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1900000000}"#);
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.sig");
        assert_eq!(
            jwt_expiry(&token).map(|at| at.timestamp()),
            Some(1_900_000_000)
        );
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry("a.%%%.c"), None);
    }

    #[test]
    fn pat_claims_read_scope_lists_and_strings_and_tolerate_opaque_tokens() {
        let token = |claims: &str| {
            let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
            AdminToken::new(format!("eyJhbGciOiJIUzI1NiJ9.{claims}.sig").into())
        };
        let listed = PatClaims::read(&token(r#"{"scope":["license:read"],"tid":"t-1"}"#));
        assert_eq!(listed.scopes, Some(vec!["license:read".to_owned()]));
        assert_eq!(listed.account_id.as_deref(), Some("t-1"));
        let spaced = PatClaims::read(&token(r#"{"scp":"user:read user:write"}"#));
        assert_eq!(
            spaced.scopes,
            Some(vec!["user:read".to_owned(), "user:write".to_owned()])
        );
        let opaque = PatClaims::read(&AdminToken::new("opaque".to_owned().into()));
        assert_eq!(opaque, PatClaims::default());
    }
}
