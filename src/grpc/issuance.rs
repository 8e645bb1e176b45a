//! `licensing.v1.IssuanceService`: license issuance for allow-listed internal
//! callers on the mutual-TLS listener.
//!
//! The allow-list is checked first, from the verified certificate's names,
//! before the request is even parsed; the use case then applies the
//! per-product policy and the ledger. `IssueLicense` and the five lifecycle
//! RPCs (renew, suspend, resume, revoke, seats) are each four steps: the
//! caller, the command, the use case, the response.

use tonic::{Request, Response, Status};

use super::auth;
use super::context::{Deadlines, request_context};
use super::pb::{self, issuance_service_server::IssuanceService};
use crate::domain::{ClientIdentity, Operation, ValidationErrors};
use crate::licensing::{
    IssueCommand, Licensing, LicensingError, LifecycleCommand, LifecycleOutcome,
};

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
        let licenses: Vec<pb::IssuedLicense> = issued
            .licenses
            .into_iter()
            .map(pb::IssuedLicense::from)
            .collect();
        Ok(Response::new(pb::IssueLicenseResponse {
            license: licenses.first().cloned(),
            licenses,
            replayed: issued.replayed,
        }))
    }

    // === the payment lifecycle ===

    async fn renew_license(
        &self,
        request: Request<pb::RenewLicenseRequest>,
    ) -> Result<Response<pb::RenewLicenseResponse>, Status> {
        let outcome = self.lifecycle(request, Operation::RenewLicense).await?;
        Ok(Response::new(pb::RenewLicenseResponse {
            replayed: outcome.replayed,
            licenses: updates(outcome),
        }))
    }

    async fn suspend_license(
        &self,
        request: Request<pb::SuspendLicenseRequest>,
    ) -> Result<Response<pb::SuspendLicenseResponse>, Status> {
        let outcome = self.lifecycle(request, Operation::SuspendLicense).await?;
        Ok(Response::new(pb::SuspendLicenseResponse {
            replayed: outcome.replayed,
            superseded: outcome.superseded(),
            licenses: updates(outcome),
        }))
    }

    async fn resume_license(
        &self,
        request: Request<pb::ResumeLicenseRequest>,
    ) -> Result<Response<pb::ResumeLicenseResponse>, Status> {
        let outcome = self.lifecycle(request, Operation::ResumeLicense).await?;
        Ok(Response::new(pb::ResumeLicenseResponse {
            replayed: outcome.replayed,
            superseded: outcome.superseded(),
            licenses: updates(outcome),
        }))
    }

    async fn revoke_license(
        &self,
        request: Request<pb::RevokeLicenseRequest>,
    ) -> Result<Response<pb::RevokeLicenseResponse>, Status> {
        let outcome = self.lifecycle(request, Operation::RevokeLicense).await?;
        Ok(Response::new(pb::RevokeLicenseResponse {
            replayed: outcome.replayed,
            licenses: updates(outcome),
        }))
    }

    async fn set_seats(
        &self,
        request: Request<pb::SetSeatsRequest>,
    ) -> Result<Response<pb::SetSeatsResponse>, Status> {
        let outcome = self.lifecycle(request, Operation::SetSeats).await?;
        Ok(Response::new(pb::SetSeatsResponse {
            replayed: outcome.replayed,
            licenses: updates(outcome),
        }))
    }
}

impl IssuanceApi {
    /// The steps every lifecycle RPC shares: the caller and its right to `operation` (before
    /// the request is parsed, so a refusal costs nothing), the command, the use case.
    async fn lifecycle<T>(
        &self,
        request: Request<T>,
        operation: Operation,
    ) -> Result<LifecycleOutcome, LicensingError>
    where
        LifecycleCommand: TryFrom<T, Error = ValidationErrors>,
    {
        let ctx = request_context(&request, self.deadlines);
        let caller = self
            .licensing
            .authorize_call(&auth::peer_identities(&request), operation)?;
        let command = LifecycleCommand::try_from(request.into_inner())?;
        self.licensing.lifecycle(&ctx, &caller, command).await
    }
}

/// The licenses of an answer, as the response lists them.
fn updates(outcome: LifecycleOutcome) -> Vec<pb::LicenseUpdate> {
    outcome
        .licenses
        .into_iter()
        .map(pb::LicenseUpdate::from)
        .collect()
}
