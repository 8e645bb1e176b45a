//! TLS for the two gRPC listeners: loading and checking certificate files,
//! and serving with certificates that are reloaded while the gateway runs.
//!
//! - `load`: PEM files into rustls types, with checks that name the file at
//!   fault (also used by `check-config`).
//! - `reload`: the listeners' rustls configuration with swappable
//!   certificates, the bounded TLS handshakes, and the watcher that reloads
//!   them.
//! - `per_address`: what each client address holds at once (connections,
//!   handshakes), IPv6 grouped by /64.
//!
//! Nothing here knows gRPC: the accept loop yields `tokio_rustls` streams.

mod load;
mod per_address;
mod reload;

pub(crate) use load::{TlsError, load_certified_key, load_client_verifier, validity};
pub(crate) use per_address::{AddressPermit, PerAddressLimit};
pub(crate) use reload::{HandshakeLimits, ReloadableTls, tls_incoming, watch};
