//! The account calls' counters, kept apart from the sign-in ones: guesses of
//! a secret other than the password, and password-reset mail.
//!
//! - **Two-factor codes per user** (`EnableTwoFactor`, `CreateRecoveryCodes`,
//!   `DisableTwoFactor`): the login back-off's rules (free failures, then a
//!   doubling wait up to its cap), keyed by the user. Whoever holds a stolen
//!   session can then try about a dozen codes an hour, against the three in a
//!   million a guess has, so the code that would turn two-factor
//!   authentication off cannot be found by trying.
//! - **Password resets with a token per account** (`ResetPassword`): the
//!   same back-off, keyed by the email address or user id the call names, and
//!   the login allowance per client network in a table of its own.
//! - **Reset mails** (`RequestPasswordReset`): a fixed window per email
//!   address and one per client network, counted whether or not the account
//!   exists, so neither the mail nor the refusal says which addresses have
//!   one.
//!
//! As in the sign-in throttle, attempts at a secret are reserved before the
//! upstream call and count as failures while in flight; keys are keyed
//! hashes (the same per-process key), and every table is capped.

use std::time::Duration;

use tokio::time::Instant;

use super::table::{Slot, Table};
use super::{
    AttemptWindow, Backoff, BackoffRules, ClientAddress, Network, Throttle, count_address,
};
use crate::domain::{AccountHolder, CryptlexId, Email};

/// A keyed hash naming one account (by id or by email) in one table.
pub(super) type AccountKey = [u8; 32];

/// The account calls' tables.
#[derive(Debug)]
pub(super) struct AccountState {
    /// Two-factor code failures, per user id.
    pub(super) codes: Table<AccountKey, Backoff>,
    /// Reset-token failures, per email address or user id named.
    pub(super) resets: Table<AccountKey, Backoff>,
    /// Reset attempts (with a token), per client network.
    pub(super) reset_addresses: Table<Network, AttemptWindow>,
    /// Reset mails asked for, per email address.
    pub(super) mail_emails: Table<AccountKey, AttemptWindow>,
    /// Reset mails asked for, per client network.
    pub(super) mail_addresses: Table<Network, AttemptWindow>,
}

impl AccountState {
    pub(super) fn new(max_tracked_emails: usize, max_tracked_addresses: usize) -> Self {
        Self {
            codes: Table::new("two-factor users", max_tracked_emails),
            resets: Table::new("password-reset accounts", max_tracked_emails),
            reset_addresses: Table::new("password-reset addresses", max_tracked_addresses),
            mail_emails: Table::new("reset-mail emails", max_tracked_emails),
            mail_addresses: Table::new("reset-mail addresses", max_tracked_addresses),
        }
    }
}

/// Which back-off table an attempt at a secret is reserved in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    TwoFactorCode,
    ResetToken,
}

