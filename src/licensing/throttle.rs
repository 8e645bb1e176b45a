//! Brute-force protection for `Login` and `SignUp`, applied before any
//! upstream call; the account calls' own counters (two-factor codes, reset
//! tokens, reset mail) are in [`account`], beside these and apart from them.
//!
//! # What is counted
//!
//! - **Failed logins per email, with back-off.** Each email has
//!   `failures_per_email` free failures; after that each further attempt
//!   waits after the previous failure, `backoff_base` doubling per failure up
//!   to `backoff_max`. Failures are forgotten `email_window` after the last
//!   one. Guessing one account's password is slowed to one guess per
//!   `backoff_max`, yet nobody is ever locked out for longer than that.
//! - **Attempts per client network, in a fixed window.** One client trying
//!   many accounts, or creating them in bulk, gets `attempts_per_address` per
//!   `address_window`. A network is an IPv4 address or an IPv6 /64 (one
//!   subscriber's LAN: rotating addresses inside it is free for the attacker,
//!   so it is one key). Callers whose address is unknown (behind a proxy that
//!   sent no usable header) share one key: they fail closed instead of being
//!   skipped.
//!
//! # Why there is no lock-out button
//!
//! A hard per-email window lets anyone lock an account's owner out by typing
//! wrong passwords. Two things prevent that here. The back-off is short and
//! bounded (above), and an email's failures are kept apart by where they come
//! from: a network the email signed in from within `known_address_ttl` (at
//! most `known_addresses_per_email` of them) has a back-off of its own, and
//! every other network shares the "strangers" back-off. Someone guessing from
//! elsewhere only ever slows down strangers; the owner, from a network they
//! signed in from before, is not affected. (From a new network during an
//! attack the owner waits like a stranger: at most `backoff_max` per try.) A
//! success clears the failures of the network it came from and leaves the
//! strangers' count alone, so the owner signing in never hands an attacker
//! fresh guesses.
//!
//! # Reservations
//!
//! An attempt is checked and reserved in one step under one lock, before the
//! upstream call: a [`LoginAttempt`] counts as a failure while it is in
//! flight, so concurrent guesses cannot all pass the check before the first
//! answer arrives. Past the free allowance only one attempt per back-off may
//! be in flight. The reservation becomes a failure, a success, or (dropped
//! without a verdict: an upstream fault, a cancelled call) nothing.
//!
//! # Privacy and memory
//!
//! Emails are counted by a keyed SHA-256 (the key is random per process), and
//! whether or not an account exists, so a throttled answer says nothing about
//! which emails are registered and no email is ever stored. Client networks
//! are kept only in memory, for as long as their window or sign-in lasts, and
//! never logged. Both tables are capped (`max_tracked_emails`, `max_tracked_addresses`;
//! about 150 bytes per email plus 70 per known network, and 75 per client
//! network) and pruned a few entries per call; see [`table`] for what happens
//! when one is full. Nothing here knows about gRPC or where the address came
//! from.

mod account;
mod table;

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use self::table::{Slot, Table, Tracked};
use crate::domain::Email;

/// Throttle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleOptions {
    /// Failed logins for one email (from strangers, or from one known
    /// network) before the back-off starts.
    pub failures_per_email: u32,
    /// How long failures are remembered after the last one.
    pub email_window: Duration,
    /// The wait after the first failure past the allowance; it doubles with
    /// each further failure.
    pub backoff_base: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
    /// How long a network an email signed in from keeps its own back-off.
    pub known_address_ttl: Duration,
    /// Networks remembered per email (the most recent sign-ins win).
    pub known_addresses_per_email: usize,
    /// Emails tracked at once; see [`table`] for the behaviour when full.
    pub max_tracked_emails: usize,
    /// Login and sign-up attempts per client network per window.
    pub attempts_per_address: u32,
    pub address_window: Duration,
    /// Client networks tracked at once.
    pub max_tracked_addresses: usize,
    /// Upstream calls a user call from one client network may start per
    /// `upstream_address_window` (reads that miss the cache, refreshes,
    /// sign-outs); 0 turns the limit off. It keeps one anonymous source from
    /// spending the whole read share of Cryptlex's budget with tokens that
    /// each cost a call; answers from memory never count.
    pub upstream_calls_per_address: u32,
    pub upstream_address_window: Duration,
    /// Reset mails (`RequestPasswordReset`) per email address per
    /// `reset_email_window`, whether or not an account has the address.
    pub reset_requests_per_email: u32,
    pub reset_email_window: Duration,
    /// Reset mails per client network per `reset_address_window`.
    pub reset_requests_per_address: u32,
    pub reset_address_window: Duration,
}

