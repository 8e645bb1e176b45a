//! Properties shared by the fuzz targets.

use licensing_gateway::domain::ValidationErrors;

/// The range of `google.protobuf.Timestamp` (0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z), outside which clients refuse it.
pub const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

/// Asserts that `text`, which reaches a caller or a log line, has no control
/// characters (a newline would forge a log line; a NUL ends a C string).
pub fn assert_printable(what: &str, text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "{what} has a control character: {text:?}"
    );
}

/// Asserts what every rejection must be: at least one violation, each with
/// a printable field name and description (they become the status message
/// and `BadRequest` details).
pub fn assert_violations_are_printable(errors: &ValidationErrors) {
    assert!(
        !errors.violations().is_empty(),
        "an error without a violation"
    );
    for violation in errors.violations() {
        assert_printable("a violation's field", &violation.field);
        assert_printable("a violation's description", &violation.description);
        assert!(!violation.field.is_empty(), "a violation names no field");
    }
    assert_printable("the status message", &errors.to_string());
}

/// Asserts that a `google.protobuf.Timestamp` is one every client accepts.
pub fn assert_valid_timestamp(what: &str, seconds: i64, nanos: i32) {
    assert!(
        TIMESTAMP_SECONDS.contains(&seconds),
        "{what}: seconds {seconds} outside the protobuf Timestamp range"
    );
    assert!(
        (0..1_000_000_000).contains(&nanos),
        "{what}: nanos {nanos} outside 0..1e9"
    );
}
