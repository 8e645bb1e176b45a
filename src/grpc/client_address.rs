//! The caller's address for brute-force protection: the TCP peer, or, behind
//! proxies, the right-most entry of a forwarding header that our own proxies
//! did not add.
//!
//! Each proxy that appends to `X-Forwarded-For` adds the address it received
//! the request from. With `trusted_hops` proxies of our own in front of the
//! gateway, the last `trusted_hops` entries were written by them, and the
//! left-most of those is the address the first of them saw: the client.
//! Anything further left came from the client and can say anything, so it is
//! never read. (A proxy that overwrites the header instead leaves one entry,
//! which is the same thing.)
//!
//! Fails closed: when a header is configured, a missing header, too few
//! entries, or an entry that is not an IP address gives
//! [`ClientAddress::Unknown`], which the throttle counts as one shared
//! caller. Skipping the address limit instead would let anyone who can drop
//! the header bypass it; refusing the call would turn a proxy
//! misconfiguration into an outage of sign-in. The TCP peer is not used then:
//! behind a proxy it is the proxy, shared by every user.
//!
//! It does not parse RFC 7239 `Forwarded` (`for=` with quoting and
//! obfuscated ids) and takes no list of trusted networks: counting hops
//! matches how ingress controllers and Envoy (`xff_num_trusted_hops`) are set up.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use tonic::Request;

use crate::domain::ClientAddress;

/// Where the real client address is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddressPolicy {
    /// Lower-cased header name; `None` uses the TCP peer.
    header: Option<String>,
    /// Proxies of ours that append to the header (at least one).
    trusted_hops: usize,
}

impl ClientAddressPolicy {
    /// Reads the address from `header` (e.g. `x-forwarded-for`), to which
    /// `trusted_hops` proxies of ours append; with no header (or an empty
    /// name), the TCP peer is the client.
    pub fn new(header: Option<&str>, trusted_hops: u8) -> Self {
        Self {
            header: header
                .map(|name| name.trim().to_ascii_lowercase())
                .filter(|name| !name.is_empty()),
            trusted_hops: usize::from(trusted_hops.max(1)),
        }
    }
}

/// Returns the client address of `request` under `policy`.
pub(super) fn of_request<T>(request: &Request<T>, policy: &ClientAddressPolicy) -> ClientAddress {
    let header_values: Vec<Cow<'_, str>> = match &policy.header {
        // Lossy: a byte that is not text spoils only its own entry, and the
        // entry we read is one our proxy wrote.
        Some(name) => request
            .metadata()
            .get_all(name.as_str())
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()))
            .collect(),
        None => Vec::new(),
    };
    let peer = request.remote_addr().map(|addr| addr.ip());
    let address = client_address(&header_values, peer, policy);
    if address == ClientAddress::Unknown {
        // Debug, not warn: a misconfigured proxy would repeat it on every call
        // (its symptom, sign-in throttled for everyone, is loud enough).
        tracing::debug!(
            header = policy.header.as_deref().unwrap_or("(tcp peer)"),
            "no usable client address; counted with the unknown callers"
        );
    }
    address
}

