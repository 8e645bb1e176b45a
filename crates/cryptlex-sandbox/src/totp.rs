//! Time-based one-time passwords (TOTP, RFC 6238) as an authenticator app computes them.
//!
//! The sandbox's two-factor sign-in uses the parameters every authenticator app defaults to:
//! HMAC-SHA-1, a 30-second step counted from the Unix epoch, 6 digits, and a base32 secret
//! (RFC 4648, without padding) of 20 random bytes, handed out in an `otpauth://` URL (the
//! "Key Uri Format" of Google Authenticator, which every app reads from a QR code).
//!
//! [`code`] is public so tests can be the authenticator: take `secret` from the URL that
//! `POST /v3/me/2fa-secret` returned and compute the code for now. The verifier accepts the
//! codes of the previous, current and next step (RFC 6238 section 5.2 recommends at most one
//! step of clock drift either way), and does not refuse a code used before (the RFC does not
//! require it; see the table in [`crate::portal`]).
//!
//! HMAC-SHA-1 comes from `ring`, which the sandbox already uses for its tokens; SHA-1 is
//! still what RFC 6238 and the apps use, and HMAC-SHA-1 is not weakened by SHA-1's collisions.

use data_encoding::BASE32_NOPAD;
use rand::RngCore as _;
use ring::hmac;

/// The length of one time step, in seconds (RFC 6238's default `X`).
pub const STEP_SECONDS: u64 = 30;

/// The number of digits of a code.
pub const DIGITS: u32 = 6;

/// The issuer the sandbox names in its `otpauth://` URLs (shown by authenticator apps).
pub const ISSUER: &str = "Cryptlex Sandbox";

/// The size of a generated secret: 160 bits, the HMAC-SHA-1 output size RFC 4226 recommends.
const SECRET_BYTES: usize = 20;

/// Returns the code of `secret_base32` for the step holding `unix_secs`, or `None` if the
/// secret is not base32 (RFC 4648 alphabet; case, spaces and `=` padding are ignored, as
/// apps ignore them) or is empty.
pub fn code(secret_base32: &str, unix_secs: u64) -> Option<String> {
    let key = decode_secret(secret_base32)?;
    Some(format_code(
        hotp(&key, unix_secs / STEP_SECONDS, DIGITS),
        DIGITS,
    ))
}

/// Returns whether `candidate` is the code of the step holding `unix_secs` or of the step
/// just before or after it. Anything but exactly [`DIGITS`] ASCII digits is refused.
pub fn verify(secret_base32: &str, candidate: &str, unix_secs: u64) -> bool {
    let Some(key) = decode_secret(secret_base32) else {
        return false;
    };
    if candidate.len() != DIGITS as usize || !candidate.bytes().all(|byte| byte.is_ascii_digit()) {
        return false;
    }
    let step = unix_secs / STEP_SECONDS;
    // Every window is computed, so the time taken does not say which step matched.
    [step.checked_sub(1), Some(step), step.checked_add(1)]
        .into_iter()
        .flatten()
        .map(|counter| format_code(hotp(&key, counter, DIGITS), DIGITS))
        .fold(false, |matched, expected| {
            matched | constant_time_eq(expected.as_bytes(), candidate.as_bytes())
        })
}

/// Makes a new random secret, base32 without padding (32 characters).
pub(crate) fn new_secret() -> String {
    let mut bytes = [0_u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    BASE32_NOPAD.encode(&bytes)
}

/// The `otpauth://totp/` URL an authenticator app reads: label `issuer:account`, and every
/// parameter spelled out even where it is the default, so no app guesses.
pub(crate) fn otpauth_url(account: &str, secret_base32: &str) -> String {
    let issuer = percent_encode(ISSUER);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret_base32}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        account = percent_encode(account),
    )
}

/// HOTP (RFC 4226 section 5.3): HMAC-SHA-1 of the big-endian counter, dynamically truncated.
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mac = hmac::sign(&key, &counter.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    binary % 10_u32.pow(digits)
}

fn format_code(value: u32, digits: u32) -> String {
    format!("{value:0width$}", width = digits as usize)
}

