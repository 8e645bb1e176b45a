//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off in
//! every deployed build).
//!
//! Each is a thin wrapper over the code that faces the outside: Cryptlex's
//! JSON (private to [`crate::cryptlex`], so re-exported from there), and the
//! request messages a caller sends, decoded from raw protobuf bytes as tonic
//! would and parsed into commands, and Connect's JSON requests. Page tokens and metadata maps are public
//! already ([`crate::licensing::pagination`], [`crate::domain::MetadataMap`]).
//! The properties the targets check live with the targets, not here.

use prost::Message;

use crate::domain::{PageRequest, RefreshToken, ValidationErrors};
use crate::grpc::pb;
use crate::licensing::{IssueCommand, LoginCommand, SignUpCommand};

pub use crate::cryptlex::fuzzing::{
    decode_license, decode_licenses, decode_my_licenses, decode_profile, decode_session,
};

/// What a request's bytes became: not a message of that type at all (tonic
/// answers `INTERNAL` before any handler runs), or the parsed command or the
/// violations the caller is told about.
pub type Parsed<T> = Option<Result<T, ValidationErrors>>;

/// Decodes `bytes` as a `licensing.v1.LoginRequest` and parses it.
pub fn login_request(bytes: &[u8]) -> Parsed<LoginCommand> {
    parse::<pb::LoginRequest, _>(bytes)
}

/// Decodes `bytes` as a `licensing.v1.SignUpRequest` and parses it.
pub fn sign_up_request(bytes: &[u8]) -> Parsed<SignUpCommand> {
    parse::<pb::SignUpRequest, _>(bytes)
}

/// Decodes `bytes` as a `licensing.v1.RefreshSessionRequest` and parses it.
pub fn refresh_session_request(bytes: &[u8]) -> Parsed<RefreshToken> {
    parse::<pb::RefreshSessionRequest, _>(bytes)
}

/// Decodes `bytes` as a `licensing.v1.ListMyLicensesRequest` and parses it.
pub fn list_my_licenses_request(bytes: &[u8]) -> Parsed<PageRequest> {
    parse::<pb::ListMyLicensesRequest, _>(bytes)
}

/// Decodes `bytes` as a `licensing.v1.IssueLicenseRequest` and parses it.
pub fn issue_license_request(bytes: &[u8]) -> Parsed<IssueCommand> {
    parse::<pb::IssueLicenseRequest, _>(bytes)
}

/// Reads `json` as a Connect JSON request of the `selector`-th public
/// method (the protobuf JSON mapping, as the Connect translation does),
/// checking that an accepted request survives a JSON round trip unchanged.
/// `Err` holds the refusal's description, which the caller is shown.
pub fn connect_json_request(selector: u8, json: &[u8]) -> Result<(), String> {
    crate::grpc::fuzz_json_round_trip(selector, json)
}

fn parse<M, T>(bytes: &[u8]) -> Parsed<T>
where
    M: Message + Default,
    T: TryFrom<M, Error = ValidationErrors>,
{
    let message = M::decode(bytes).ok()?;
    Some(T::try_from(message))
}
