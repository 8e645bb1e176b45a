//! Identifiers and plain values parsed at the edge.

use std::collections::BTreeMap;
use std::fmt;

use super::validation::{FieldViolation, ValidationErrors, check_length, check_no_control_chars};

/// An email address, trimmed and checked for a plausible shape.
///
/// Full RFC 5322 validation is Cryptlex's job; this catches what is clearly
/// not an address before it costs an upstream call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses `value` for `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        let value = value.trim();
        check_length(field, value, 1, 256)?;
        let Some((local, domain)) = value.split_once('@') else {
            return Err(FieldViolation::new(field, "must be an email address"));
        };
        let plausible = !local.is_empty()
            && !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plausible {
            return Err(FieldViolation::new(field, "must be an email address"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The address as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Cryptlex object id (user, product, license, template).
///
/// Cryptlex ids are UUIDs in every source we have, but the API calls them
/// opaque strings, so we accept any short token of URL-safe characters. That
/// is enough to keep them harmless in paths and query strings (which are
/// escaped anyway) and to refuse garbage before an upstream call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CryptlexId(String);

impl CryptlexId {
    /// Parses `value` for `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        check_length(field, value, 1, 64)?;
        if !value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        {
            return Err(FieldViolation::new(
                field,
                "must be a Cryptlex id (letters, digits, '-' and '_')",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// Wraps an id Cryptlex itself returned.
    pub fn from_upstream(value: String) -> Self {
        Self(value)
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CryptlexId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A first or last name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    /// Parses a name of `min..=256` characters (Cryptlex's bounds) for
    /// `field`.
    pub fn parse(field: &str, value: &str, min: usize) -> Result<Self, FieldViolation> {
        let value = value.trim();
        check_length(field, value, min, 256)?;
        check_no_control_chars(field, value)?;
        Ok(Self(value.to_owned()))
    }

    /// The name as given (trimmed).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller's idempotency key for `IssueLicense` (for example a payment id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// The longest accepted request id.
    pub const MAX_LEN: usize = 128;

    /// Parses 1 to 128 printable ASCII characters (no spaces) for `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        check_length(field, value, 1, Self::MAX_LEN)?;
        if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(FieldViolation::new(
                field,
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the sub-key of unit `unit` (1-based) of a request that issues several
    /// licenses: `<id>#<unit>`. It may be longer than a caller's id could be; it is only ever
    /// the gateway's own key.
    pub fn unit(&self, unit: u32) -> RequestId {
        Self(format!("{}#{unit}", self.0))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The payment provider's subscription or order reference a license is issued under, so the
/// lifecycle calls can address every license of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionId(String);

impl SubscriptionId {
    /// Parses 1 to 128 printable ASCII characters (no spaces) for `field`, as request ids.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldViolation> {
        RequestId::parse(field, value).map(|id| Self(id.0))
    }

    /// The reference as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Caller-supplied license metadata, validated for size and reserved keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataMap(BTreeMap<String, String>);

impl MetadataMap {
    /// Most entries a caller may attach; Cryptlex allows 50 per license and
    /// the gateway keeps the rest for its own bookkeeping.
    pub const MAX_ENTRIES: usize = 20;
    /// Longest key.
    pub const MAX_KEY_LEN: usize = 64;
    /// Longest value.
    pub const MAX_VALUE_LEN: usize = 1024;

    /// Parses `entries`, refusing keys in `reserved`.
    pub fn parse(
        field: &str,
        entries: impl IntoIterator<Item = (String, String)>,
        reserved: &[&str],
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let mut map = BTreeMap::new();
        for (key, value) in entries {
            let key_field = format!("{field}[{}]", printable(&key));
            if let Err(violation) = check_length(&key_field, &key, 1, Self::MAX_KEY_LEN)
                .and_then(|()| check_no_control_chars(&key_field, &key))
            {
                errors.push(violation);
                continue;
            }
            if reserved
                .iter()
                .any(|reserved_key| reserved_key.eq_ignore_ascii_case(&key))
            {
                errors.push(FieldViolation::new(key_field, "is reserved by the gateway"));
                continue;
            }
            if let Err(violation) = check_length(&key_field, &value, 0, Self::MAX_VALUE_LEN)
                .and_then(|()| check_no_control_chars(&key_field, &value))
            {
                errors.push(violation);
                continue;
            }
            map.insert(key, value);
        }
        if map.len() > Self::MAX_ENTRIES {
            errors.push(FieldViolation::new(
                field,
                format!("must have at most {} entries", Self::MAX_ENTRIES),
            ));
        }
        errors.into_result()?;
        Ok(Self(map))
    }

    /// The entries, sorted by key (a stable order for fingerprints).
    pub fn entries(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

/// Shortens and sanitizes a caller-supplied key for use in an error message.
fn printable(key: &str) -> String {
    key.chars()
        .filter(|c| !c.is_control())
        .take(MetadataMap::MAX_KEY_LEN)
        .collect()
}
