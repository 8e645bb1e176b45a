//! `licensing.v1.AccountService`: account administration for allow-listed
//! internal callers on the mutual-TLS listener (the website's mailer).
//!
//! The caller's certificate must be on the allow-list *and* its entry must
//! name the operation (`operations` in `[[internal.allowed_clients]]`);
//! both are checked before the request is parsed, so a payment service's
//! certificate cannot mint reset tokens.

use tonic::{Request, Response, Status};

use super::auth;
use super::context::{Deadlines, request_context};
use super::pb::{self, account_service_server::AccountService};
use crate::domain::{AccountHolder, Operation};
use crate::licensing::{Licensing, LicensingError};

/// The adapter from `AccountService` to the use cases.
#[derive(Debug, Clone)]
pub struct AccountApi {
    licensing: Licensing,
    deadlines: Deadlines,
}

impl AccountApi {
    /// Creates the adapter.
    pub fn new(licensing: Licensing, deadlines: Deadlines) -> Self {
        Self {
            licensing,
            deadlines,
        }
    }

    /// Wraps the adapter in its generated tonic service.
    pub fn into_server(self) -> pb::account_service_server::AccountServiceServer<Self> {
        pb::account_service_server::AccountServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn create_password_reset_token(
        &self,
        request: Request<pb::CreatePasswordResetTokenRequest>,
    ) -> Result<Response<pb::CreatePasswordResetTokenResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let caller = self.licensing.authorize_call(
            &auth::peer_identities(&request),
            Operation::CreatePasswordResetToken,
        )?;
        let holder = AccountHolder::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let minted = self
            .licensing
            .create_password_reset_token(&ctx, &caller, holder)
            .await?;
        Ok(Response::new(minted.into()))
    }
}
