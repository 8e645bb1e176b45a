//! `licensing.v1.UserService`: the public, user-facing RPCs.

use tonic::{Request, Response, Status};

use super::auth;
use super::client_address::{self, ClientAddressPolicy};
use super::context::{Deadlines, request_context};
use super::pb::{self, user_service_server::UserService};
use crate::domain::{CryptlexId, Email, Password, RefreshToken, ValidationErrors};
use crate::licensing::pagination::{page_request, page_token};
use crate::licensing::throttle::ClientAddress;
use crate::licensing::{Licensing, LoginCommand, SignUpCommand};

/// The adapter from `UserService` to the use cases.
#[derive(Debug, Clone)]
pub struct UserApi {
    licensing: Licensing,
    deadlines: Deadlines,
    /// Where the real client address is, behind a proxy.
    client_address_policy: ClientAddressPolicy,
}

impl UserApi {
    /// Creates the adapter.
    pub fn new(
        licensing: Licensing,
        deadlines: Deadlines,
        client_address_policy: ClientAddressPolicy,
    ) -> Self {
        Self {
            licensing,
            deadlines,
            client_address_policy,
        }
    }

    /// The caller's address: see [`client_address`].
    fn client_address<T>(&self, request: &Request<T>) -> ClientAddress {
        client_address::of_request(request, &self.client_address_policy)
    }

    /// Wraps the adapter in its generated tonic service.
    pub fn into_server(self) -> pb::user_service_server::UserServiceServer<Self> {
        pb::user_service_server::UserServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let client_address = self.client_address(&request);
        let pb::LoginRequest { email, password } = request.into_inner();
        let mut errors = ValidationErrors::new();
        let email = errors.check(Email::parse("email", &email));
        let password = errors.check(Password::parse_for_login("password", password));
        let (Some(email), Some(password)) = (email, password) else {
            return Err(crate::licensing::LicensingError::from(errors).into());
        };
        let session = self
            .licensing
            .login(
                &ctx,
                LoginCommand {
                    email,
                    password,
                    client_address,
                },
            )
            .await?;
        Ok(Response::new(pb::LoginResponse {
            session: Some(session.into()),
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::RefreshSessionResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let refresh_token =
            RefreshToken::parse("refresh_token", request.into_inner().refresh_token)
                .map_err(crate::licensing::LicensingError::from)?;
        let session = self.licensing.refresh_session(&ctx, &refresh_token).await?;
        Ok(Response::new(pb::RefreshSessionResponse {
            session: Some(session.into()),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let token = auth::user_token(&request)?;
        self.licensing.logout(&ctx, &token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let client_address = self.client_address(&request);
        let pb::SignUpRequest {
            email,
            password,
            first_name,
            last_name,
        } = request.into_inner();
        let mut command = SignUpCommand::parse(&email, password, &first_name, &last_name)
            .map_err(crate::licensing::LicensingError::from)?;
        command.client_address = client_address;
        let signed_up = self.licensing.sign_up(&ctx, command).await?;
        Ok(Response::new(pb::SignUpResponse {
            user_id: signed_up.user_id.to_string(),
            session: Some(signed_up.session.into()),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::GetProfileResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let token = auth::user_token(&request)?;
        let profile = self.licensing.profile(&ctx, &token).await?;
        Ok(Response::new(pb::GetProfileResponse {
            profile: Some(profile.into()),
        }))
    }

    async fn list_my_licenses(
        &self,
        request: Request<pb::ListMyLicensesRequest>,
    ) -> Result<Response<pb::ListMyLicensesResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let token = auth::user_token(&request)?;
        let pb::ListMyLicensesRequest {
            page_size,
            page_token: token_in,
            product_id,
        } = request.into_inner();
        let mut errors = ValidationErrors::new();
        let product_id = if product_id.is_empty() {
            None
        } else {
            errors.check(CryptlexId::parse("product_id", &product_id))
        };
        let page = errors.check(page_request(page_size, &token_in, product_id));
        let Some(page) = page else {
            return Err(crate::licensing::LicensingError::from(errors).into());
        };
        errors
            .into_result()
            .map_err(crate::licensing::LicensingError::from)?;
        let result = self.licensing.my_licenses(&ctx, &token, page).await?;
        Ok(Response::new(pb::ListMyLicensesResponse {
            licenses: result.items.into_iter().map(pb::License::from).collect(),
            next_page_token: result.next.as_ref().map(page_token).unwrap_or_default(),
            stale: result.stale,
        }))
    }
}
