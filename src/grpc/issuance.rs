//! `licensing.v1.IssuanceService`: license issuance for allow-listed internal
//! callers on the mutual-TLS listener.
//!
//! The allow-list is checked first, from the verified certificate's names,
//! before the request is even parsed; the use case then applies the
//! per-product policy and the ledger.

use tonic::{Request, Response, Status};

use super::auth;
use super::context::{Deadlines, request_context};
use super::pb::{self, issuance_service_server::IssuanceService};
use crate::domain::{ClientIdentity, Operation};
use crate::licensing::{IssueCommand, Licensing, LicensingError};

/// The adapter from `IssuanceService` to the use cases.
#[derive(Debug, Clone)]
pub struct IssuanceApi {
    licensing: Licensing,
    deadlines: Deadlines,
}

impl IssuanceApi {
    /// Creates the adapter.
    pub fn new(licensing: Licensing, deadlines: Deadlines) -> Self {
        Self {
            licensing,
            deadlines,
        }
    }

    /// Checks that the caller's certificate names are on the allow-list
    /// (for any operation: each RPC checks its own); the listener's stack
    /// does it before reading anything of a call.
    pub(super) fn admits(&self, identities: &[ClientIdentity]) -> Result<(), LicensingError> {
        self.licensing.authorize_client(identities).map(|_| ())
    }

    /// Wraps the adapter in its generated tonic service.
    pub fn into_server(self) -> pb::issuance_service_server::IssuanceServiceServer<Self> {
        pb::issuance_service_server::IssuanceServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl IssuanceService for IssuanceApi {
    async fn issue_license(
        &self,
        request: Request<pb::IssueLicenseRequest>,
    ) -> Result<Response<pb::IssueLicenseResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let caller = self
            .licensing
            .authorize_call(&auth::peer_identities(&request), Operation::IssueLicense)?;
        let command = IssueCommand::try_from(request.into_inner()).map_err(LicensingError::from)?;
        let issued = self.licensing.issue_license(&ctx, &caller, command).await?;
        Ok(Response::new(pb::IssueLicenseResponse {
            license: Some(issued.license.into()),
            replayed: issued.replayed,
        }))
    }
}
