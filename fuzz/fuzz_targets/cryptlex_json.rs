//! Cryptlex's JSON: the decoders of the answers the gateway reads (a
//! `/v3/me/licenses` page, a license and a page of licenses as the
//! administrator sees them, the profile, a login's session), each converted
//! to the domain value and on to the gRPC message the caller receives.
//!
//! The first byte picks the decoder; the rest is the body. Properties: no
//! panic; a refusal's detail (which is logged) is printable; the gateway's
//! bookkeeping metadata never reaches the caller; an issued license survives
//! the ledger's JSON round trip (it is replayed from there); every timestamp
//! sent to a caller is a valid `google.protobuf.Timestamp`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use licensing_gateway::cryptlex::CryptlexError;
use licensing_gateway::domain::IssuedLicense;
use licensing_gateway::fuzzing;
use licensing_gateway::grpc::pb;
use licensing_gateway::licensing::CLIENT_METADATA_KEY;
use licensing_gateway_fuzz::{assert_printable, assert_valid_timestamp};

/// Keys the issuance use case keeps to itself: the request id (its default
/// `issuance.request_id_metadata_key`) and the caller.
const HIDDEN: &[&str] = &["licensing_gateway_request_id", CLIENT_METADATA_KEY];

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Some(licenses) = ok_or_check(fuzzing::decode_my_licenses(body)) {
                for license in licenses {
                    let message = pb::License::from(license);
                    check_timestamp("expires_at", message.expires_at.as_ref());
                    check_timestamp("created_at", message.created_at.as_ref());
                }
            }
        }
        1 => {
            if let Some(license) = ok_or_check(fuzzing::decode_license(body, HIDDEN)) {
                check_issued(license);
            }
        }
        2 => {
            if let Some(licenses) = ok_or_check(fuzzing::decode_licenses(body, HIDDEN)) {
                licenses.into_iter().for_each(check_issued);
            }
        }
        3 => {
            if let Some(profile) = ok_or_check(fuzzing::decode_profile(body)) {
                let message = pb::Profile::from(profile);
                check_timestamp("created_at", message.created_at.as_ref());
                check_timestamp("last_login_at", message.last_login_at.as_ref());
            }
        }
        _ => {
            if let Some(session) = ok_or_check(fuzzing::decode_session(body)) {
                let message = pb::Session::from(session);
                check_timestamp("expires_at", message.expires_at.as_ref());
            }
        }
    }
});

/// The decoded value, after checking that a refusal is the one kind the
/// decoders produce and that its (logged) detail is printable.
fn ok_or_check<T>(result: Result<T, CryptlexError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(CryptlexError::Malformed { detail }) => {
            assert_printable("the decode error", &detail);
            None
        }
        Err(other) => panic!("a decoder failed with {other:?}"),
    }
}

fn check_issued(license: IssuedLicense) {
    for key in HIDDEN {
        assert!(
            !license.metadata.contains_key(*key),
            "the hidden key {key} reached the caller"
        );
    }
    let stored = serde_json::to_string(&license).expect("an issued license serializes");
    let replayed: IssuedLicense =
        serde_json::from_str(&stored).expect("the ledger's JSON reads back");
    assert_eq!(replayed, license, "the ledger's JSON round trip changed it");
    let message = pb::IssuedLicense::from(license);
    check_timestamp("expires_at", message.expires_at.as_ref());
    check_timestamp("created_at", message.created_at.as_ref());
}

fn check_timestamp(what: &str, timestamp: Option<&prost_types::Timestamp>) {
    if let Some(timestamp) = timestamp {
        assert_valid_timestamp(what, timestamp.seconds, timestamp.nanos);
    }
}
