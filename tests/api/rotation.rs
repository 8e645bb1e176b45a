//! Certificate rotation on the internal listener without a restart.

use std::sync::Arc;
use std::time::Duration;

use cryptlex_sandbox::seed;
use licensing_gateway::grpc::pb::IssueLicenseRequest;
use licensing_gateway::grpc::pb::issue_license_request::User;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secrecy::ExposeSecret as _;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};

fn issue(request_id: &str) -> IssueLicenseRequest {
    IssueLicenseRequest {
        request_id: request_id.into(),
        user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
        ..Default::default()
    }
}

/// Starts a gateway whose TLS files are polled every 100 ms (`interval`).
async fn spawn_with_reload_interval(interval: &str) -> TestApp {
    spawn_app_with(TestOptions {
        env: vec![(
            "LICENSING_GATEWAY__TLS__RELOAD_INTERVAL".into(),
            interval.into(),
        )],
        ..TestOptions::default()
    })
    .await
}

/// Completes a fresh mutual-TLS handshake with the internal listener and
/// returns the leaf certificate it presented (DER).
async fn served_certificate(app: &TestApp) -> Vec<u8> {
    let files = app.sandbox.pki.files();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(app.sandbox.pki.ca_cert_pem().as_bytes()).expect("ca"))
        .expect("ca added");
    let client_certs = CertificateDer::pem_file_iter(&files.payment_service_cert)
        .expect("client cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("client cert parses");
    let client_key = PrivateKeyDer::from_pem_file(&files.payment_service_key).expect("client key");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(client_certs, client_key)
    .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(app.internal_addr.expect("internal"))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("handshake");
    let (_, connection) = tls.get_ref();
    assert_eq!(connection.alpn_protocol(), Some(&b"h2"[..]));
    connection
        .peer_certificates()
        .expect("a server certificate")[0]
        .to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

/// Installs a new server certificate and key, as cert-manager would.
fn rotate(app: &TestApp) -> Vec<u8> {
    let files = app.sandbox.pki.files();
    let rotated = app
        .sandbox
        .pki
        .issue_server_cert()
        .expect("new server cert");
    std::fs::write(&files.server_key, rotated.key_pem.expose_secret()).expect("write key");
    std::fs::write(&files.server_cert, &rotated.cert_pem).expect("write cert");
    der_of(&rotated.cert_pem)
}

/// Waits (up to 5 s) until new handshakes see `expected`.
async fn wait_for_certificate(app: &TestApp, expected: &[u8]) {
    for _ in 0..100 {
        if served_certificate(app).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the rotated certificate was never served");
}

#[tokio::test]
async fn a_rotated_server_certificate_is_served_to_new_connections_while_old_ones_keep_working() {
    // Arrange: a connection made before the rotation
    let app = spawn_with_reload_interval("100ms").await;
    let original = der_of(
        &std::fs::read_to_string(&app.sandbox.pki.files().server_cert).expect("server cert"),
    );
    assert_eq!(served_certificate(&app).await, original);
    let mut old_connection = app.payment_client().await;
    old_connection
        .issue_license(issue("rotation-1"))
        .await
        .expect("issued before the rotation");

    // Act
    let rotated = rotate(&app);

    // Assert: new handshakes see the new certificate...
    wait_for_certificate(&app, &rotated).await;
    assert_ne!(rotated, original);
    // ...new clients work with it...
    app.payment_client()
        .await
        .issue_license(issue("rotation-2"))
        .await
        .expect("issued on a new connection");
    // ...and the connection made before the rotation still works.
    old_connection
        .issue_license(issue("rotation-3"))
        .await
        .expect("issued on the old connection");
    app.stop().await;
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_previous_certificate() {
    // Arrange
    let app = spawn_with_reload_interval("100ms").await;
    let files = app.sandbox.pki.files().clone();
    let original = served_certificate(&app).await;

    // Act: a truncated certificate, then a key from another pair
    std::fs::write(&files.server_cert, "-----BEGIN CERTIFICATE-----\nAAAA\n").expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stray = app.sandbox.pki.issue_server_cert().expect("stray pair");
    std::fs::write(&files.server_key, stray.key_pem.expose_secret()).expect("write");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Assert: still the previous certificate, and calls still succeed
    assert_eq!(served_certificate(&app).await, original);
    app.payment_client()
        .await
        .issue_license(issue("broken-1"))
        .await
        .expect("issued with the previous certificate");
    app.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_certificates_when_polling_is_off() {
    // Arrange
    let app = spawn_with_reload_interval("0s").await;
    let rotated = rotate(&app);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ne!(
        served_certificate(&app).await,
        rotated,
        "no polling: nothing reloads by itself"
    );

    // Act
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());

    // Assert
    wait_for_certificate(&app, &rotated).await;
    app.stop().await;
}
