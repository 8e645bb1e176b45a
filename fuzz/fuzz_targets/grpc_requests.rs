//! Request validation: any bytes decoded with prost as one of the request
//! messages a caller sends (`Login`, `SignUp`, `RefreshSession`,
//! `ListMyLicenses`, `IssueLicense`), then parsed by its
//! `TryFrom<pb::...Request>` in `grpc::convert`.
//!
//! The first byte picks the message; the rest is its encoding. Properties: no
//! panic; a refusal has at least one violation, each naming a field of that
//! message in printable words; an accepted command holds only what its types
//! promise (trimmed emails with one `@`, ids of URL-safe characters, request
//! ids of printable ASCII, metadata within its bounds).

#![no_main]

use libfuzzer_sys::fuzz_target;
use licensing_gateway::domain::{CryptlexId, Email, ValidationErrors};
use licensing_gateway::fuzzing::{self, Parsed};
use licensing_gateway::licensing::LicenseHolder;
use licensing_gateway_fuzz::{assert_printable, assert_violations_are_printable};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            let fields = [
                "email",
                "password",
                "two_factor_code",
                "two_factor_recovery_code",
            ];
            if let Some(command) = accepted(fuzzing::login_request(bytes), &fields) {
                check_email(&command.email);
            }
        }
        1 => {
            let fields = ["email", "password", "first_name", "last_name"];
            if let Some(command) = accepted(fuzzing::sign_up_request(bytes), &fields) {
                check_email(&command.email);
                assert_printable("first_name", command.first_name.as_str());
                assert!(!command.first_name.as_str().is_empty());
                if let Some(last_name) = &command.last_name {
                    assert!(!last_name.as_str().is_empty(), "an empty last name is kept");
                }
            }
        }
        2 => {
            accepted(fuzzing::refresh_session_request(bytes), &["refresh_token"]);
        }
        3 => {
            let fields = ["page_size", "page_token", "product_id"];
            if let Some(page) = accepted(fuzzing::list_my_licenses_request(bytes), &fields) {
                assert!(page.page >= 1 && (1..=100).contains(&page.page_size));
                if let Some(product) = &page.product_id {
                    check_id(product);
                }
            }
        }
        _ => {
            let fields = [
                "request_id",
                "user",
                "user_id",
                "user_email",
                "product_id",
                "license_template_id",
                "metadata",
                "subscription_id",
                "quantity",
            ];
            if let Some(command) = accepted(fuzzing::issue_license_request(bytes), &fields) {
                let request_id = command.request_id.as_str();
                assert!((1..=128).contains(&request_id.len()));
                assert!(request_id.bytes().all(|byte| byte.is_ascii_graphic()));
                match &command.user {
                    LicenseHolder::Id(id) => check_id(id),
                    LicenseHolder::Email(email) => check_email(email),
                }
                command.product_id.iter().for_each(check_id);
                command.license_template_id.iter().for_each(check_id);
                let entries = command.metadata.entries();
                assert!(entries.len() <= 20);
                for (key, value) in entries {
                    assert_printable("a metadata key", key);
                    assert_printable("a metadata value", value);
                    assert!((1..=64).contains(&key.chars().count()));
                    assert!(value.chars().count() <= 1024);
                }
            }
        }
    }
});

/// The accepted command, after checking a refusal: printable violations of
/// the message's own `fields` (a metadata entry is `metadata[<key>]`).
fn accepted<T>(parsed: Parsed<T>, fields: &[&str]) -> Option<T> {
    match parsed? {
        Ok(command) => Some(command),
        Err(errors) => {
            check_refusal(&errors, fields);
            None
        }
    }
}

fn check_refusal(errors: &ValidationErrors, fields: &[&str]) {
    assert_violations_are_printable(errors);
    for violation in errors.violations() {
        let field = violation.field.as_str();
        let known = fields.contains(&field)
            || (fields.contains(&"metadata")
                && field.starts_with("metadata[")
                && field.ends_with(']'));
        assert!(known, "a violation names an unknown field {field:?}");
    }
}

fn check_email(email: &Email) {
    let address = email.as_str();
    assert_eq!(
        address,
        address.trim(),
        "an email kept its surrounding space"
    );
    assert_eq!(address.matches('@').count(), 1, "{address:?}");
    assert_printable("an email", address);
}

fn check_id(id: &CryptlexId) {
    let id = id.as_str();
    assert!((1..=64).contains(&id.len()));
    assert!(
        id.bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    );
}
