//! licensing-gateway: a safe, fast gRPC and gRPC-Web front for the Cryptlex
//! licensing API.
//!
//! A website's backend calls the public listener on behalf of signed-in users
//! (`Login`, `GetProfile`, `ListMyLicenses`, ...), with the user's own Cryptlex
//! token in metadata. The payment service calls `IssueLicense` on a separate
//! mutual-TLS listener; the gateway holds the Cryptlex personal access token
//! for that and issues exactly one license per payment.
//!
//! A request flows one way: [`grpc`] adapter → [`licensing`] use case →
//! [`cryptlex`] client and [`ledger`] → back, with errors converted once at
//! each boundary ([`cryptlex::CryptlexError`] → [`licensing::LicensingError`]
//! → gRPC status in `grpc::status`).
//!
//! # Layout
//! - [`app`]: the composition root: builds the use cases, binds the
//!   listeners, serves, drains.
//! - [`config`]: the settings: raw file shapes, validation per section, the
//!   typed tree.
//! - [`telemetry`]: logging and optional OTLP trace export, with its own
//!   settings types.
//! - [`metrics`]: metric names and recording helpers (imports nothing of the
//!   gateway).
//! - [`admin`]: the admin HTTP listener: `/metrics`, `/healthz`, `/readyz`,
//!   and the state read at scrape time.
//! - [`tls`]: certificate loading and checks, hot reload, the TLS accept loop.
//! - [`commands`]: the `sandbox`, `check-config`, `check-upstream` and `ledger`
//!   subcommands.
//! - [`domain`]: parsed newtypes the rest speaks (emails, tokens, request ids,
//!   client identities and the allow-list, licenses).
//! - [`licensing`]: the use cases and their error enum; the read cache and
//!   the sign-in throttle.
//! - [`cryptlex`]: the only module that speaks HTTP to Cryptlex: endpoints,
//!   transport, retries, the rate budget, the circuit breaker.
//! - [`ledger`]: the durable exactly-once issuance ledger (SQLite, or
//!   PostgreSQL for replicas).
//! - [`coordination`]: with a PostgreSQL ledger, what replicas share through
//!   it: the upstream-call window and the relay of cache invalidations.
//! - [`grpc`]: the only module that knows tonic: adapters, conversions,
//!   credential extraction, the one status table, the listeners' stacks.
//! - [`webhook`]: Cryptlex's webhooks (signature, replay window, events)
//!   turned into cache invalidations; mounted on the public listener.
//! - `fuzzing` (feature `fuzzing` only): entry points for the fuzz targets.
//!
//! The stand-in for Cryptlex used by the `sandbox` subcommand and the tests
//! is its own crate, `cryptlex-sandbox`, behind the default `sandbox` feature.

#![forbid(unsafe_code)]

pub(crate) mod admin;
pub mod app;
pub mod commands;
pub mod config;
pub mod coordination;
pub mod cryptlex;
pub mod domain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod grpc;
pub mod ledger;
pub mod licensing;
pub(crate) mod metrics;
pub mod telemetry;
pub(crate) mod tls;
pub mod webhook;
