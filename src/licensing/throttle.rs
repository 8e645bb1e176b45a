//! Brute-force protection for `Login` and `SignUp`, applied before any
//! upstream call.
//!
//! Two fixed-window counters: failed logins per email (an attacker guessing
//! one account's password) and attempts per client address (one client
//! trying many accounts, or creating accounts in bulk). Emails are counted
//! by hash and whether or not an account exists, so a throttled answer says
//! nothing about which emails are registered. Memory is bounded: expired
//! windows are pruned when a map grows large.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::domain::Email;

/// Throttle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleOptions {
    pub failures_per_email: u32,
    pub email_window: Duration,
    pub attempts_per_address: u32,
    pub address_window: Duration,
}

/// Past this many tracked keys, expired windows are pruned on insert.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    count: u32,
}

#[derive(Debug)]
struct Counter<K> {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<K, Window>>,
}

impl<K: Eq + Hash + Copy> Counter<K> {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Time until `key` may try again, if it is over its limit.
    fn blocked_for(&self, key: K, now: Instant) -> Option<Duration> {
        let windows = self.lock();
        let window = windows.get(&key)?;
        let ends = window.started + self.window;
        (window.count >= self.limit && ends > now).then(|| ends - now)
    }

    fn add(&self, key: K, now: Instant) {
        let mut windows = self.lock();
        if windows.len() > PRUNE_ABOVE {
            let length = self.window;
            windows.retain(|_, window| now.duration_since(window.started) < length);
        }
        let window = windows.entry(key).or_insert(Window {
            started: now,
            count: 0,
        });
        if now.duration_since(window.started) >= self.window {
            *window = Window {
                started: now,
                count: 0,
            };
        }
        window.count = window.count.saturating_add(1);
    }

    fn reset(&self, key: K) {
        self.lock().remove(&key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Window>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The login and sign-up throttle.
#[derive(Debug)]
pub struct Throttle {
    per_email: Counter<[u8; 32]>,
    per_address: Counter<IpAddr>,
}

impl Throttle {
    /// Creates the throttle.
    pub fn new(options: ThrottleOptions) -> Self {
        Self {
            per_email: Counter::new(options.failures_per_email, options.email_window),
            per_address: Counter::new(options.attempts_per_address, options.address_window),
        }
    }

    /// Counts an attempt from `address` for `email`, or refuses it with the
    /// time to wait.
    pub fn attempt(&self, email: &Email, address: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        if let Some(wait) = self.per_email.blocked_for(email_key(email), now) {
            return Err(wait);
        }
        if let Some(address) = address {
            if let Some(wait) = self.per_address.blocked_for(address, now) {
                return Err(wait);
            }
            self.per_address.add(address, now);
        }
        Ok(())
    }

    /// Records a failed login for `email`.
    pub fn failed(&self, email: &Email) {
        self.per_email.add(email_key(email), Instant::now());
    }

    /// Records a successful login for `email`, clearing its failures.
    pub fn succeeded(&self, email: &Email) {
        self.per_email.reset(email_key(email));
    }
}

fn email_key(email: &Email) -> [u8; 32] {
    Sha256::digest(email.as_str().to_lowercase().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(ThrottleOptions {
            failures_per_email: 3,
            email_window: Duration::from_secs(60),
            attempts_per_address: 5,
            address_window: Duration::from_secs(10),
        })
    }

    fn email(value: &str) -> Email {
        Email::parse("email", value).expect("email")
    }

    #[tokio::test(start_paused = true)]
    async fn failures_for_one_email_trip_it_and_it_recovers_after_the_window() {
        let throttle = throttle();
        let victim = email("victim@example.com");
        for _ in 0..3 {
            throttle.attempt(&victim, None).expect("allowed");
            throttle.failed(&victim);
        }
        let wait = throttle
            .attempt(&email("VICTIM@example.com"), None)
            .expect_err("tripped");
        assert_eq!(wait, Duration::from_secs(60));
        throttle
            .attempt(&email("other@example.com"), None)
            .expect("other emails unaffected");
        tokio::time::advance(Duration::from_secs(61)).await;
        throttle.attempt(&victim, None).expect("recovered");
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_trying_many_emails_is_throttled() {
        let throttle = throttle();
        let address: IpAddr = "203.0.113.7".parse().expect("ip");
        for index in 0..5 {
            throttle
                .attempt(&email(&format!("user{index}@example.com")), Some(address))
                .expect("allowed");
        }
        assert!(
            throttle
                .attempt(&email("user9@example.com"), Some(address))
                .is_err()
        );
        let elsewhere: IpAddr = "198.51.100.1".parse().expect("ip");
        throttle
            .attempt(&email("user9@example.com"), Some(elsewhere))
            .expect("other address");
        tokio::time::advance(Duration::from_secs(10)).await;
        throttle
            .attempt(&email("user9@example.com"), Some(address))
            .expect("recovered");
    }

    #[test]
    fn a_success_clears_the_email_failures() {
        let throttle = throttle();
        let user = email("user@example.com");
        throttle.failed(&user);
        throttle.failed(&user);
        throttle.succeeded(&user);
        throttle.failed(&user);
        throttle.failed(&user);
        assert!(throttle.attempt(&user, None).is_ok());
    }
}
