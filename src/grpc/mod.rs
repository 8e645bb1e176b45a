//! The only module that knows tonic: thin adapters from the `licensing.v1`
//! contract to the use cases, credential extraction, the one error-to-status
//! table, and the tower stacks of the two listeners.
//!
//! An RPC method does four things: authenticate, convert in, call the use
//! case, convert out. Business rules, retries and upstream HTTP live elsewhere.

mod account;
mod account_convert;
mod auth;
mod client_address;
mod client_gate;
mod connect;
mod connection;
mod context;
mod convert;
mod issuance;
mod ledger_health;
mod listener;
mod malformed;
mod overload;
mod portal;
mod request_timeout;
mod rpc_metrics;
mod server;
mod status;
mod user;

pub use account::AccountApi;
pub use client_address::ClientAddressPolicy;
#[cfg(feature = "fuzzing")]
pub(crate) use connect::fuzz_json_round_trip;
pub use context::Deadlines;
pub use issuance::IssuanceApi;
pub use listener::{GrpcListener, LIVENESS_SERVICE, ServeError, ServingHealth};
pub use server::{PublicOptions, ServerLimits};
pub use status::ERROR_DOMAIN;
pub use user::UserApi;

/// Code generated from `proto/licensing/v1`.
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod pb {
    tonic::include_proto!("licensing.v1");

    /// The encoded descriptor set of the contract, for server reflection and
    /// for `buf curl --schema`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("licensing_v1_descriptor");
}
