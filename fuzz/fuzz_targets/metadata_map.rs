//! License metadata from `IssueLicense`: `domain::MetadataMap::parse` with
//! any entries and reserved keys.
//!
//! Properties: no panic; an accepted map holds at most 20 entries, with keys
//! of 1 to 64 characters, values of at most 1,024, neither with control
//! characters, and no reserved key in any case; parsing an accepted map again
//! gives the same map; a refusal's fields and descriptions are printable and
//! bounded (a field quotes at most 64 characters of a caller's key).

#![no_main]

use libfuzzer_sys::fuzz_target;
use licensing_gateway::domain::MetadataMap;
use licensing_gateway_fuzz::{assert_printable, assert_violations_are_printable};

fuzz_target!(|input: (Vec<(String, String)>, Vec<String>)| {
    let (entries, reserved) = input;
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).take(4).collect();
    match MetadataMap::parse("metadata", entries, &reserved) {
        Ok(map) => {
            let entries = map.entries();
            assert!(entries.len() <= MetadataMap::MAX_ENTRIES);
            for (key, value) in entries {
                assert!((1..=MetadataMap::MAX_KEY_LEN).contains(&key.chars().count()));
                assert!(value.chars().count() <= MetadataMap::MAX_VALUE_LEN);
                assert_printable("a key", key);
                assert_printable("a value", value);
                assert!(
                    !reserved
                        .iter()
                        .any(|reserved_key| reserved_key.eq_ignore_ascii_case(key)),
                    "the reserved key {key:?} was accepted"
                );
            }
            let again = MetadataMap::parse("metadata", entries.clone(), &reserved)
                .expect("an accepted map is accepted again");
            assert_eq!(again, map);
        }
        Err(errors) => {
            assert_violations_are_printable(&errors);
            for violation in errors.violations() {
                let field = violation.field.as_str();
                let quoted = field
                    .strip_prefix("metadata[")
                    .and_then(|rest| rest.strip_suffix(']'));
                match quoted {
                    Some(key) => assert!(key.chars().count() <= MetadataMap::MAX_KEY_LEN),
                    None => assert_eq!(field, "metadata"),
                }
            }
        }
    }
});