fn decode_secret(text: &str) -> Option<Vec<u8>> {
    let normalised: String = text
        .chars()
        .filter(|character| !character.is_whitespace() && *character != '=')
        .map(|character| character.to_ascii_uppercase())
        .collect();
    BASE32_NOPAD
        .decode(normalised.as_bytes())
        .ok()
        .filter(|key| !key.is_empty())
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Percent-encodes everything but RFC 3986's unreserved characters (so a space is `%20`,
/// which authenticator apps expect in a label, not `+`).
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 seed, the ASCII bytes "12345678901234567890", in base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    /// RFC 6238 appendix B, the SHA-1 rows: (time, the 8-digit TOTP).
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn the_rfc_6238_sha1_vectors_hold_with_eight_digits() {
        let key = decode_secret(RFC_SECRET).unwrap();
        assert_eq!(key, b"12345678901234567890");
        for (time, expected) in RFC_VECTORS {
            let value = hotp(&key, time / STEP_SECONDS, 8);
            assert_eq!(format_code(value, 8), expected, "T = {time}");
        }
    }

    #[test]
    fn six_digit_codes_are_the_last_six_digits_of_the_rfc_vectors() {
        for (time, expected) in RFC_VECTORS {
            assert_eq!(
                code(RFC_SECRET, time).as_deref(),
                Some(&expected[2..]),
                "T = {time}"
            );
        }
    }

    #[test]
    fn the_verifier_accepts_one_step_either_way_and_nothing_further() {
        let now = 1_234_567_890;
        let current = code(RFC_SECRET, now).unwrap();
        let previous = code(RFC_SECRET, now - STEP_SECONDS).unwrap();
        let next = code(RFC_SECRET, now + STEP_SECONDS).unwrap();
        let too_old = code(RFC_SECRET, now - 2 * STEP_SECONDS).unwrap();
        let too_new = code(RFC_SECRET, now + 2 * STEP_SECONDS).unwrap();

        for accepted in [&current, &previous, &next] {
            assert!(verify(RFC_SECRET, accepted, now), "{accepted}");
        }
        for refused in [&too_old, &too_new] {
            assert!(!verify(RFC_SECRET, refused, now), "{refused}");
        }
        // The same code again within its window: accepted (no replay protection).
        assert!(verify(RFC_SECRET, &current, now + 1));
    }

    #[test]
    fn malformed_codes_and_secrets_are_refused_without_panicking() {
        let now = 59;
        for candidate in ["", "28708", "2870822", "28708a", " 287082", "２８７０８２"] {
            assert!(!verify(RFC_SECRET, candidate, now), "{candidate:?}");
        }
        for secret in [
            "",
            "====",
            "not base32!",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
        ] {
            assert_eq!(code(secret, now), None, "{secret:?}");
            assert!(!verify(secret, "287082", now), "{secret:?}");
        }
        // The first step has no step before it.
        assert!(verify(RFC_SECRET, &code(RFC_SECRET, 0).unwrap(), 0));
    }

    #[test]
    fn secrets_are_read_as_apps_read_them_whatever_the_case_spacing_or_padding() {
        let spaced = "gezd gnbv gy3t qojq gezd gnbv gy3t qojq";
        let padded = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====";
        assert_eq!(code(spaced, 59), code(RFC_SECRET, 59));
        assert_eq!(code(padded, 59), code(RFC_SECRET, 59));
    }

    #[test]
    fn new_secrets_are_twenty_random_bytes_in_base32() {
        let first = new_secret();
        let second = new_secret();
        assert_eq!(first.len(), 32);
        assert_ne!(first, second);
        assert_eq!(decode_secret(&first).unwrap().len(), SECRET_BYTES);
        assert!(code(&first, 0).is_some());
    }

    #[test]
    fn the_otpauth_url_names_issuer_account_and_every_parameter() {
        let url = otpauth_url("demo+tag@example.com", RFC_SECRET);
        assert_eq!(
            url,
            "otpauth://totp/Cryptlex%20Sandbox:demo%2Btag%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Cryptlex%20Sandbox&algorithm=SHA1&digits=6&period=30"
        );
        let parsed = url::Url::parse(&url).unwrap();
        let secret = parsed
            .query_pairs()
            .find(|(name, _)| name == "secret")
            .map(|(_, value)| value.into_owned());
        assert_eq!(secret.as_deref(), Some(RFC_SECRET));
    }
}
