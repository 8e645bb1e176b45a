//! One method per Cryptlex endpoint the gateway calls: each describes its
//! request (path, query, credential, body, budget priority, whether it may be
//! retried) and decodes the answer into domain values.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use super::retry::Retry;
use super::transport::{Request, decode};
use super::{
    Account, Client, CryptlexError, CryptlexUser, NewLicense, NewUser, Priority, Rejection, wire,
};
use crate::domain::{
    AdminToken, CryptlexId, Email, IssuedLicense, Password, PersonName, RefreshToken,
    RequestContext, Session, UserLicense, UserProfile, UserToken,
};

impl Client {
    // === user calls (no token, or the user's own token) ===

    /// Signs a user in (`POST /v3/accounts/login`) with the configured account.
    pub async fn login(
        &self,
        ctx: &RequestContext,
        email: &Email,
        password: &Password,
    ) -> Result<Session, CryptlexError> {
        let (account_id, account_alias) = match &self.account {
            Account::Id(id) => (Some(id.as_str()), None),
            Account::Alias(alias) => (None, Some(alias.as_str())),
        };
        let body = wire::LoginBody {
            account_id,
            account_alias,
            email: email.as_str(),
            password: password.expose_secret(),
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
            Priority::SignIn,
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
            Priority::SignIn,
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
        match self.call(ctx, request).await {
            Ok(answer) => decode::<wire::UserDto>(&answer)
                .map(cryptlex_user)
                .map(Some),
            Err(CryptlexError::Rejected {
                kind: Rejection::NotFound,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
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

    /// Finds licenses carrying metadata `key` = `value`
    /// (`GET /v3/licenses?metadata.key[eq]=&metadata.value[eq]=`), oldest first.
    pub async fn find_licenses_by_metadata(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        key: &str,
        value: &str,
        hidden_keys: &[&str],
    ) -> Result<Vec<IssuedLicense>, CryptlexError> {
        let query = [
            ("metadata.key[eq]", key),
            ("metadata.value[eq]", value),
            ("page", "1"),
            ("limit", "10"),
        ];
        let request = Request::get(&["licenses"], Priority::Issuance)
            .query(&query)
            .bearer(pat.expose_secret());
        let answer = self.call(ctx, request).await?;
        let licenses: Vec<wire::LicenseDto> = decode(&answer)?;
        Ok(licenses
            .into_iter()
            .map(|dto| dto.into_issued(hidden_keys))
            .collect())
    }
}

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
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    DateTime::from_timestamp(exp, 0)
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
}
