//! Reading who the caller is from the request: the bearer token of a user
//! call and the verified client certificate of an internal call. (Where a
//! call comes from is `client_address`'s.)

use tonic::Request;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::domain::{ClientIdentity, UserToken};
use crate::licensing::LicensingError;

/// Returns the access token from `authorization: Bearer <token>` metadata.
///
/// Missing or malformed metadata fails here, before any upstream call.
pub(super) fn user_token<T>(request: &Request<T>) -> Result<UserToken, LicensingError> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or(LicensingError::TokenMissing)?
        .to_str()
        .map_err(|_| LicensingError::TokenMissing)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(LicensingError::TokenMissing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(LicensingError::TokenMissing);
    }
    UserToken::parse(token.trim_start()).map_err(|_| LicensingError::TokenMissing)
}

/// Returns the URI and DNS names of the verified client certificate's
/// subject alternative names, each with its kind.
///
/// Empty when the call came without a certificate (which the internal
/// listener's TLS never lets through) or the certificate cannot be read:
/// then nothing matches the allow-list.
pub(super) fn peer_identities<T>(request: &Request<T>) -> Vec<ClientIdentity> {
    let Some(certs) = request.peer_certs() else {
        return Vec::new();
    };
    let Some(leaf) = certs.first() else {
        return Vec::new();
    };
    let Ok((_, certificate)) = X509Certificate::from_der(leaf.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(ClientIdentity::Uri((*uri).to_owned())),
            GeneralName::DNSName(dns) => Some(ClientIdentity::Dns((*dns).to_owned())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(authorization: &str) -> Request<()> {
        let mut request = Request::new(());
        request.metadata_mut().insert(
            "authorization",
            authorization.parse().expect("valid metadata value"),
        );
        request
    }

    #[test]
    fn a_bearer_token_is_accepted_in_any_scheme_case() {
        for header in ["Bearer abc.def", "bearer abc.def", "BEARER   abc.def"] {
            let token = user_token(&request_with(header)).expect(header);
            assert_eq!(token.expose_secret(), "abc.def");
        }
    }

    #[test]
    fn missing_or_malformed_authorization_is_refused() {
        assert!(matches!(
            user_token(&Request::new(())),
            Err(LicensingError::TokenMissing)
        ));
        for header in ["Basic abc", "Bearer", "Bearer a b", "abc.def"] {
            assert!(
                matches!(
                    user_token(&request_with(header)),
                    Err(LicensingError::TokenMissing)
                ),
                "{header}"
            );
        }
    }
}
