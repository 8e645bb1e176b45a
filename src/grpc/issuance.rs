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
        let license = pb::IssuedLicense::from(issued.license);
        Ok(Response::new(pb::IssueLicenseResponse {
            licenses: vec![license.clone()],
            license: Some(license),
            replayed: issued.replayed,
        }))
    }

    // === the payment lifecycle (issue 16) ===

    async fn renew_license(
        &self,
        _request: Request<pb::RenewLicenseRequest>,
    ) -> Result<Response<pb::RenewLicenseResponse>, Status> {
        Err(Status::unimplemented("RenewLicense is not implemented yet"))
    }

    async fn suspend_license(
        &self,
        _request: Request<pb::SuspendLicenseRequest>,
    ) -> Result<Response<pb::SuspendLicenseResponse>, Status> {
        Err(Status::unimplemented("SuspendLicense is not implemented yet"))
    }

    async fn resume_license(
        &self,
        _request: Request<pb::ResumeLicenseRequest>,
    ) -> Result<Response<pb::ResumeLicenseResponse>, Status> {
        Err(Status::unimplemented("ResumeLicense is not implemented yet"))
    }

    async fn revoke_license(
        &self,
        _request: Request<pb::RevokeLicenseRequest>,
    ) -> Result<Response<pb::RevokeLicenseResponse>, Status> {
        Err(Status::unimplemented("RevokeLicense is not implemented yet"))
    }

    async fn set_seats(
        &self,
        _request: Request<pb::SetSeatsRequest>,
    ) -> Result<Response<pb::SetSeatsResponse>, Status> {
        Err(Status::unimplemented("SetSeats is not implemented yet"))
    }
}
