//! A development PKI for the gateway's TLS listeners: one CA, a server certificate, and client
//! certificates with SPIFFE identities for the internal mTLS listener (the payment service, the
//! website's mailer, and an intruder nobody allow-lists).
//!
//! [`DevPki::generate`] writes PEM files to a directory and, when run again, keeps a CA that is
//! still valid so certificates already handed out keep chaining; only missing or invalid leaves
//! are reissued. It also mints the odd certificates tests need (expired, from a foreign CA). It
//! is not a production PKI: there is no revocation, and keys sit unencrypted on disk (mode 0600).

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use secrecy::{ExposeSecret as _, SecretString};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// The CA's common name; also how a reloaded CA is recognised as ours.
const CA_COMMON_NAME: &str = "licensing-gateway sandbox development CA";
const ORGANIZATION: &str = "licensing-gateway sandbox";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Why the PKI could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("could not access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not build a certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("invalid certificate identity {0:?}")]
    Identity(String),
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: SecretString,
}

/// A CA nobody trusts and a client certificate it issued (claiming the payment service's id).
#[derive(Clone, Debug)]
pub struct ForeignPki {
    pub ca_cert_pem: String,
    pub client: PemPair,
}

/// Where [`DevPki::generate`] put each file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PkiFiles {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub payment_service_cert: PathBuf,
    pub payment_service_key: PathBuf,
    pub website_mailer_cert: PathBuf,
    pub website_mailer_key: PathBuf,
    pub intruder_cert: PathBuf,
    pub intruder_key: PathBuf,
}

impl PkiFiles {
    fn in_dir(dir: &Path) -> Self {
        PkiFiles {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            payment_service_cert: dir.join("payment-service.pem"),
            payment_service_key: dir.join("payment-service.key"),
            website_mailer_cert: dir.join("website-mailer.pem"),
            website_mailer_key: dir.join("website-mailer.key"),
            intruder_cert: dir.join("intruder.pem"),
            intruder_key: dir.join("intruder.key"),
        }
    }
}

/// The development PKI: its files, and its CA for issuing more certificates.
#[derive(Debug)]
pub struct DevPki {
    files: PkiFiles,
    ca_cert_pem: String,
    ca_key_pem: SecretString,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy)]
enum LeafRole {
    Server,
    Client,
}

/// A leaf [`DevPki::generate`] keeps on disk.
#[derive(Clone, Copy)]
enum Leaf {
    Server,
    Client(&'static str),
}

impl DevPki {
    /// The SPIFFE trust domain of the client identities.
    pub const TRUST_DOMAIN: &'static str = "licensing-gateway.sandbox";
    /// The identity the gateway should allow to call the issuance service.
    pub const PAYMENT_SERVICE_ID: &'static str =
        "spiffe://licensing-gateway.sandbox/payment-service";
    /// The identity of the website's mailer, which mints password-reset tokens
    /// (`AccountService.CreatePasswordResetToken`) for its own reset mail.
    pub const WEBSITE_MAILER_ID: &'static str = "spiffe://licensing-gateway.sandbox/website-mailer";
    /// A client of the same CA that is not meant to be allow-listed.
    pub const INTRUDER_ID: &'static str = "spiffe://licensing-gateway.sandbox/intruder";
    /// The names the server certificate is valid for.
    pub const SERVER_NAMES: &'static [&'static str] = &["localhost", "127.0.0.1", "::1"];

    /// Writes (or reuses) `ca`, `server`, `payment-service`, `website-mailer` and `intruder`
    /// `.pem`/`.key` in `dir`.
    ///
    /// A CA that parses, is ours, matches its key and has at least a day left is kept, and so
    /// is each leaf it validly issued; anything else is (re)generated.
    pub fn generate(dir: &Path) -> Result<DevPki, PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let files = PkiFiles::in_dir(dir);

        let reused_ca = load_valid_ca(&files);
        let ca_was_reused = reused_ca.is_some();
        let (ca_cert_pem, ca_key) = match reused_ca {
            Some(ca) => ca,
            None => {
                let (cert_pem, key) = new_ca(CA_COMMON_NAME)?;
                write_file(&files.ca_cert, cert_pem.as_bytes(), false)?;
                write_file(&files.ca_key, key.serialize_pem().as_bytes(), true)?;
                (cert_pem, key)
            }
        };
        let pki = DevPki {
            ca_key_pem: SecretString::from(ca_key.serialize_pem()),
            files,
            ca_cert_pem,
        };

