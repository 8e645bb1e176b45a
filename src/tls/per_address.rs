//! Counting what each client address holds at once (connections, TLS
//! handshakes), so that one source cannot take every place a listener has.
//!
//! IPv4 addresses count one by one. IPv6 addresses are grouped by their /64
//! prefix: a single host usually owns a whole /64 and can pick any address in
//! it, so counting per /128 would bound nothing. IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`, what a dual-stack socket reports) count as the IPv4
//! address they carry.
//!
//! Used by the TLS accept loop (handshakes per address) and by the gRPC
//! listeners' accept loop (connections per address); nothing here knows TLS
//! or gRPC.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Hands out at most `max` places per client address at once.
///
/// Cloning is shallow: clones share the counts.
#[derive(Debug, Clone)]
pub(crate) struct PerAddressLimit {
    max: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddressLimit {
    /// Allows `max` places per address (at least one).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a place for `address`, or `None` when its group already holds
    /// `max`. The place is given back when the permit is dropped.
    pub(crate) fn try_acquire(&self, address: IpAddr) -> Option<AddressPermit> {
        let group = address_group(address);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(group).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressPermit {
            group,
            held: Arc::clone(&self.held),
        })
    }

    /// Places `address`'s group holds now.
    #[cfg(test)]
    pub(crate) fn held_by(&self, address: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&address_group(address)).copied().unwrap_or(0)
    }
}

/// One place held for one address group; given back on drop.
#[derive(Debug)]
pub(crate) struct AddressPermit {
    group: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.group) {
            *count = count.saturating_sub(1);
            // Forget empty groups, so the map holds only addresses that hold
            // something: a scan from many addresses leaves nothing behind.
            if *count == 0 {
                held.remove(&self.group);
            }
        }
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
fn address_group(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a literal address")
    }

    #[test]
    fn an_address_gets_at_most_max_places_and_gets_them_back_on_drop() {
        let limit = PerAddressLimit::new(2);
        let first = limit.try_acquire(ip("192.0.2.1")).expect("first place");
        let _second = limit.try_acquire(ip("192.0.2.1")).expect("second place");
        assert!(limit.try_acquire(ip("192.0.2.1")).is_none());
        assert!(
            limit.try_acquire(ip("192.0.2.2")).is_some(),
            "other addresses are not affected"
        );
        drop(first);
        assert!(limit.try_acquire(ip("192.0.2.1")).is_some());
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_their_places() {
        let limit = PerAddressLimit::new(1);
        let _held = limit.try_acquire(ip("2001:db8:1:2::1")).expect("a place");
        assert!(limit.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(limit.try_acquire(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        let limit = PerAddressLimit::new(1);
        let _held = limit.try_acquire(ip("198.51.100.7")).expect("a place");
        assert!(limit.try_acquire(ip("::ffff:198.51.100.7")).is_none());
    }

    #[test]
    fn groups_that_hold_nothing_are_forgotten() {
        let limit = PerAddressLimit::new(4);
        let permit = limit.try_acquire(ip("192.0.2.1")).expect("a place");
        assert_eq!(limit.held_by(ip("192.0.2.1")), 1);
        drop(permit);
        assert_eq!(limit.held_by(ip("192.0.2.1")), 0);
        let held = limit.held.lock().expect("not poisoned");
        assert!(held.is_empty());
    }
}