/// Returns the client address from the values of the configured header (in
/// the order received; several lines are one list), the TCP peer, and the
/// policy.
pub(super) fn client_address(
    header_values: &[impl AsRef<str>],
    peer: Option<IpAddr>,
    policy: &ClientAddressPolicy,
) -> ClientAddress {
    if policy.header.is_none() {
        return peer.map_or(ClientAddress::Unknown, ClientAddress::Ip);
    }
    // Empty list elements ("a, , b", a trailing comma) are no entries
    // (RFC 9110 section 5.6.1), so they cannot shift the count.
    let entries: Vec<&str> = header_values
        .iter()
        .flat_map(|value| value.as_ref().split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .collect();
    let Some(client_index) = entries.len().checked_sub(policy.trusted_hops) else {
        return ClientAddress::Unknown;
    };
    parse_entry(entries[client_index]).map_or(ClientAddress::Unknown, ClientAddress::Ip)
}

/// Parses `1.2.3.4`, `2001:db8::1`, and the forms with a port some proxies
/// write: `1.2.3.4:5678`, `[2001:db8::1]:443`, `[2001:db8::1]`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "10.1.2.3";

    fn xff(trusted_hops: u8) -> ClientAddressPolicy {
        ClientAddressPolicy::new(Some("X-Forwarded-For"), trusted_hops)
    }

    fn resolve(values: &[&str], policy: &ClientAddressPolicy) -> ClientAddress {
        client_address(values, Some(PEER.parse().expect("ip")), policy)
    }

    fn ip(value: &str) -> ClientAddress {
        ClientAddress::Ip(value.parse().expect("ip"))
    }

    #[test]
    fn without_a_header_the_tcp_peer_is_the_client() {
        let policy = ClientAddressPolicy::new(None, 1);
        assert_eq!(resolve(&["198.51.100.7"], &policy), ip(PEER));
        assert_eq!(
            client_address(&[] as &[&str], None, &policy),
            ClientAddress::Unknown
        );
        assert_eq!(
            ClientAddressPolicy::new(Some("  "), 1),
            policy,
            "an empty header name means no header"
        );
    }

    #[test]
    fn behind_one_proxy_the_right_most_entry_is_the_client_and_forged_ones_are_ignored() {
        let policy = xff(1);
        assert_eq!(resolve(&["198.51.100.7"], &policy), ip("198.51.100.7"));
        assert_eq!(
            resolve(&["1.1.1.1, 8.8.8.8, 198.51.100.7"], &policy),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(&["not an address, 198.51.100.7"], &policy),
            ip("198.51.100.7"),
            "garbage the client wrote is never read"
        );
    }

    #[test]
    fn behind_two_proxies_the_second_entry_from_the_right_is_the_client() {
        let policy = xff(2);
        assert_eq!(
            resolve(&["6.6.6.6, 198.51.100.7, 10.0.0.5"], &policy),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(&["6.6.6.6, 198.51.100.7", "10.0.0.5"], &policy),
            ip("198.51.100.7"),
            "several header lines are one list"
        );
        assert_eq!(
            resolve(&["198.51.100.7, , 10.0.0.5,"], &policy),
            ip("198.51.100.7"),
            "empty elements are not entries"
        );
    }

    #[test]
    fn a_missing_short_or_garbage_header_is_an_unknown_address_never_the_peer() {
        let policy = xff(2);
        assert_eq!(resolve(&[], &policy), ClientAddress::Unknown);
        assert_eq!(resolve(&[""], &policy), ClientAddress::Unknown);
        assert_eq!(
            resolve(&["198.51.100.7"], &policy),
            ClientAddress::Unknown,
            "fewer entries than trusted proxies: it did not come through them"
        );
        assert_eq!(
            resolve(&["garbage, 10.0.0.5"], &policy),
            ClientAddress::Unknown
        );
        assert_eq!(
            resolve(&["unknown, 10.0.0.5"], &policy),
            ClientAddress::Unknown
        );
    }

    #[test]
    fn entries_with_ports_or_brackets_are_understood() {
        let policy = xff(1);
        assert_eq!(resolve(&["198.51.100.7:5678"], &policy), ip("198.51.100.7"));
        assert_eq!(resolve(&["[2001:db8::1]:443"], &policy), ip("2001:db8::1"));
        assert_eq!(resolve(&["[2001:db8::1]"], &policy), ip("2001:db8::1"));
        assert_eq!(resolve(&["2001:db8::1"], &policy), ip("2001:db8::1"));
    }

    #[test]
    fn the_header_is_read_from_request_metadata_in_any_case() {
        let mut request = Request::new(());
        request.metadata_mut().append(
            "x-forwarded-for",
            "6.6.6.6, 198.51.100.7".parse().expect("value"),
        );
        request
            .metadata_mut()
            .append("x-forwarded-for", "10.0.0.5".parse().expect("value"));

        assert_eq!(of_request(&request, &xff(2)), ip("198.51.100.7"));
        assert_eq!(
            of_request(&Request::new(()), &xff(1)),
            ClientAddress::Unknown
        );
    }
}
