//! `licensing.v1.UserService`: the public, user-facing RPCs.
//!
//! Each method authenticates (the bearer token, where the call needs one),
//! converts the request into a command, calls the use case and converts the
//! result; errors become statuses through the one table in `status`.

use tonic::{Request, Response, Status};

use super::auth;
use super::client_address::{self, ClientAddressPolicy};
use super::context::{Deadlines, request_context};
use super::pb::{self, user_service_server::UserService};
use crate::domain::{PageRequest, RefreshToken, RequestContext};
use crate::licensing::pagination::page_token;
use crate::licensing::{Licensing, LicensingError, LoginCommand, SignUpCommand};

/// The adapter from `UserService` to the use cases.
#[derive(Debug, Clone)]
pub struct UserApi {
    licensing: Licensing,
    deadlines: Deadlines,
    /// Where the real client address is, behind proxies.
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

    /// Wraps the adapter in its generated tonic service.
    pub fn into_server(self) -> pb::user_service_server::UserServiceServer<Self> {
        pb::user_service_server::UserServiceServer::new(self)
    }

    /// The call's context: request id, deadline and the caller's address.
    fn context<T>(&self, request: &Request<T>) -> RequestContext {
        let address = client_address::of_request(request, &self.client_address_policy);
        request_context(request, self.deadlines).from_address(address)
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let ctx = self.context(&request);
        let command = LoginCommand::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let session = self.licensing.login(&ctx, command).await?;
        Ok(Response::new(pb::LoginResponse {
            session: Some(session.into()),
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Result<Response<pb::RefreshSessionResponse>, Status> {
        let ctx = self.context(&request);
        let refresh_token =
            RefreshToken::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let session = self.licensing.refresh_session(&ctx, &refresh_token).await?;
        Ok(Response::new(pb::RefreshSessionResponse {
            session: Some(session.into()),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        self.licensing.logout(&ctx, &token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        let ctx = self.context(&request);
        let command =
            SignUpCommand::try_from(request.into_inner()).map_err(LicensingError::from)?;
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
        let ctx = self.context(&request);
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
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let page = PageRequest::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let result = self.licensing.my_licenses(&ctx, &token, page).await?;
        Ok(Response::new(pb::ListMyLicensesResponse {
            licenses: result.items.into_iter().map(pb::License::from).collect(),
            next_page_token: result.next.as_ref().map(page_token).unwrap_or_default(),
            stale: result.stale,
        }))
    }
}
