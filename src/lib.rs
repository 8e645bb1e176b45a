//! licensing-gateway: a safe, fast gRPC and gRPC-Web front for the Cryptlex
//! licensing API.
//!
//! A website's backend calls the public listener on behalf of signed-in users
//! (`Login`, `GetProfile`, `ListMyLicenses`, ...), with the user's own Cryptlex
//! token in metadata. The payment service calls `IssueLicense` on a separate
//! mutual-TLS listener; the gateway holds the Cryptlex personal access token
//! for that and issues exactly one license per payment.
//!
//! # Layout
//! - [`config`]: the typed settings tree, loaded from TOML and environment.
//! - [`app`]: start-up; binds the listeners and serves until shutdown.
//! - [`telemetry`]: logging (and optional OTLP trace export) set-up.
//! - [`metrics`]: metric names, the naming convention, the Prometheus recorder.
//! - [`admin`]: the admin HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`commands`]: the `sandbox`, `check-config` and `ledger` subcommands.
//! - [`domain`]: parsed newtypes and values (emails, tokens, licenses).
//! - [`licensing`]: the use cases and their error enum.
//! - [`cryptlex`]: the only module that speaks HTTP to Cryptlex.
//! - [`ledger`]: the durable issuance ledger (SQLite, or PostgreSQL for replicas).
//! - [`grpc`]: the only module that knows tonic: adapters, status table, stacks.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod commands;
pub mod config;
pub mod cryptlex;
pub mod domain;
pub mod grpc;
pub mod ledger;
pub mod licensing;
pub mod metrics;
pub mod telemetry;
pub mod tls;