impl Default for ThrottleOptions {
    fn default() -> Self {
        Self {
            failures_per_email: 5,
            email_window: Duration::from_secs(15 * 60),
            backoff_base: Duration::from_secs(1),
            // 1 s doubling reaches 5 min after 9 steps; from then on an
            // attacker gets 12 guesses an hour per account (the old 5 per
            // 15 min hard window allowed 20), and an owner caught in it
            // waits at most this long.
            backoff_max: Duration::from_secs(5 * 60),
            known_address_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            known_addresses_per_email: 4,
            // 15 to 25 MB at the cap. Sign-in failures that reach Cryptlex
            // are bounded by the upstream budget (under 500 a minute), so only
            // a flood of short passwords from many networks can fill it.
            max_tracked_emails: 100_000,
            attempts_per_address: 30,
            address_window: Duration::from_secs(60),
            max_tracked_addresses: 100_000,
            // Two fifths of the reads' share of Cryptlex's 50 per 5 s: one
            // network can never leave the others nothing. A household or an
            // office starting a few sessions stays far below it.
            upstream_calls_per_address: 15,
            upstream_address_window: Duration::from_secs(5),
            // Each request may send a mail to someone's inbox: a person who
            // lost the first mail asks once or twice more, and a script
            // using the gateway to flood an inbox gets three an hour.
            reset_requests_per_email: 3,
            reset_email_window: Duration::from_secs(60 * 60),
            // A household or an office forgets a few passwords at once; a
            // script trying a list of addresses gets ten per quarter hour.
            reset_requests_per_address: 10,
            reset_address_window: Duration::from_secs(15 * 60),
        }
    }
}

pub(crate) use crate::domain::ClientAddress;

/// The login and sign-up throttle. Share it by reference (or inside an
/// `Arc`): a [`LoginAttempt`] borrows it.
pub(crate) struct Throttle {
    email_rules: EmailRules,
    address_rules: WindowRules,
    upstream_rules: WindowRules,
    reset_mail_email_rules: WindowRules,
    reset_mail_address_rules: WindowRules,
    /// Keys the email hash, so the table cannot be reversed by hashing a
    /// list of email addresses.
    hash_key: [u8; 32],
    /// One std lock for both tables: no `.await` happens under it, and an
    /// attempt must be checked and reserved in both at once.
    state: Mutex<State>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Throttle")
            .field("email_rules", &self.email_rules)
            .field("address_rules", &self.address_rules)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    emails: Table<EmailKey, EmailEntry>,
    addresses: Table<Network, AttemptWindow>,
    /// Upstream calls of user calls, per network.
    upstream: Table<Network, AttemptWindow>,
    /// The account calls' tables.
    account: account::AccountState,
}

impl Throttle {
    /// Creates the throttle; its tables grow with use, up to their caps.
    pub(crate) fn new(options: ThrottleOptions) -> Self {
        Self {
            email_rules: EmailRules {
                backoff: BackoffRules {
                    free: options.failures_per_email,
                    base: options.backoff_base,
                    max: options.backoff_max,
                    forget_after: options.email_window,
                },
                known_ttl: options.known_address_ttl,
                known_per_email: options.known_addresses_per_email,
            },
            address_rules: WindowRules {
                limit: options.attempts_per_address,
                window: options.address_window,
            },
            upstream_rules: WindowRules {
                limit: options.upstream_calls_per_address,
                window: options.upstream_address_window,
            },
            reset_mail_email_rules: WindowRules {
                limit: options.reset_requests_per_email,
                window: options.reset_email_window,
            },
            reset_mail_address_rules: WindowRules {
                limit: options.reset_requests_per_address,
                window: options.reset_address_window,
            },
            hash_key: rand::random(),
            state: Mutex::new(State {
                emails: Table::new("emails", options.max_tracked_emails),
                addresses: Table::new("addresses", options.max_tracked_addresses),
                upstream: Table::new("upstream addresses", options.max_tracked_addresses),
                account: account::AccountState::new(
                    options.max_tracked_emails,
                    options.max_tracked_addresses,
                ),
            }),
        }
    }

