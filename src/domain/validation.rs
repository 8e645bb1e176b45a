//! Field-level validation failures, collected so a caller sees every problem
//! with a request at once (they become `google.rpc.BadRequest` details).

use std::fmt;

/// One rejected field: which one and why, in words safe to show a caller.
///
/// The description never contains the rejected value, since that value may be
/// a password or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field, as named in the proto contract (e.g. `email`).
    pub field: String,
    /// Why the value was refused.
    pub description: String,
}

impl FieldViolation {
    /// Creates a violation for `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// All the violations found in one request; never empty when returned as an
/// error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    violations: Vec<FieldViolation>,
}

impl ValidationErrors {
    /// Starts an empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the error of `result` (if any) and returns its value.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.violations.push(violation);
                None
            }
        }
    }

    /// Records a violation.
    pub fn push(&mut self, violation: FieldViolation) {
        self.violations.push(violation);
    }

    /// Returns `Err(self)` when any violation was recorded.
    /// Whether no violation was recorded.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The recorded violations, in the order they were found.
    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }
}

impl From<FieldViolation> for ValidationErrors {
    fn from(violation: FieldViolation) -> Self {
        Self {
            violations: vec![violation],
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for violation in &self.violations {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{}: {}", violation.field, violation.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Checks the length of `value` in characters against `min..=max`.
pub(crate) fn check_length(
    field: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), FieldViolation> {
    let length = value.chars().count();
    if length < min {
        let description = if min == 1 {
            "is required".to_owned()
        } else {
            format!("must be at least {min} characters")
        };
        return Err(FieldViolation::new(field, description));
    }
    if length > max {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Refuses control characters, which no name, email or id legitimately has
/// and which would corrupt logs.
pub(crate) fn check_no_control_chars(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}
