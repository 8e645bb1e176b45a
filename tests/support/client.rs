//! What a client of the gateway needs, wherever the gateway runs: the rustls
//! provider, a mutual-TLS channel to an internal listener, a bearer token on a
//! request, and the `ErrorInfo.reason` of a failed call.

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// Installs the process-wide rustls provider (once).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A mutual-TLS channel to an internal listener on `localhost:port` that trusts `ca_pem`,
/// presenting the given client certificate and key (or none).
pub async fn mtls_channel(
    port: u16,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://localhost:{port}"))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

/// Wraps `message` with `authorization: Bearer <token>` metadata.
pub fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    request
}

/// The `ErrorInfo.reason` of a status.
pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| {
            assert_eq!(info.domain, "licensing-gateway", "error domain");
            info.reason
        })
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"))
}

/// Asserts the code and `ErrorInfo.reason` of a failed call.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    expected_reason: &str,
) -> Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    assert_eq!(
        reason(&status),
        expected_reason,
        "unexpected reason: {status:?}"
    );
    status
}