    /// Reserves a login attempt for `email` from `address`, or refuses it
    /// with the time to wait. The reservation counts as a failure until it is
    /// settled (or dropped).
    pub(crate) fn begin_login(
        &self,
        email: &Email,
        address: ClientAddress,
    ) -> Result<LoginAttempt<'_>, Duration> {
        // Hashed before locking: the lock covers only table work.
        let key = self.email_key(email);
        let network = Network::from(address);
        let rules = &self.email_rules;
        let mut state = self.lock();
        let State {
            emails, addresses, ..
        } = &mut *state;
        let now = Instant::now();

        let email_slot = emails.slot(key, now, rules);
        let entry = emails
            .get_mut(email_slot)
            .expect("a slot just handed out has its entry");
        entry.refresh(now, rules);
        let judge = match email_slot {
            Slot::Own(_) => entry.judge(network, now, rules),
            // The overflow entry is shared by unrelated emails: it must never
            // grant one of them another's known network.
            Slot::Overflow => Judge::Strangers,
        };
        let backoff = entry
            .backoff(judge)
            .expect("a judge names a back-off the entry has");
        if let Some(wait) = backoff.wait(now, &rules.backoff) {
            emails.forget_if_dead(email_slot, now, rules);
            return Err(wait);
        }
        if let Err(wait) = count_address(addresses, network, now, &self.address_rules) {
            emails.forget_if_dead(email_slot, now, rules);
            return Err(wait);
        }
        emails
            .get_mut(email_slot)
            .and_then(|entry| entry.backoff_mut(judge))
            .expect("nothing is removed while the lock is held")
            .reserve();
        Ok(LoginAttempt {
            throttle: self,
            email_slot,
            network,
            judge,
            settled: false,
        })
    }

    /// Counts a sign-up attempt from `address`, or refuses it with the time
    /// to wait. An email in back-off is refused too, so sign-up is no way
    /// around it; nothing is reserved, since sign-up reveals no password.
    pub(crate) fn begin_sign_up(
        &self,
        email: &Email,
        address: ClientAddress,
    ) -> Result<(), Duration> {
        let key = self.email_key(email);
        let network = Network::from(address);
        let rules = &self.email_rules;
        let mut state = self.lock();
        let State {
            emails, addresses, ..
        } = &mut *state;
        let now = Instant::now();
        if let Some(entry) = emails.peek(key) {
            let wait = entry
                .backoff(entry.judge(network, now, rules))
                .and_then(|backoff| backoff.wait(now, &rules.backoff));
            if let Some(wait) = wait {
                return Err(wait);
            }
        }
        count_address(addresses, network, now, &self.address_rules)
    }

    /// Counts one upstream call made for a user call from `address`, or
    /// refuses it with the time to wait. Always allowed when the limit is off.
    pub(crate) fn begin_upstream_call(&self, address: ClientAddress) -> Result<(), Duration> {
        if self.upstream_rules.limit == 0 {
            return Ok(());
        }
        let network = Network::from(address);
        let mut state = self.lock();
        count_address(
            &mut state.upstream,
            network,
            Instant::now(),
            &self.upstream_rules,
        )
    }

    fn email_key(&self, email: &Email) -> EmailKey {
        let mut hasher = Sha256::new();
        hasher.update(self.hash_key);
        hasher.update(email.as_str().to_lowercase().as_bytes());
        hasher.finalize().into()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock leaves counts at worst one attempt off.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn count_address(
    addresses: &mut Table<Network, AttemptWindow>,
    network: Network,
    now: Instant,
    rules: &WindowRules,
) -> Result<(), Duration> {
    let slot = addresses.slot(network, now, rules);
    let window = addresses
        .get_mut(slot)
        .expect("a slot just handed out has its entry");
    let counted = window.count(now, rules);
    addresses.forget_if_dead(slot, now, rules);
    counted
}

/// A reserved login attempt. Settle it with [`failed`](Self::failed) or
/// [`succeeded`](Self::succeeded) once the answer is known; dropping it
/// unsettled (no verdict) releases the reservation without counting it.
#[derive(Debug)]
#[must_use = "an unsettled attempt is released uncounted when dropped"]
pub(crate) struct LoginAttempt<'throttle> {
    throttle: &'throttle Throttle,
    email_slot: Slot<EmailKey>,
    network: Network,
    judge: Judge,
    settled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    NoVerdict,
}