        let leaves = [
            (&pki.files.server_cert, &pki.files.server_key, Leaf::Server),
            (
                &pki.files.payment_service_cert,
                &pki.files.payment_service_key,
                Leaf::Client(Self::PAYMENT_SERVICE_ID),
            ),
            (
                &pki.files.website_mailer_cert,
                &pki.files.website_mailer_key,
                Leaf::Client(Self::WEBSITE_MAILER_ID),
            ),
            (
                &pki.files.intruder_cert,
                &pki.files.intruder_key,
                Leaf::Client(Self::INTRUDER_ID),
            ),
        ];
        for (cert_path, key_path, leaf) in leaves {
            if ca_was_reused && pki.leaf_is_valid(cert_path, key_path) {
                continue;
            }
            let leaf = match leaf {
                Leaf::Server => pki.issue_server_cert()?,
                Leaf::Client(identity) => pki.issue_client_cert(
                    identity,
                    SystemTime::now() - DAY,
                    SystemTime::now() + 365 * DAY,
                )?,
            };
            write_file(cert_path, leaf.cert_pem.as_bytes(), false)?;
            write_file(key_path, leaf.key_pem.expose_secret().as_bytes(), true)?;
        }
        Ok(pki)
    }

    /// Returns the paths of the files written.
    pub fn files(&self) -> &PkiFiles {
        &self.files
    }

    /// Returns the CA certificate (the trust anchor for both server and client certificates).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// Issues a client certificate from this CA for `identity`: a URI SAN if it contains
    /// `://` (a SPIFFE id), an IP SAN if it parses as an address, a DNS SAN otherwise. The
    /// validity window is the caller's, so tests can mint expired or not-yet-valid ones.
    pub fn issue_client_cert(
        &self,
        identity: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<PemPair, PkiError> {
        let mut params = leaf_params(vec![identity_san(identity)?], LeafRole::Client);
        params.distinguished_name = common_name(identity.rsplit('/').next().unwrap_or(identity));
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        self.sign_leaf(&params)
    }

    /// Returns a CA that nobody trusts and a client certificate it issued, which claims the
    /// payment service's identity: a gateway must still refuse it.
    pub fn generate_foreign_ca() -> Result<ForeignPki, PkiError> {
        let (ca_cert_pem, ca_key) = new_ca("untrusted foreign CA")?;
        let issuer = Issuer::new(ca_params("untrusted foreign CA"), ca_key);
        let mut params = leaf_params(
            vec![identity_san(Self::PAYMENT_SERVICE_ID)?],
            LeafRole::Client,
        );
        params.distinguished_name = common_name("payment-service");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(ForeignPki {
            ca_cert_pem,
            client: PemPair {
                cert_pem: cert.pem(),
                key_pem: SecretString::from(key.serialize_pem()),
            },
        })
    }

    /// Issues a new server certificate (and key) from this CA for [`Self::SERVER_NAMES`], valid
    /// for a year: what a rotation would install.
    pub fn issue_server_cert(&self) -> Result<PemPair, PkiError> {
        let names = Self::SERVER_NAMES
            .iter()
            .map(|name| identity_san(name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut params = leaf_params(names, LeafRole::Server);
        params.distinguished_name = common_name("localhost");
        params.not_before = (SystemTime::now() - DAY).into();
        params.not_after = (SystemTime::now() + 365 * DAY).into();
        self.sign_leaf(&params)
    }

    fn sign_leaf(&self, params: &CertificateParams) -> Result<PemPair, PkiError> {
        let ca_key = KeyPair::from_pem(self.ca_key_pem.expose_secret())?;
        // The issuer is rebuilt from the same parameters the CA was made with: only its
        // name, key usages and key (for the key identifier and signature) end up in a leaf.
        let issuer = Issuer::new(ca_params(CA_COMMON_NAME), ca_key);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: SecretString::from(key.serialize_pem()),
        })
    }

    fn leaf_is_valid(&self, cert_path: &Path, key_path: &Path) -> bool {
        let (Ok(cert_pem), Ok(key_pem)) = (fs::read(cert_path), fs::read_to_string(key_path))
        else {
            return false;
        };
        let Ok(key) = KeyPair::from_pem(&key_pem) else {
            return false;
        };
        let Some(ca_der) = pem_to_der(self.ca_cert_pem.as_bytes()) else {
            return false;
        };
        let Ok((_, ca)) = X509Certificate::from_der(&ca_der) else {
            return false;
        };
        let Some(leaf_der) = pem_to_der(&cert_pem) else {
            return false;
        };
        let Ok((_, leaf)) = X509Certificate::from_der(&leaf_der) else {
            return false;
        };
        still_valid_for_a_day(&leaf)
            && leaf.public_key().raw == key.subject_public_key_info().as_slice()
            && leaf.issuer().as_raw() == ca.subject().as_raw()
            && authority_key_id(&leaf).is_some_and(|id| Some(id) == subject_key_id(&ca))
    }
}

