//! Reading the caller's credentials from request metadata.

use tonic::Request;

use crate::domain::UserToken;
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