impl LoginAttempt<'_> {
    /// Counts the attempt as a failed login.
    pub(crate) fn failed(mut self) {
        self.settle(Outcome::Failed);
    }

    /// Records a successful login: the network it came from is now known for
    /// this email, with no failures.
    pub(crate) fn succeeded(mut self) {
        self.settle(Outcome::Succeeded);
    }

    fn settle(&mut self, outcome: Outcome) {
        self.settled = true;
        let now = Instant::now();
        let rules = &self.throttle.email_rules;
        let mut state = self.throttle.lock();
        let emails = &mut state.emails;
        // An entry with an attempt in flight is never dropped, so this finds
        // it; if it somehow did not, there is nothing left to settle (and
        // nobody else's reservation is released instead).
        let Some(entry) = emails.get_mut(self.email_slot) else {
            return;
        };
        let Some(backoff) = entry.backoff_mut(self.judge) else {
            return;
        };
        backoff.release();
        match outcome {
            Outcome::Failed => backoff.fail(now, &rules.backoff),
            Outcome::Succeeded if matches!(self.email_slot, Slot::Own(_)) => {
                entry.signed_in(self.network, now, rules);
            }
            Outcome::Succeeded | Outcome::NoVerdict => {}
        }
        emails.forget_if_dead(self.email_slot, now, rules);
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Outcome::NoVerdict);
        }
    }
}

/// A keyed hash of the lower-cased email.
type EmailKey = [u8; 32];

/// The unit the address limit counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Network {
    V4([u8; 4]),
    /// The /64 prefix: one subscriber's LAN.
    V6([u8; 8]),
    Unknown,
}

impl From<ClientAddress> for Network {
    fn from(address: ClientAddress) -> Self {
        match address {
            ClientAddress::Ip(IpAddr::V4(v4)) => Network::V4(v4.octets()),
            ClientAddress::Ip(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
                Some(v4) => Network::V4(v4.octets()),
                None => {
                    let [a, b, c, d, e, f, g, h, ..] = v6.octets();
                    Network::V6([a, b, c, d, e, f, g, h])
                }
            },
            ClientAddress::Unknown => Network::Unknown,
        }
    }
}

/// Which back-off of an email judges an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// Networks the email has not signed in from lately, all together.
    Strangers,
    Known(Network),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackoffRules {
    free: u32,
    base: Duration,
    max: Duration,
    forget_after: Duration,
}

