//! Internal callers: who a verified client certificate names, which
//! operations of the internal listener each may call, and for which products
//! it may issue licenses.

use std::fmt;

use super::CryptlexId;

/// One subject alternative name of a client certificate, with its kind kept:
/// a DNS name that happens to read `spiffe://...` is not the SPIFFE id
/// `spiffe://...`, and matches only DNS entries of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientIdentity {
    /// A URI SAN, such as a SPIFFE id `spiffe://example.org/payment-service`.
    Uri(String),
    /// A DNS SAN, such as `payments.internal.example.com`.
    Dns(String),
}

impl ClientIdentity {
    /// Reads an allow-list entry: anything with a URI scheme (`scheme://`) is
    /// a URI, everything else a DNS name.
    pub fn parse_entry(entry: &str) -> Self {
        let entry = entry.trim();
        match entry.split_once("://") {
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
            {
                Self::Uri(entry.to_owned())
            }
            // Kept as written: the identity also keys the ledger and the
            // license metadata, which must not change with a case fold.
            _ => Self::Dns(entry.to_owned()),
        }
    }

    /// The name as written in the certificate (or the allow-list).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Uri(name) | Self::Dns(name) => name,
        }
    }

    /// Whether a certificate's SAN is this allow-list entry. DNS names
    /// compare without case, as DNS does; URIs exactly.
    fn matches(&self, presented: &ClientIdentity) -> bool {
        match (self, presented) {
            (Self::Uri(allowed), Self::Uri(presented)) => allowed == presented,
            (Self::Dns(allowed), Self::Dns(presented)) => allowed.eq_ignore_ascii_case(presented),
            (Self::Uri(_), Self::Dns(_)) | (Self::Dns(_), Self::Uri(_)) => false,
        }
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation of the internal listener, as an allow-list entry names it
/// (the RPC's name in the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `IssuanceService.IssueLicense`.
    IssueLicense,
    /// `IssuanceService.RenewLicense`.
    RenewLicense,
    /// `IssuanceService.SuspendLicense`.
    SuspendLicense,
    /// `IssuanceService.ResumeLicense`.
    ResumeLicense,
    /// `IssuanceService.RevokeLicense`.
    RevokeLicense,
    /// `IssuanceService.SetSeats`.
    SetSeats,
    /// `AccountService.CreatePasswordResetToken`: a reset token takes over an
    /// account, so no entry may call it unless it names it.
    CreatePasswordResetToken,
}

impl Operation {
    /// Every operation, in the order the contract declares them.
    pub const ALL: [Self; 7] = [
        Self::IssueLicense,
        Self::RenewLicense,
        Self::SuspendLicense,
        Self::ResumeLicense,
        Self::RevokeLicense,
        Self::SetSeats,
        Self::CreatePasswordResetToken,
    ];

    /// Every operation of `IssuanceService`: the payment service's, in the sandbox.
    pub const ISSUANCE_SERVICE: &'static [Self] = &[
        Self::IssueLicense,
        Self::RenewLicense,
        Self::SuspendLicense,
        Self::ResumeLicense,
        Self::RevokeLicense,
        Self::SetSeats,
    ];

    /// What an entry without `operations` may call: issuing, as every entry
    /// could before operations were listed.
    pub const DEFAULT: &'static [Self] = &[Self::IssueLicense];

    /// The operation spelled exactly `name` (the RPC's name), or `None`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|known| known.as_str() == name)
    }

    /// The RPC's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IssueLicense => "IssueLicense",
            Self::RenewLicense => "RenewLicense",
            Self::SuspendLicense => "SuspendLicense",
            Self::ResumeLicense => "ResumeLicense",
            Self::RevokeLicense => "RevokeLicense",
            Self::SetSeats => "SetSeats",
            Self::CreatePasswordResetToken => "CreatePasswordResetToken",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One allow-list entry: an identity, the operations it may call and the
/// products it may issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedClient {
    pub identity: ClientIdentity,
    /// Empty means any product (for `IssueLicense`).
    pub products: Vec<CryptlexId>,
    /// What it may call; empty means nothing.
    pub operations: Vec<Operation>,
}

/// The internal callers allowed to issue licenses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    clients: Vec<AllowedClient>,
}

impl AllowList {
    /// Creates the allow-list from its entries.
    pub fn new(clients: Vec<AllowedClient>) -> Self {
        Self { clients }
    }

    /// Every entry, in configuration order.
    pub fn clients(&self) -> &[AllowedClient] {
        &self.clients
    }

    /// The first entry matching any of the certificate's `presented` names.
    pub fn find(&self, presented: &[ClientIdentity]) -> Option<&AllowedClient> {
        self.clients.iter().find(|client| {
            presented
                .iter()
                .any(|identity| client.identity.matches(identity))
        })
    }
}

impl AllowedClient {
    /// Whether this client may call `operation`.
    pub fn may_call(&self, operation: Operation) -> bool {
        self.operations.contains(&operation)
    }

    /// Whether this client may issue licenses for `product`.
    pub fn may_issue(&self, product: &CryptlexId) -> bool {
        self.products.is_empty() || self.products.contains(product)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_entries_are_uris_when_they_have_a_scheme() {
        assert_eq!(
            ClientIdentity::parse_entry("spiffe://example.org/payment-service"),
            ClientIdentity::Uri("spiffe://example.org/payment-service".into())
        );
        assert_eq!(
            ClientIdentity::parse_entry("Payments.Internal"),
            ClientIdentity::Dns("Payments.Internal".into())
        );
    }

    #[test]
    fn a_dns_name_spelled_like_a_uri_never_matches_a_uri_entry() {
        let list = AllowList::new(vec![AllowedClient {
            identity: ClientIdentity::parse_entry("spiffe://example.org/payment-service"),
            products: Vec::new(),
            operations: Operation::DEFAULT.to_vec(),
        }]);
        let forged = [ClientIdentity::Dns(
            "spiffe://example.org/payment-service".into(),
        )];
        assert!(list.find(&forged).is_none());
        let genuine = [ClientIdentity::Uri(
            "spiffe://example.org/payment-service".into(),
        )];
        assert!(list.find(&genuine).is_some());
    }

    #[test]
    fn operations_parse_from_their_rpc_names_only() {
        for operation in Operation::ALL {
            assert_eq!(Operation::parse(operation.as_str()), Some(operation));
        }
        for unknown in ["issuelicense", "IssueLicense ", "DeleteUser", ""] {
            assert_eq!(Operation::parse(unknown), None, "{unknown:?}");
        }
        assert!(!Operation::DEFAULT.contains(&Operation::CreatePasswordResetToken));
    }

    #[test]
    fn dns_entries_match_without_case() {
        let list = AllowList::new(vec![AllowedClient {
            identity: ClientIdentity::parse_entry("payments.internal"),
            products: Vec::new(),
            operations: Operation::DEFAULT.to_vec(),
        }]);
        assert!(
            list.find(&[ClientIdentity::Dns("PAYMENTS.internal".into())])
                .is_some()
        );
    }
}
