//! Loading and checking TLS material for the listeners.
//!
//! Certificates and keys are read from PEM files and checked before the
//! server starts: a missing file, a key that does not belong to the
//! certificate, or a client CA bundle without certificates stops start-up
//! with a message naming the file. Key material never appears in errors.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// A TLS set-up problem, naming the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: String },
    #[error("the private key {key} does not match the certificate {cert}")]
    KeyMismatch { cert: String, key: String },
}

/// Reads and checks a certificate chain and its key, for a server identity.
pub fn load_identity(cert_path: &Path, key_path: &Path) -> Result<Identity, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs = parse_certificates(cert_path, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key_path.display().to_string(),
    })?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| TlsError::NoKey {
            path: key_path.display().to_string(),
        })?;
    rustls::sign::CertifiedKey::new(certs, signing_key)
        .keys_match()
        .map_err(|_| TlsError::KeyMismatch {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
        })?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

/// Reads and checks a CA bundle that client certificates must chain to.
pub fn load_client_ca(path: &Path) -> Result<Certificate, TlsError> {
    let pem = read(path)?;
    parse_certificates(path, &pem)?;
    Ok(Certificate::from_pem(pem))
}

/// Server TLS that requires a client certificate signed by `client_ca`.
///
/// The handshake fails for a missing certificate, one from another CA, or an
/// expired one; *which* valid client may call what is decided afterwards from
/// the certificate's SAN (see `grpc::issuance`).
pub fn mutual_tls(identity: Identity, client_ca: Certificate) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(client_ca)
        .client_auth_optional(false)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}
