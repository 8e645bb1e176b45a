//! The `Webhook-Signature` check: base64 of the HMAC-SHA256 of the raw body,
//! keyed with the secret ("token") the webhook was registered with.
//!
//! The comparison is the hmac crate's `verify_slice`, which runs in constant
//! time, so an attacker cannot learn the expected tag byte by byte from
//! response times. Nothing here allocates: the header is decoded into a
//! fixed buffer, and the MAC runs over the body already in memory.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::Sha256;

/// The header Cryptlex signs its deliveries in.
pub(crate) const SIGNATURE_HEADER: &str = "webhook-signature";

/// Bytes of an HMAC-SHA256 tag.
#[cfg(test)]
const TAG_BYTES: usize = 32;
/// The longest header value worth decoding: base64 of a 32-byte tag is 44
/// characters; anything much longer is not a signature.
const MAX_HEADER_CHARS: usize = 64;

/// Why a delivery's signature was refused (every case answers 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadSignature {
    Missing,
    NotBase64,
    Mismatch,
}

/// Checks `header` (the `Webhook-Signature` value, if any) against `body`
/// signed with `secret`.
pub(crate) fn verify(
    secret: &SecretString,
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), BadSignature> {
    let header = header.ok_or(BadSignature::Missing)?.trim_ascii();
    if header.is_empty() {
        return Err(BadSignature::Missing);
    }
    if header.len() > MAX_HEADER_CHARS {
        return Err(BadSignature::NotBase64);
    }
    // Room for any value up to the length bound; a tag of the wrong length
    // fails the comparison below like any other wrong tag.
    let mut tag = [0_u8; MAX_HEADER_CHARS];
    let decoded = base64::engine::general_purpose::STANDARD
        .decode_slice(header, &mut tag)
        .map_err(|_| BadSignature::NotBase64)?;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&tag[..decoded])
        .map_err(|_| BadSignature::Mismatch)
}

/// Signs `body` as Cryptlex does (for tests and tools).
#[cfg(test)]
pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let tag: [u8; TAG_BYTES] = mac.finalize().into_bytes().into();
    base64::engine::general_purpose::STANDARD.encode(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2 (key "Jefe"), as base64.
    const RFC4231_CASE_2: &str = "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=";

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    #[test]
    fn the_rfc_4231_vector_verifies_and_signing_reproduces_it() {
        let body = b"what do ya want for nothing?";
        assert_eq!(sign("Jefe", body), RFC4231_CASE_2);
        assert_eq!(
            verify(&secret("Jefe"), body, Some(RFC4231_CASE_2.as_bytes())),
            Ok(())
        );
        // Surrounding whitespace is not part of the value.
        let padded = format!(" {RFC4231_CASE_2}\t");
        assert_eq!(
            verify(&secret("Jefe"), body, Some(padded.as_bytes())),
            Ok(())
        );
    }

    #[test]
    fn another_body_secret_or_tag_is_a_mismatch() {
        let body = b"what do ya want for nothing?";
        let header = Some(RFC4231_CASE_2.as_bytes());
        assert_eq!(
            verify(&secret("Jefe"), b"what do ya want for nothing!", header),
            Err(BadSignature::Mismatch)
        );
        assert_eq!(
            verify(&secret("jefe"), body, header),
            Err(BadSignature::Mismatch)
        );
        // A truncated tag (16 bytes, valid base64) is refused, not compared
        // as a prefix.
        let short = base64::engine::general_purpose::STANDARD.encode([0x5b_u8; 16]);
        assert_eq!(
            verify(&secret("Jefe"), body, Some(short.as_bytes())),
            Err(BadSignature::Mismatch)
        );
        // Hex of the right tag is not base64 of it.
        let hex = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_ne!(verify(&secret("Jefe"), body, Some(hex.as_bytes())), Ok(()));
    }

    #[test]
    fn a_missing_empty_overlong_or_garbled_header_is_refused() {
        let key = secret("Jefe");
        assert_eq!(verify(&key, b"x", None), Err(BadSignature::Missing));
        assert_eq!(verify(&key, b"x", Some(b"  ")), Err(BadSignature::Missing));
        assert_eq!(
            verify(&key, b"x", Some(&[b'A'; 65])),
            Err(BadSignature::NotBase64)
        );
        assert_eq!(
            verify(&key, b"x", Some(b"not base64!")),
            Err(BadSignature::NotBase64)
        );
    }
}
