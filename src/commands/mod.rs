//! The binary's subcommands other than plain serving: the sandbox, the
//! configuration check, the upstream (go-live) check, the ledger
//! inspection tool and its audit against Cryptlex. Each is a library
//! function so `main` stays a dispatcher.

pub mod audit;
pub mod check_config;
pub mod check_upstream;
pub mod ledger;
#[cfg(feature = "sandbox")]
pub mod sandbox;
