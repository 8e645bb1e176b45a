#![allow(unreachable_pub)]

//! Black-box tests: each starts the real gateway on port 0 against the
//! sandbox Cryptlex (a real HTTP server) and calls it like a client would.

mod check_config;
mod gateway_process;
mod grpc_web;
mod helpers;
mod hostile;
mod issuance;
mod observability;
mod resilience;
mod rotation;
mod user;
