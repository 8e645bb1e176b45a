//! Entry points into Cryptlex's JSON for the fuzz targets (feature
//! `fuzzing`): each decodes a body exactly as the endpoint of the same name
//! does and converts it to the domain value it returns. `wire` stays private;
//! only these functions see it.

use super::endpoints::session_from;
use super::transport::decode_body;
use super::{CryptlexError, wire};
use crate::domain::{IssuedLicense, Session, UserLicense, UserProfile};

/// A `GET /v3/me/licenses` page, as [`super::Client::my_licenses`] decodes it.
pub fn decode_my_licenses(body: &[u8]) -> Result<Vec<UserLicense>, CryptlexError> {
    let licenses: Vec<wire::UserLicenseDto> = decode_body(body)?;
    Ok(licenses.into_iter().map(UserLicense::from).collect())
}

/// A `POST /v3/licenses` answer, as [`super::Client::create_license`] decodes
/// it, leaving out `hidden_keys`.
pub fn decode_license(body: &[u8], hidden_keys: &[&str]) -> Result<IssuedLicense, CryptlexError> {
    decode_body::<wire::LicenseDto>(body).map(|dto| dto.into_issued(hidden_keys))
}

/// A `GET /v3/licenses` page, as [`super::Client::find_licenses_by_metadata`]
/// decodes it.
pub fn decode_licenses(
    body: &[u8],
    hidden_keys: &[&str],
) -> Result<Vec<IssuedLicense>, CryptlexError> {
    let licenses: Vec<wire::LicenseDto> = decode_body(body)?;
    Ok(licenses
        .into_iter()
        .map(|dto| dto.into_issued(hidden_keys))
        .collect())
}

/// A `GET /v3/me` answer, as [`super::Client::me`] decodes it.
pub fn decode_profile(body: &[u8]) -> Result<UserProfile, CryptlexError> {
    decode_body::<wire::ProfileDto>(body).map(UserProfile::from)
}

/// A login or refresh answer (`AccessTokenDto`), with the unverified `exp`
/// of the access token read as the sign-in endpoints do.
pub fn decode_session(body: &[u8]) -> Result<Session, CryptlexError> {
    decode_body::<wire::AccessTokenDto>(body).map(session_from)
}
