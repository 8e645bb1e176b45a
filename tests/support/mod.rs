//! Shared by both test binaries, `api` (the gateway in the test process) and
//! `process` (the real executable as child processes); each includes it with
//! `#[path = "../support/mod.rs"] mod support;`.
//!
//! - [`ledger`]: where a test's ledger lives, and the one set of PostgreSQL
//!   helpers (a fresh schema per test, dropped at the end).
//! - [`client`]: what a client of the gateway needs (mutual TLS, a bearer
//!   token, the `ErrorInfo.reason` of a failure).
//! - [`issuance`]: issuing licenses and checking the answers, for the
//!   exactly-once tests of both binaries.

// Each binary uses a part of this module.
#![allow(dead_code)]

pub mod client;
pub mod issuance;
pub mod ledger;