impl BackoffRules {
    /// The wait after the previous failure before attempt number
    /// `beyond_allowance` past the free ones (counting from zero).
    fn gap(&self, beyond_allowance: u32) -> Duration {
        let factor = 1u32.checked_shl(beyond_allowance).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EmailRules {
    backoff: BackoffRules,
    known_ttl: Duration,
    known_per_email: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WindowRules {
    limit: u32,
    window: Duration,
}

/// Failures and attempts in flight, for one email from one kind of place.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    in_flight: u32,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// Failures still remembered at `now`.
    fn failures(&self, now: Instant, rules: &BackoffRules) -> u32 {
        match self.last_failure {
            Some(last) if now.duration_since(last) < rules.forget_after => self.failures,
            _ => 0,
        }
    }

    /// How long the next attempt must wait, if it may not start now.
    fn wait(&self, now: Instant, rules: &BackoffRules) -> Option<Duration> {
        let failures = self.failures(now, rules);
        let attempts = failures.saturating_add(self.in_flight);
        let beyond_allowance = attempts.checked_sub(rules.free)?;
        if self.in_flight > 0 {
            // Past the allowance guesses go one at a time: the next waits for
            // this one's answer, and then for its back-off.
            return Some(rules.gap(beyond_allowance));
        }
        let since_last = now.duration_since(self.last_failure?);
        let until_forgotten = rules.forget_after.saturating_sub(since_last);
        let wait = rules
            .gap(beyond_allowance)
            .saturating_sub(since_last)
            .min(until_forgotten);
        (!wait.is_zero()).then_some(wait)
    }

    fn reserve(&mut self) {
        self.in_flight = self.in_flight.saturating_add(1);
    }

    fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    fn fail(&mut self, now: Instant, rules: &BackoffRules) {
        self.failures = self.failures(now, rules).saturating_add(1);
        self.last_failure = Some(now);
    }

    fn forget_old_failures(&mut self, now: Instant, rules: &BackoffRules) {
        if self.failures(now, rules) == 0 {
            self.failures = 0;
            self.last_failure = None;
        }
    }

    fn holds_anything(&self, now: Instant, rules: &BackoffRules) -> bool {
        self.in_flight > 0 || self.failures(now, rules) > 0
    }
}

impl Tracked for Backoff {
    type Rules = BackoffRules;

    fn is_live(&self, now: Instant, rules: &BackoffRules) -> bool {
        self.holds_anything(now, rules)
    }

    /// Never while it holds anything: dropping it would hand out fresh guesses.
    fn may_be_evicted(&self, now: Instant, rules: &BackoffRules) -> bool {
        !self.holds_anything(now, rules)
    }
}

/// A network an email signed in from.
#[derive(Debug)]
struct KnownNetwork {
    network: Network,
    attempts: Backoff,
    signed_in_at: Instant,
}

impl KnownNetwork {
    fn is_trusted(&self, now: Instant, rules: &EmailRules) -> bool {
        now.duration_since(self.signed_in_at) < rules.known_ttl
    }
}

/// Everything the throttle knows about one email.
#[derive(Debug, Default)]
struct EmailEntry {
    strangers: Backoff,
    known: Vec<KnownNetwork>,
}

impl EmailEntry {
    /// Drops what has expired (old failures, networks no longer trusted).
    fn refresh(&mut self, now: Instant, rules: &EmailRules) {
        self.strangers.forget_old_failures(now, &rules.backoff);
        for known in &mut self.known {
            known.attempts.forget_old_failures(now, &rules.backoff);
        }
        self.known.retain(|known| {
            known.is_trusted(now, rules) || known.attempts.holds_anything(now, &rules.backoff)
        });
    }

    fn judge(&self, network: Network, now: Instant, rules: &EmailRules) -> Judge {
        let trusted = network != Network::Unknown
            && self
                .known
                .iter()
                .any(|known| known.network == network && known.is_trusted(now, rules));
        if trusted {
            Judge::Known(network)
        } else {
            Judge::Strangers
        }
    }

    /// The back-off `judge` names. A known network is found as long as it has
    /// an attempt in flight: neither `refresh` nor `signed_in` drops one then.
    fn backoff(&self, judge: Judge) -> Option<&Backoff> {
        match judge {
            Judge::Known(network) => self
                .known
                .iter()
                .find(|known| known.network == network)
                .map(|known| &known.attempts),
            Judge::Strangers => Some(&self.strangers),
        }
    }

    fn backoff_mut(&mut self, judge: Judge) -> Option<&mut Backoff> {
        match judge {
            Judge::Known(network) => self
                .known
                .iter_mut()
                .find(|known| known.network == network)
                .map(|known| &mut known.attempts),
            Judge::Strangers => Some(&mut self.strangers),
        }
    }

    /// Makes `network` known (again) for this email, with no failures. The
    /// strangers' failures stay: the owner signing in must not reset the
    /// count of whoever guesses from elsewhere.
    fn signed_in(&mut self, network: Network, now: Instant, rules: &EmailRules) {
        if network == Network::Unknown || rules.known_per_email == 0 {
            return;
        }
        if let Some(known) = self.known.iter_mut().find(|known| known.network == network) {
            known.signed_in_at = now;
            known.attempts.failures = 0;
            known.attempts.last_failure = None;
            return;
        }
        if self.known.len() >= rules.known_per_email {
            // Replace the least recent sign-in, but never one with an attempt
            // in flight (its reservation must find its way back).
            let replaceable = self
                .known
                .iter()
                .enumerate()
                .filter(|(_, known)| known.attempts.in_flight == 0)
                .min_by_key(|(_, known)| known.signed_in_at)
                .map(|(index, _)| index);
            let Some(index) = replaceable else { return };
            self.known.swap_remove(index);
        }
        // Most users sign in from one or two networks: grow one at a time
        // rather than by Vec's default of four.
        self.known.reserve_exact(1);
        self.known.push(KnownNetwork {
            network,
            attempts: Backoff::default(),
            signed_in_at: now,
        });
    }
}

impl Tracked for EmailEntry {
    type Rules = EmailRules;

    fn is_live(&self, now: Instant, rules: &EmailRules) -> bool {
        self.strangers.holds_anything(now, &rules.backoff)
            || self.known.iter().any(|known| {
                known.is_trusted(now, rules) || known.attempts.holds_anything(now, &rules.backoff)
            })
    }

    /// Only known networks left: forgetting them just makes their owner a
    /// stranger again.
    fn may_be_evicted(&self, now: Instant, rules: &EmailRules) -> bool {
        !self.strangers.holds_anything(now, &rules.backoff)
            && self
                .known
                .iter()
                .all(|known| !known.attempts.holds_anything(now, &rules.backoff))
    }
}

/// Attempts from one network in the current fixed window.
#[derive(Debug, Default)]
struct AttemptWindow {
    started: Option<Instant>,
    count: u32,
}

impl AttemptWindow {
    /// Counts an attempt, or refuses it with the time until the window ends.
    fn count(&mut self, now: Instant, rules: &WindowRules) -> Result<(), Duration> {
        let current = self
            .started
            .filter(|started| now.duration_since(*started) < rules.window);
        match current {
            Some(started) if self.count >= rules.limit => Err(started + rules.window - now),
            Some(_) => {
                self.count += 1;
                Ok(())
            }
            None if rules.limit == 0 => Err(rules.window),
            None => {
                self.started = Some(now);
                self.count = 1;
                Ok(())
            }
        }
    }
}

impl Tracked for AttemptWindow {
    type Rules = WindowRules;

    fn is_live(&self, now: Instant, rules: &WindowRules) -> bool {
        self.started
            .is_some_and(|started| now.duration_since(started) < rules.window)
    }

    /// Never: dropping a window early would hand its network a fresh one.
    fn may_be_evicted(&self, _now: Instant, _rules: &WindowRules) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ThrottleOptions {
        ThrottleOptions {
            failures_per_email: 3,
            email_window: Duration::from_secs(15 * 60),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            known_address_ttl: Duration::from_secs(24 * 60 * 60),
            known_addresses_per_email: 2,
            max_tracked_emails: 1_000,
            // High, so the email tests are not throttled by address; the
            // address tests use `address_options`.
            attempts_per_address: 1_000,
            address_window: Duration::from_secs(10),
            max_tracked_addresses: 1_000,
            upstream_calls_per_address: 3,
            upstream_address_window: Duration::from_secs(5),
            ..ThrottleOptions::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_calls_are_counted_per_network_and_the_window_frees_them() {
        let throttle = Throttle::new(options());
        let attacker = ClientAddress::Ip("203.0.113.7".parse().expect("ip"));
        let neighbour = ClientAddress::Ip("198.51.100.9".parse().expect("ip"));
        for _ in 0..3 {
            assert!(throttle.begin_upstream_call(attacker).is_ok());
        }
        let wait = throttle
            .begin_upstream_call(attacker)
            .expect_err("the fourth call in the window is refused");
        assert!(wait <= Duration::from_secs(5), "{wait:?}");
        assert!(
            throttle.begin_upstream_call(neighbour).is_ok(),
            "another network has its own allowance"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(throttle.begin_upstream_call(attacker).is_ok());
    }

    #[test]
    fn a_zero_upstream_allowance_turns_the_limit_off() {
        let throttle = Throttle::new(ThrottleOptions {
            upstream_calls_per_address: 0,
            ..options()
        });
        let address = ClientAddress::Ip("203.0.113.7".parse().expect("ip"));
        for _ in 0..100 {
            assert!(throttle.begin_upstream_call(address).is_ok());
        }
    }

    fn address_options() -> ThrottleOptions {
        ThrottleOptions {
            attempts_per_address: 5,
            ..options()
        }
    }

    fn email(value: &str) -> Email {
        Email::parse("email", value).expect("email")
    }

    fn ip(value: &str) -> ClientAddress {
        ClientAddress::Ip(value.parse().expect("ip"))
    }

    const ATTACKER: &str = "203.0.113.66";
    const OWNER: &str = "198.51.100.7";

    fn fail_from(
        throttle: &Throttle,
        user: &Email,
        address: ClientAddress,
    ) -> Result<(), Duration> {
        throttle
            .begin_login(user, address)
            .map(LoginAttempt::failed)
    }

    /// Spends the free allowance (3) of `user` from `address` on wrong passwords.
    fn spend_allowance(throttle: &Throttle, user: &Email, address: ClientAddress) {
        for _ in 0..3 {
            fail_from(throttle, user, address).expect("within the free allowance");
        }
    }

    /// Whether a login attempt may start now (it is released at once).
    fn allows(throttle: &Throttle, user: &Email, address: ClientAddress) -> bool {
        throttle.begin_login(user, address).is_ok()
    }

    /// `count` emails nobody has tried yet: `{prefix}{index}@example.com`.
    fn fresh_emails(prefix: &str, count: usize) -> impl Iterator<Item = Email> {
        (0..count).map(move |index| email(&format!("{prefix}{index}@example.com")))
    }

    /// Signs `user` in from `address`, which makes it a known network.
    fn sign_in(throttle: &Throttle, user: &Email, address: ClientAddress) {
        throttle
            .begin_login(user, address)
            .expect("signing in is allowed")
            .succeeded();
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_count_so_concurrent_guesses_stop_at_the_allowance() {
        let throttle = Throttle::new(options());
        let victim = email("victim@example.com");

        let in_flight: Vec<_> = (0..30)
            .filter_map(|_| throttle.begin_login(&victim, ip(ATTACKER)).ok())
            .collect();

        assert_eq!(
            in_flight.len(),
            3,
            "no more than the free allowance at once"
        );
        drop(in_flight);
        assert!(
            allows(&throttle, &victim, ip(ATTACKER)),
            "attempts dropped without a verdict are not failures"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_past_the_allowance_back_off_exponentially_up_to_the_cap() {
        let throttle = Throttle::new(options());
        let victim = email("victim@example.com");
        spend_allowance(&throttle, &victim, ip(ATTACKER));

        let mut waits = Vec::new();
        for _ in 0..6 {
            let wait = throttle
                .begin_login(&victim, ip(ATTACKER))
                .expect_err("backing off");
            waits.push(wait.as_secs());
            tokio::time::advance(wait).await;
            fail_from(&throttle, &victim, ip(ATTACKER)).expect("after the wait");
        }

        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
        let other = email("VICTIM@example.com");
        assert!(
            !allows(&throttle, &other, ip(OWNER)),
            "emails are compared case-insensitively"
        );
        assert!(
            allows(&throttle, &email("someone@example.com"), ip(ATTACKER)),
            "other emails are unaffected"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_forgotten_a_window_after_the_last_one() {
        let throttle = Throttle::new(options());
        let user = email("user@example.com");
        spend_allowance(&throttle, &user, ip(ATTACKER));
        tokio::time::advance(Duration::from_secs(15 * 60)).await;
        spend_allowance(&throttle, &user, ip(ATTACKER));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stranger_s_failures_do_not_lock_out_the_owner_from_a_network_they_signed_in_from() {
        let throttle = Throttle::new(options());
        let owner = email("owner@example.com");
        sign_in(&throttle, &owner, ip(OWNER));
        spend_allowance(&throttle, &owner, ip(ATTACKER));
        assert!(!allows(&throttle, &owner, ip(ATTACKER)));
        assert!(
            !allows(&throttle, &owner, ip("192.0.2.1")),
            "every stranger shares the back-off"
        );

        let attempt = throttle.begin_login(&owner, ip(OWNER));

        attempt.expect("the owner is not locked out").succeeded();
        assert!(
            !allows(&throttle, &owner, ip(ATTACKER)),
            "the owner's success hands the attacker no fresh guesses"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_from_a_known_network_back_off_on_their_own() {
        let throttle = Throttle::new(options());
        let owner = email("owner@example.com");
        sign_in(&throttle, &owner, ip(OWNER));
        spend_allowance(&throttle, &owner, ip(OWNER));

        assert!(!allows(&throttle, &owner, ip(OWNER)));
        assert!(
            allows(&throttle, &owner, ip(ATTACKER)),
            "strangers were not charged for the owner's typos"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_address_is_never_a_known_network() {
        let throttle = Throttle::new(options());
        let owner = email("owner@example.com");
        sign_in(&throttle, &owner, ClientAddress::Unknown);
        spend_allowance(&throttle, &owner, ip(ATTACKER));

        assert!(!allows(&throttle, &owner, ClientAddress::Unknown));
    }

    #[tokio::test(start_paused = true)]
    async fn one_network_trying_many_emails_is_throttled_until_its_window_ends() {
        let throttle = Throttle::new(address_options());
        for user in fresh_emails("user", 5) {
            fail_from(&throttle, &user, ip(ATTACKER)).expect("allowed");
        }

        let wait = throttle
            .begin_login(&email("user9@example.com"), ip(ATTACKER))
            .expect_err("address throttled");

        assert_eq!(wait, Duration::from_secs(10));
        assert!(
            throttle
                .begin_sign_up(&email("new@example.com"), ip(ATTACKER))
                .is_err(),
            "sign-up counts against the same allowance"
        );
        assert!(allows(&throttle, &email("user9@example.com"), ip(OWNER)));
        tokio::time::advance(wait).await;
        assert!(allows(&throttle, &email("user9@example.com"), ip(ATTACKER)));
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_in_one_ipv6_slash_64_share_an_allowance() {
        let throttle = Throttle::new(address_options());
        for (index, user) in fresh_emails("user", 5).enumerate() {
            let rotated = ip(&format!("2001:db8:1:2::{:x}", index + 1));
            throttle.begin_sign_up(&user, rotated).expect("allowed");
        }

        assert!(
            throttle
                .begin_sign_up(&email("user9@example.com"), ip("2001:db8:1:2:ffff::9"))
                .is_err()
        );
        assert!(
            throttle
                .begin_sign_up(&email("user9@example.com"), ip("2001:db8:1:3::1"))
                .is_ok(),
            "the next /64 is another subscriber"
        );
    }

    #[test]
    fn an_ipv4_client_on_a_dual_stack_socket_is_its_ipv4_address() {
        assert_eq!(
            Network::from(ip("::ffff:203.0.113.66")),
            Network::from(ip(ATTACKER))
        );
        assert_ne!(
            Network::from(ip("2001:db8::1")),
            Network::from(ClientAddress::Unknown)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn callers_without_a_usable_address_share_one_allowance() {
        let throttle = Throttle::new(address_options());
        for user in fresh_emails("user", 5) {
            throttle
                .begin_sign_up(&user, ClientAddress::Unknown)
                .expect("allowed");
        }

        assert!(
            throttle
                .begin_sign_up(&email("user9@example.com"), ClientAddress::Unknown)
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sign_up_for_an_email_in_back_off_is_refused() {
        let throttle = Throttle::new(options());
        let victim = email("victim@example.com");
        spend_allowance(&throttle, &victim, ip(ATTACKER));

        assert!(throttle.begin_sign_up(&victim, ip(OWNER)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_an_insert_costs_bounded_work_and_the_limits_still_hold() {
        let throttle = Throttle::new(ThrottleOptions {
            max_tracked_emails: 10_000,
            attempts_per_address: u32::MAX,
            ..options()
        });
        let victim = email("victim@example.com");
        spend_allowance(&throttle, &victim, ip(ATTACKER));
        // Flood: one failure each for as many fresh emails as fit.
        for user in fresh_emails("flood", 9_999) {
            fail_from(&throttle, &user, ip(ATTACKER)).expect("fresh emails are allowed");
        }
        assert_eq!(throttle.lock().emails.len(), 10_000, "the table is full");

        let mut most_examined = 0;
        let mut overflow_refusals = 0;
        for user in fresh_emails("more", 100) {
            let before = throttle.lock().emails.examined();
            let result = fail_from(&throttle, &user, ip(ATTACKER));
            let examined = throttle.lock().emails.examined() - before;
            most_examined = most_examined.max(examined);
            overflow_refusals += usize::from(result.is_err());
        }

        assert!(
            most_examined <= table::SWEEP_STEP + table::EVICTION_PROBES,
            "an insert at the cap examined {most_examined} entries"
        );
        assert_eq!(throttle.lock().emails.len(), 10_000, "still capped");
        assert!(
            !allows(&throttle, &victim, ip(ATTACKER)),
            "the flood did not evict the victim's back-off"
        );
        assert_eq!(
            overflow_refusals,
            100 - 3,
            "emails that found no room share one allowance: the flood is throttled"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_a_sign_in_record_makes_room_for_a_new_email() {
        let throttle = Throttle::new(ThrottleOptions {
            max_tracked_emails: 3,
            ..options()
        });
        let owner = email("owner@example.com");
        sign_in(&throttle, &owner, ip(OWNER));
        for user in fresh_emails("user", 2) {
            fail_from(&throttle, &user, ip(ATTACKER)).expect("allowed");
        }

        for _ in 0..3 {
            fail_from(&throttle, &email("new@example.com"), ip(ATTACKER)).expect("room was made");
        }

        assert!(
            !allows(&throttle, &email("new@example.com"), ip(ATTACKER)),
            "the new email has its own entry, and its own back-off"
        );
        assert!(
            allows(&throttle, &email("another@example.com"), ip(ATTACKER)),
            "the table is full again, but the overflow allowance is untouched"
        );
    }
}
