#![allow(unreachable_pub)]

//! In-process black-box tests: each starts the gateway's `Application` in
//! this test process, on port 0 against the sandbox Cryptlex (a real HTTP
//! server), and calls it over real sockets like a client would. Tests that
//! run the `licensing-gateway` executable itself are in `tests/process/`.

#[path = "../support/mod.rs"]
mod support;

mod account;
mod admission;
mod audit;
mod coherence;
mod connect;
mod contract;
mod freshness;
mod grpc_web;
mod helpers;
mod hostile;
mod issuance;
mod lifecycle;
mod observability;
mod portal;
mod replicas;
mod resilience;
mod rotation;
mod sandbox_webhooks;
mod throttle;
mod token_abuse;
mod two_factor;
mod upstream_answers;
mod user;
mod webhooks;
