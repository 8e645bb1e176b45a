//! Connect's JSON requests: the public listener's translation of a JSON body
//! into the protobuf of the method (the protobuf JSON mapping, driven by the
//! contract's descriptors), for any method and any bytes.
//!
//! Properties: no panic; an accepted request reads back from the gateway's
//! own JSON as the same message; a refusal's description is printable,
//! bounded, and never quotes the request (it could hold a password): it is
//! one of the gateway's fixed sentences, whose only variable parts are the
//! message's name, a position, and an unknown field's name (an identifier).
//!
//! The check is a grammar, not a search for the request's bytes in the
//! description: libFuzzer feeds the strings a target compares against back
//! into its inputs, so a request soon contains the fixed sentences
//! themselves, and a substring search then reports a quote where there is
//! none.

#![no_main]

use libfuzzer_sys::fuzz_target;
use licensing_gateway::fuzzing::connect_json_request;
use licensing_gateway_fuzz::assert_printable;

fuzz_target!(|input: (u8, &[u8])| {
    let (selector, json) = input;
    if let Err(description) = connect_json_request(selector, json) {
        assert_printable("a refusal", &description);
        assert!(description.len() <= 300, "a long refusal: {description}");
        assert!(
            is_fixed_refusal(&description),
            "a refusal outside the fixed sentences (it may quote the request): {description}"
        );
    }
});

/// `the request body <what> (line <n>, column <n>)`, where `<what>` is one
/// of the syntax sentences or `does not fit licensing.v1.<Message>: it
/// <problem>`.
fn is_fixed_refusal(description: &str) -> bool {
    let Some(rest) = description.strip_prefix("the request body ") else {
        return false;
    };
    let Some((what, position)) = rest.rsplit_once(" (line ") else {
        return false;
    };
    let Some((line, column)) = position
        .strip_suffix(')')
        .and_then(|position| position.split_once(", column "))
    else {
        return false;
    };
    if !is_number(line) || !is_number(column) {
        return false;
    }
    if matches!(
        what,
        "is not valid JSON" | "ends before its JSON does" | "could not be read"
    ) {
        return true;
    }
    let Some((message, problem)) = what
        .strip_prefix("does not fit licensing.v1.")
        .and_then(|what| what.split_once(": it "))
    else {
        return false;
    };
    is_identifier(message)
        && (problem == "has a value of the wrong type or out of range"
            || problem
                .strip_prefix("has no field `")
                .and_then(|field| field.strip_suffix('`'))
                .is_some_and(|field| field.len() <= 64 && is_identifier(field)))
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_identifier(text: &str) -> bool {
    text.bytes().next().is_some_and(|b| !b.is_ascii_digit())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
