//! Loading and checking TLS material for the listeners and `check-config`.
//!
//! Certificates and keys are read from PEM files and checked before the
//! server starts: a missing file, a key that does not belong to the
//! certificate, or a client CA bundle without certificates stops start-up
//! with a message naming the file. Key material never appears in errors.

use std::path::Path;
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer as _, X509Certificate};

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
    #[error("{path} holds a certificate that cannot be parsed: {reason}")]
    Unparsable { path: String, reason: String },
    #[error(
        "{path} holds a certificate that is not a CA (subject {subject:?} lacks basicConstraints CA:TRUE)"
    )]
    NotACa { path: String, subject: String },
    #[error("{path}: the client CA bundle cannot verify client certificates: {reason}")]
    Verifier { path: String, reason: String },
}

/// The ring provider, named explicitly so TLS set-up never depends on the
/// process-wide default having been installed.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key, as rustls uses them.
pub(crate) fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    certified_key(cert_path, &cert_pem, key_path, &key_pem)
}

fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let certs = parse_certificates(cert_path, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey {
        path: key_path.display().to_string(),
    })?;
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| TlsError::NoKey {
            path: key_path.display().to_string(),
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: cert_path.display().to_string(),
        key: key_path.display().to_string(),
    })?;
    Ok(certified)
}

/// Reads the CA bundle at `path` and builds a verifier requiring client
/// certificates that chain to it. Every certificate in the bundle must be a CA.
pub(crate) fn load_client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let pem = read(path)?;
    let certs = parse_certificates(path, &pem)?;
    for cert in &certs {
        let parsed = parse_x509(path, cert)?;
        let is_ca = parsed
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|constraints| constraints.value.ca);
        if !is_ca {
            return Err(TlsError::NotACa {
                path: path.display().to_string(),
                subject: parsed.subject().to_string(),
            });
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|error| TlsError::Verifier {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|error| TlsError::Verifier {
            path: path.display().to_string(),
            reason: error.to_string(),
        })
}

/// The validity window (`notBefore`, `notAfter`, unix seconds) shared by
/// every certificate in the PEM file at `path`: the latest start and the
/// earliest end.
pub(crate) fn validity(path: &Path) -> Result<(i64, i64), TlsError> {
    let pem = read(path)?;
    let certs = parse_certificates(path, &pem)?;
    validity_of(path, &certs)
}

/// Like [`validity`], for certificates already read.
pub(crate) fn validity_of(
    path: &Path,
    certs: &[CertificateDer<'_>],
) -> Result<(i64, i64), TlsError> {
    let mut window = (i64::MIN, i64::MAX);
    for cert in certs {
        let parsed = parse_x509(path, cert)?;
        let validity = parsed.validity();
        window.0 = window.0.max(validity.not_before.timestamp());
        window.1 = window.1.min(validity.not_after.timestamp());
    }
    Ok(window)
}

fn parse_x509<'a>(
    path: &Path,
    cert: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, TlsError> {
    X509Certificate::from_der(cert.as_ref())
        .map(|(_, parsed)| parsed)
        .map_err(|error| TlsError::Unparsable {
            path: path.display().to_string(),
            reason: error.to_string(),
        })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

pub(super) fn parse_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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
