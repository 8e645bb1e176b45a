//! `licensing.v1.IssuanceService`: license issuance for allow-listed internal
//! callers on the mutual-TLS listener.

use tonic::{Request, Response, Status};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::context::{Deadlines, request_context};
use super::pb::{self, issuance_service_server::IssuanceService, issue_license_request::User};
use crate::config::AllowedClient;
use crate::domain::{CryptlexId, Email, MetadataMap, RequestId, ValidationErrors};
use crate::licensing::{InternalCaller, IssueCommand, Licensing, LicensingError, UserRef};

/// The adapter from `IssuanceService` to the use cases.
#[derive(Debug, Clone)]
pub struct IssuanceApi {
    licensing: Licensing,
    deadlines: Deadlines,
    allowed_clients: Vec<AllowedClient>,
    reserved_metadata_keys: Vec<String>,
}

impl IssuanceApi {
    /// Creates the adapter for the given allow-list.
    pub fn new(
        licensing: Licensing,
        deadlines: Deadlines,
        allowed_clients: Vec<AllowedClient>,
        reserved_metadata_keys: Vec<String>,
    ) -> Self {
        Self {
            licensing,
            deadlines,
            allowed_clients,
            reserved_metadata_keys,
        }
    }

    /// Wraps the adapter in its generated tonic service.
    pub fn into_server(self) -> pb::issuance_service_server::IssuanceServiceServer<Self> {
        pb::issuance_service_server::IssuanceServiceServer::new(self)
    }

    /// Identifies the caller from its verified client certificate and checks
    /// the allow-list.
    fn caller<T>(&self, request: &Request<T>) -> Result<InternalCaller, LicensingError> {
        let denied = LicensingError::PermissionDenied {
            reason: "CLIENT_NOT_ALLOWED",
        };
        // The TLS layer has verified the chain; no certificate means this
        // service was reached without mutual TLS, which must not happen.
        let Some(certs) = request.peer_certs() else {
            return Err(denied);
        };
        let Some(leaf) = certs.first() else {
            return Err(denied);
        };
        let identities = certificate_identities(leaf.as_ref());
        let allowed = self
            .allowed_clients
            .iter()
            .find(|client| identities.contains(&client.identity));
        match allowed {
            Some(client) => Ok(InternalCaller {
                identity: client.identity.clone(),
                allowed_products: client.products.clone(),
            }),
            None => {
                tracing::warn!(identities = ?identities, "client certificate not on the allow-list");
                Err(denied)
            }
        }
    }

    fn parse(&self, request: pb::IssueLicenseRequest) -> Result<IssueCommand, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let request_id = errors.check(RequestId::parse("request_id", &request.request_id));
        let user = match request.user {
            Some(User::UserId(id)) => {
                errors.check(CryptlexId::parse("user_id", &id).map(UserRef::Id))
            }
            Some(User::UserEmail(email)) => {
                errors.check(Email::parse("user_email", &email).map(UserRef::Email))
            }
            None => {
                errors.push(crate::domain::FieldViolation::new(
                    "user",
                    "one of user_id or user_email is required",
                ));
                None
            }
        };
        let optional_id = |errors: &mut ValidationErrors, field: &str, value: &str| {
            if value.is_empty() {
                None
            } else {
                errors.check(CryptlexId::parse(field, value))
            }
        };
        let product_id = optional_id(&mut errors, "product_id", &request.product_id);
        let license_template_id = optional_id(
            &mut errors,
            "license_template_id",
            &request.license_template_id,
        );
        let reserved: Vec<&str> = self
            .reserved_metadata_keys
            .iter()
            .map(String::as_str)
            .collect();
        let metadata = match MetadataMap::parse("metadata", request.metadata, &reserved) {
            Ok(metadata) => Some(metadata),
            Err(metadata_errors) => {
                for violation in metadata_errors.violations() {
                    errors.push(violation.clone());
                }
                None
            }
        };
        errors.into_result()?;
        match (request_id, user, metadata) {
            (Some(request_id), Some(user), Some(metadata)) => Ok(IssueCommand {
                request_id,
                user,
                product_id,
                license_template_id,
                metadata,
            }),
            _ => unreachable!("every field parsed when no violation was recorded"),
        }
    }
}

#[tonic::async_trait]
impl IssuanceService for IssuanceApi {
    async fn issue_license(
        &self,
        request: Request<pb::IssueLicenseRequest>,
    ) -> Result<Response<pb::IssueLicenseResponse>, Status> {
        let ctx = request_context(&request, self.deadlines);
        let caller = self.caller(&request)?;
        let command = self
            .parse(request.into_inner())
            .map_err(LicensingError::from)?;
        let issued = self.licensing.issue_license(&ctx, &caller, command).await?;
        Ok(Response::new(pb::IssueLicenseResponse {
            license: Some(issued.license.into()),
            replayed: issued.replayed,
        }))
    }
}

/// The URI and DNS names in a certificate's subject alternative names.
fn certificate_identities(der: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}