impl Throttle {
    /// Reserves an attempt at a two-factor code of `user_id`, or refuses it
    /// with the time to wait.
    pub(crate) fn begin_code_attempt(
        &self,
        user_id: &CryptlexId,
    ) -> Result<SecretAttempt<'_>, Duration> {
        let key = self.account_key("user", user_id.as_str());
        let rules = &self.email_rules.backoff;
        let mut state = self.lock();
        let codes = &mut state.account.codes;
        let now = Instant::now();
        let slot = reserve(codes, key, now, rules)?;
        Ok(SecretAttempt {
            throttle: self,
            secret: Secret::TwoFactorCode,
            slot,
            settled: false,
        })
    }

    /// Reserves a password reset with a token for `holder` from `address`, or
    /// refuses it with the time to wait.
    pub(crate) fn begin_reset(
        &self,
        holder: &AccountHolder,
        address: ClientAddress,
    ) -> Result<SecretAttempt<'_>, Duration> {
        let key = match holder {
            AccountHolder::Id(id) => self.account_key("user", id.as_str()),
            AccountHolder::Email(email) => self.email_account_key(email),
        };
        let network = Network::from(address);
        let rules = &self.email_rules.backoff;
        let mut state = self.lock();
        let account = &mut state.account;
        let now = Instant::now();
        let slot = account.resets.slot(key, now, rules);
        let waiting = account
            .resets
            .get_mut(slot)
            .and_then(|backoff| backoff.wait(now, rules));
        if let Some(wait) = waiting {
            account.resets.forget_if_dead(slot, now, rules);
            return Err(wait);
        }
        if let Err(wait) = count_address(
            &mut account.reset_addresses,
            network,
            now,
            &self.address_rules,
        ) {
            account.resets.forget_if_dead(slot, now, rules);
            return Err(wait);
        }
        account
            .resets
            .get_mut(slot)
            .expect("nothing is removed while the lock is held")
            .reserve();
        Ok(SecretAttempt {
            throttle: self,
            secret: Secret::ResetToken,
            slot,
            settled: false,
        })
    }

    /// Counts a request for a reset mail to `email` from `address`, or
    /// refuses it with the time to wait. Counted the same whether or not an
    /// account has the address.
    pub(crate) fn begin_reset_mail(
        &self,
        email: &Email,
        address: ClientAddress,
    ) -> Result<(), Duration> {
        let key = self.email_account_key(email);
        let network = Network::from(address);
        let mut state = self.lock();
        let account = &mut state.account;
        let now = Instant::now();
        // The address first: a flood of fresh emails from one network is
        // refused before it can fill the email table.
        count_address(
            &mut account.mail_addresses,
            network,
            now,
            &self.reset_mail_address_rules,
        )?;
        let slot = account
            .mail_emails
            .slot(key, now, &self.reset_mail_email_rules);
        let window = account
            .mail_emails
            .get_mut(slot)
            .expect("a slot just handed out has its entry");
        let counted = window.count(now, &self.reset_mail_email_rules);
        account
            .mail_emails
            .forget_if_dead(slot, now, &self.reset_mail_email_rules);
        counted
    }

    /// The key of an account named by email: lower-cased, as Cryptlex
    /// compares addresses.
    fn email_account_key(&self, email: &Email) -> AccountKey {
        self.account_key("email", &email.as_str().to_lowercase())
    }

    /// A keyed hash of `kind` and `value`; the kinds keep an id that looks
    /// like an email apart from the email.
    fn account_key(&self, kind: &str, value: &str) -> AccountKey {
        use sha2::{Digest as _, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(self.hash_key);
        hasher.update(kind.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.finalize().into()
    }
}

/// Finds `key`'s back-off in `table` and reserves an attempt in it, or
/// returns the time to wait.
fn reserve(
    table: &mut Table<AccountKey, Backoff>,
    key: AccountKey,
    now: Instant,
    rules: &BackoffRules,
) -> Result<Slot<AccountKey>, Duration> {
    let slot = table.slot(key, now, rules);
    let backoff = table
        .get_mut(slot)
        .expect("a slot just handed out has its entry");
    if let Some(wait) = backoff.wait(now, rules) {
        table.forget_if_dead(slot, now, rules);
        return Err(wait);
    }
    backoff.reserve();
    Ok(slot)
}

/// A reserved attempt at a secret (a two-factor code, a reset token).
/// Settle it with [`failed`](Self::failed) or [`succeeded`](Self::succeeded);
/// dropping it unsettled (no verdict) releases it uncounted.
#[derive(Debug)]
#[must_use = "an unsettled attempt is released uncounted when dropped"]
pub(crate) struct SecretAttempt<'throttle> {
    throttle: &'throttle Throttle,
    secret: Secret,
    slot: Slot<AccountKey>,
    settled: bool,
}

impl SecretAttempt<'_> {
    /// Counts the attempt as a wrong secret.
    pub(crate) fn failed(mut self) {
        self.settle(Some(false));
    }

    /// Records a right secret: whoever knows it need not guess, so the
    /// failures counted so far are forgotten.
    pub(crate) fn succeeded(mut self) {
        self.settle(Some(true));
    }

    fn settle(&mut self, verdict: Option<bool>) {
        self.settled = true;
        let now = Instant::now();
        let rules = &self.throttle.email_rules.backoff;
        let mut state = self.throttle.lock();
        let table = match self.secret {
            Secret::TwoFactorCode => &mut state.account.codes,
            Secret::ResetToken => &mut state.account.resets,
        };
        // An entry with an attempt in flight is never dropped, so this finds it.
        let Some(backoff) = table.get_mut(self.slot) else {
            return;
        };
        backoff.release();
        match verdict {
            Some(false) => backoff.fail(now, rules),
            // The overflow entry is shared: one account's success must not
            // clear the others'.
            Some(true) if matches!(self.slot, Slot::Own(_)) => {
                backoff.failures = 0;
                backoff.last_failure = None;
            }
            Some(true) | None => {}
        }
        table.forget_if_dead(self.slot, now, rules);
    }
}