fn load_valid_ca(files: &PkiFiles) -> Option<(String, KeyPair)> {
    let cert_pem = fs::read_to_string(&files.ca_cert).ok()?;
    let key = KeyPair::from_pem(&fs::read_to_string(&files.ca_key).ok()?).ok()?;
    let der = pem_to_der(cert_pem.as_bytes())?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let ours = cert
        .subject()
        .iter_common_name()
        .any(|name| name.as_str() == Ok(CA_COMMON_NAME));
    let usable = ours
        && cert.is_ca()
        && still_valid_for_a_day(&cert)
        && cert.public_key().raw == key.subject_public_key_info().as_slice();
    usable.then_some((cert_pem, key))
}

fn still_valid_for_a_day(cert: &X509Certificate<'_>) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    let validity = cert.validity();
    let Ok(not_before) = u64::try_from(validity.not_before.timestamp()) else {
        return false;
    };
    let Ok(not_after) = u64::try_from(validity.not_after.timestamp()) else {
        return false;
    };
    not_before <= now && now + DAY.as_secs() < not_after
}

fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
}

fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|extension| match extension.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(id) => {
                id.key_identifier.as_ref().map(|id| id.0)
            }
            _ => None,
        })
}

fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    Some(parsed.contents)
}

fn ca_params(common: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(common);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (SystemTime::now() - DAY).into();
    params.not_after = (SystemTime::now() + 10 * 365 * DAY).into();
    params
}

fn new_ca(common: &str) -> Result<(String, KeyPair), PkiError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(common).self_signed(&key)?;
    Ok((cert.pem(), key))
}

fn leaf_params(subject_alt_names: Vec<SanType>, role: LeafRole) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = subject_alt_names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        LeafRole::Server => ExtendedKeyUsagePurpose::ServerAuth,
        LeafRole::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    // Lets a later `generate` check that a leaf on disk came from the CA on disk.
    params.use_authority_key_identifier_extension = true;
    params
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    distinguished_name
}

fn identity_san(identity: &str) -> Result<SanType, PkiError> {
    let invalid = |_| PkiError::Identity(identity.to_owned());
    if identity.contains("://") {
        return Ok(SanType::URI(identity.try_into().map_err(invalid)?));
    }
    if let Ok(address) = identity.parse() {
        return Ok(SanType::IpAddress(address));
    }
    Ok(SanType::DnsName(identity.try_into().map_err(invalid)?))
}

/// Writes a file whole; private keys get mode 0600 even if the file already existed.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let io_error = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_error)?;
    }
    file.write_all(contents).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Returns the SAN entries of a PEM certificate as strings (URIs, DNS names and IPs), for tests
/// and for a gateway's own start-up checks.
pub fn subject_alt_names(cert_pem: &str) -> Option<Vec<String>> {
    let der = pem_to_der(cert_pem.as_bytes())?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    Some(
        names
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes)
                        .ok()
                        .map(|octets| std::net::IpAddr::from(octets).to_string()),
                    16 => <[u8; 16]>::try_from(*bytes)
                        .ok()
                        .map(|octets| std::net::IpAddr::from(octets).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
    )
}
