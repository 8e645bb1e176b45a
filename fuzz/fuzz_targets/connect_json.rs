//! Connect's JSON requests: the public listener's translation of a JSON body
//! into the protobuf of the method (the protobuf JSON mapping, driven by the
//! contract's descriptors), for any method and any bytes.
//!
//! Properties: no panic; an accepted request reads back from the gateway's
//! own JSON as the same message; a refusal's description is printable,
//! bounded, and never quotes the request (it could hold a password): it
//! holds no run of 12 or more of the request's own bytes beyond the names
//! the contract defines.

#![no_main]

use libfuzzer_sys::fuzz_target;
use licensing_gateway::fuzzing::connect_json_request;
use licensing_gateway_fuzz::assert_printable;

fuzz_target!(|input: (u8, &[u8])| {
    let (selector, json) = input;
    if let Err(description) = connect_json_request(selector, json) {
        assert_printable("a refusal", &description);
        assert!(description.len() <= 300, "a long refusal: {description}");
        // An unknown field's name may be quoted (an identifier of at most 64
        // characters); nothing else of the request may be.
        let quoted = description
            .split('`')
            .nth(1)
            .filter(|_| description.contains("has no field `"));
        if let Ok(text) = std::str::from_utf8(json) {
            for window in text.as_bytes().windows(12) {
                let Ok(window) = std::str::from_utf8(window) else {
                    continue;
                };
                if quoted.is_some_and(|name| name.contains(window)) {
                    continue;
                }
                assert!(
                    !description.contains(window)
                        || "licensing.v1".contains(window)
                        || window
                            .chars()
                            .all(|c| c.is_ascii_alphabetic() || c == '.' || c == ' '),
                    "the refusal quotes the request: {description}"
                );
            }
        }
    }
});
