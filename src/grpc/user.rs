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
use crate::domain::{
    ActivationsRequest, CryptlexId, PageRequest, RefreshToken, ReleasesRequest, RequestContext,
};
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

    // === account: profile, password, password reset, two-factor ===
    //
    // Paths are written out in full here so this group's imports cannot
    // collide with the others'.

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let update = crate::domain::ProfileUpdate::try_from(request.into_inner())
            .map_err(LicensingError::from)?;
        let profile = self.licensing.update_profile(&ctx, &token, update).await?;
        Ok(Response::new(pb::UpdateProfileResponse {
            profile: Some(profile.into()),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let command = crate::licensing::ChangePasswordCommand::try_from(request.into_inner())
            .map_err(LicensingError::from)?;
        self.licensing
            .change_password(&ctx, &token, command)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let ctx = self.context(&request);
        let email =
            crate::domain::Email::try_from(request.into_inner()).map_err(LicensingError::from)?;
        self.licensing.request_password_reset(&ctx, &email).await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let ctx = self.context(&request);
        let command = crate::licensing::ResetPasswordCommand::try_from(request.into_inner())
            .map_err(LicensingError::from)?;
        self.licensing.reset_password(&ctx, command).await?;
        Ok(Response::new(pb::ResetPasswordResponse {}))
    }

    async fn start_two_factor_enrollment(
        &self,
        request: Request<pb::StartTwoFactorEnrollmentRequest>,
    ) -> Result<Response<pb::StartTwoFactorEnrollmentResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let enrollment = self
            .licensing
            .start_two_factor_enrollment(&ctx, &token)
            .await?;
        Ok(Response::new(enrollment.into()))
    }

    async fn enable_two_factor(
        &self,
        request: Request<pb::EnableTwoFactorRequest>,
    ) -> Result<Response<pb::EnableTwoFactorResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let code = super::account_convert::current_code(request.into_inner().code)
            .map_err(LicensingError::from)?;
        let profile = self.licensing.enable_two_factor(&ctx, &token, code).await?;
        Ok(Response::new(pb::EnableTwoFactorResponse {
            profile: Some(profile.into()),
        }))
    }

    async fn create_recovery_codes(
        &self,
        request: Request<pb::CreateRecoveryCodesRequest>,
    ) -> Result<Response<pb::CreateRecoveryCodesResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let code = super::account_convert::current_code(request.into_inner().code)
            .map_err(LicensingError::from)?;
        let codes = self
            .licensing
            .create_recovery_codes(&ctx, &token, code)
            .await?;
        Ok(Response::new(codes.into()))
    }

    async fn disable_two_factor(
        &self,
        request: Request<pb::DisableTwoFactorRequest>,
    ) -> Result<Response<pb::DisableTwoFactorResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let code = super::account_convert::current_code(request.into_inner().code)
            .map_err(LicensingError::from)?;
        let profile = self
            .licensing
            .disable_two_factor(&ctx, &token, code)
            .await?;
        Ok(Response::new(pb::DisableTwoFactorResponse {
            profile: Some(profile.into()),
        }))
    }

    // === portal: one license, machines, releases ===

    async fn get_license(
        &self,
        request: Request<pb::GetLicenseRequest>,
    ) -> Result<Response<pb::GetLicenseResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let license_id =
            CryptlexId::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let detail = self.licensing.license(&ctx, &token, &license_id).await?;
        Ok(Response::new(detail.into()))
    }

    async fn list_activations(
        &self,
        request: Request<pb::ListActivationsRequest>,
    ) -> Result<Response<pb::ListActivationsResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let page =
            ActivationsRequest::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let result = self.licensing.activations(&ctx, &token, page).await?;
        Ok(Response::new(result.into()))
    }

    async fn deactivate_machine(
        &self,
        request: Request<pb::DeactivateMachineRequest>,
    ) -> Result<Response<pb::DeactivateMachineResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let activation_id =
            CryptlexId::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let license_id = self
            .licensing
            .deactivate_machine(&ctx, &token, &activation_id)
            .await?;
        Ok(Response::new(pb::DeactivateMachineResponse {
            license_id: license_id.to_string(),
        }))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let ctx = self.context(&request);
        let token = auth::user_token(&request)?;
        let page = ReleasesRequest::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let result = self.licensing.releases(&ctx, &token, page).await?;
        Ok(Response::new(result.into()))
    }
}