impl Drop for SecretAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ThrottleOptions;
    use super::*;

    fn options() -> ThrottleOptions {
        ThrottleOptions {
            failures_per_email: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            attempts_per_address: 5,
            address_window: Duration::from_secs(10),
            reset_requests_per_email: 2,
            reset_email_window: Duration::from_secs(60),
            reset_requests_per_address: 4,
            reset_address_window: Duration::from_secs(30),
            ..ThrottleOptions::default()
        }
    }

    fn user(id: &str) -> CryptlexId {
        CryptlexId::parse("user_id", id).expect("id")
    }

    fn email(value: &str) -> Email {
        Email::parse("email", value).expect("email")
    }

    fn ip(value: &str) -> ClientAddress {
        ClientAddress::Ip(value.parse().expect("ip"))
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_codes_back_off_per_user_and_a_right_one_clears_them() {
        let throttle = Throttle::new(options());
        let victim = user("victim");
        for _ in 0..3 {
            throttle
                .begin_code_attempt(&victim)
                .expect("within the free allowance")
                .failed();
        }
        let wait = throttle
            .begin_code_attempt(&victim)
            .expect_err("backing off");
        assert_eq!(wait, Duration::from_secs(1));
        assert!(
            throttle.begin_code_attempt(&user("someone-else")).is_ok(),
            "other users are unaffected"
        );

        tokio::time::advance(wait).await;
        throttle
            .begin_code_attempt(&victim)
            .expect("after the wait")
            .succeeded();
        for _ in 0..3 {
            throttle
                .begin_code_attempt(&victim)
                .expect("a right code forgot the failures")
                .failed();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_code_guesses_stop_at_the_allowance() {
        let throttle = Throttle::new(options());
        let victim = user("victim");
        let in_flight: Vec<_> = (0..20)
            .filter_map(|_| throttle.begin_code_attempt(&victim).ok())
            .collect();
        assert_eq!(in_flight.len(), 3);
        drop(in_flight);
        assert!(
            throttle.begin_code_attempt(&victim).is_ok(),
            "attempts without a verdict are not failures"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn code_failures_are_not_login_failures() {
        let throttle = Throttle::new(options());
        let victim = user("victim");
        for _ in 0..3 {
            throttle.begin_code_attempt(&victim).expect("free").failed();
        }
        let login = throttle.begin_login(&email("victim@example.com"), ip("203.0.113.1"));
        assert!(login.is_ok(), "separate counters");
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_reset_tokens_back_off_per_account_named_and_count_per_network() {
        let throttle = Throttle::new(options());
        let by_email = AccountHolder::Email(email("Victim@example.com"));
        let attacker = ip("203.0.113.66");
        for _ in 0..3 {
            throttle
                .begin_reset(&by_email, attacker)
                .expect("free")
                .failed();
        }
        let same_account = AccountHolder::Email(email("victim@EXAMPLE.com"));
        assert!(
            throttle
                .begin_reset(&same_account, ip("198.51.100.1"))
                .is_err(),
            "the account's back-off holds from anywhere, whatever the case"
        );
        // Two more attempts spend the network's allowance of five.
        for index in 0..2 {
            let other = AccountHolder::Id(user(&format!("user-{index}")));
            drop(throttle.begin_reset(&other, attacker).expect("allowed"));
        }
        let wait = throttle
            .begin_reset(&AccountHolder::Id(user("fresh")), attacker)
            .expect_err("the network is throttled");
        assert_eq!(wait, Duration::from_secs(10));
        tokio::time::advance(wait).await;
        assert!(
            throttle
                .begin_reset(&AccountHolder::Id(user("fresh")), attacker)
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reset_mails_are_limited_per_email_and_per_network() {
        let throttle = Throttle::new(options());
        let home = ip("198.51.100.7");
        let known = email("demo@example.com");
        for _ in 0..2 {
            throttle.begin_reset_mail(&known, home).expect("allowed");
        }
        let wait = throttle
            .begin_reset_mail(&known, ip("192.0.2.1"))
            .expect_err("the email's window is spent, from any network");
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
        // The network's window of four: two spent above (and one refused
        // elsewhere), two fresh addresses more.
        for index in 0..2 {
            throttle
                .begin_reset_mail(&email(&format!("user{index}@example.com")), home)
                .expect("allowed");
        }
        assert!(
            throttle
                .begin_reset_mail(&email("new@example.com"), home)
                .is_err(),
            "the network's window is spent"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(throttle.begin_reset_mail(&known, home).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn reset_mails_do_not_touch_the_sign_in_counters() {
        let throttle = Throttle::new(ThrottleOptions {
            attempts_per_address: 1,
            ..options()
        });
        let home = ip("198.51.100.7");
        for index in 0..4 {
            throttle
                .begin_reset_mail(&email(&format!("user{index}@example.com")), home)
                .expect("allowed");
        }
        assert!(
            throttle
                .begin_login(&email("demo@example.com"), home)
                .is_ok(),
            "the sign-in allowance of the network is untouched"
        );
    }
}
