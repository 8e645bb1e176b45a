#![allow(unreachable_pub)]

//! Tests that drive the real `licensing-gateway` executable as child
//! processes (`CARGO_BIN_EXE_licensing-gateway`), from outside: gateways
//! killed mid-issue and restarted, two replicas on one PostgreSQL, the
//! `ledger` and `check-config` operator commands, clients nobody here wrote
//! (`buf curl`, Python grpcio), and the whole output at trace level searched
//! for secrets. The in-process tests are in `tests/api/`.

#[path = "../support/mod.rs"]
mod support;

mod outside_tools;
mod sandbox_process;

mod abuse;
mod check_config;
mod gateway_process;
mod outside_clients;
mod secrets;
