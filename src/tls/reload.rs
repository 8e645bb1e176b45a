//! TLS for the listeners with certificates that can be replaced while
//! serving, for cert-manager's frequent rotations.
//!
//! tonic's `ServerTlsConfig` is fixed once built, so the listeners use
//! rustls directly: a [`ReloadableTls`] holds a `ServerConfig` whose
//! certificate resolver and client-certificate verifier read the *current*
//! certificate and CA from a lock, and [`tls_incoming`] runs the handshake
//! of each accepted connection (in its own task, so a slow client never
//! blocks the others) and hands the TLS streams to the gRPC server. tonic
//! implements `Connected` for `tokio_rustls` streams, so
//! `Request::peer_certs()` keeps working.
//!
//! Handshakes are bounded so that idle sockets cannot starve real clients:
//! the ClientHello must arrive within a short timeout, the whole handshake
//! within a longer one, and both the listener and each client address have a
//! cap on handshakes in progress ([`HandshakeLimits`]).
//!
//! [`watch`] reloads on SIGHUP and when a file's modification time or size
//! changes (Kubernetes swaps a secret's files through a symlink, which
//! changes both). A reload only takes effect when the new certificate, key
//! and CA all load and match; otherwise the old ones stay and an error is
//! logged. Established connections are never touched: a new certificate only
//! applies to new handshakes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt as _};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsAcceptor};
use tokio_stream::wrappers::ReceiverStream;

use super::load::{self as tls, TlsError};
use super::per_address::PerAddressLimit;
use crate::config::TlsFiles;
use crate::metrics;

/// Accepted TLS connections waiting for tonic to pick them up.
const ACCEPT_QUEUE: usize = 64;

/// One listener's TLS configuration, with certificates that can be reloaded.
#[derive(Debug)]
pub struct ReloadableTls {
    /// `public` or `internal`, for logs and metric labels.
    listener: &'static str,
    files: TlsFiles,
    client_ca: Option<PathBuf>,
    cert: Arc<CertSlot>,
    verifier: Option<Arc<VerifierSlot>>,
    config: Arc<rustls::ServerConfig>,
    /// Modification stamps of the files as last seen, to detect changes.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ReloadableTls {
    /// Loads the certificate, key and (for mutual TLS) client CA, and builds
    /// the server configuration advertising `alpn` (e.g. `h2`).
    pub fn load(
        listener: &'static str,
        files: &TlsFiles,
        client_ca: Option<&Path>,
        alpn: &[&[u8]],
    ) -> Result<Self, TlsError> {
        let certified = tls::load_certified_key(&files.cert, &files.key)?;
        let verifier = client_ca.map(tls::load_client_verifier).transpose()?;
        let cert = Arc::new(CertSlot(RwLock::new(Arc::new(certified))));
        let verifier = verifier.map(|verifier| Arc::new(VerifierSlot::new(verifier)));

        let builder = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Verifier {
                path: files.cert.display().to_string(),
                reason: error.to_string(),
            })?;
        let builder = match &verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(cert.clone());
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();

        let reloadable = Self {
            listener,
            files: files.clone(),
            client_ca: client_ca.map(Path::to_path_buf),
            cert,
            verifier,
            config: Arc::new(config),
            stamps: Mutex::new(Vec::new()),
        };
        *reloadable.lock_stamps() = reloadable.current_stamps();
        reloadable.publish_expiry();
        Ok(reloadable)
    }

    /// The listener this configuration serves.
    pub fn listener(&self) -> &'static str {
        self.listener
    }

    /// An acceptor using the current (and every future) certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// Reloads every file now. On failure the previous certificate, key and
    /// CA stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        // Remember what we tried, so a broken file is not retried every
        // poll; the next change (or SIGHUP) tries again.
        *self.lock_stamps() = self.current_stamps();
        let result = self.load_and_swap();
        let outcome = if result.is_ok() { "success" } else { "failure" };
        ::metrics::counter!(
            metrics::TLS_RELOADS_TOTAL,
            "listener" => self.listener,
            "result" => outcome
        )
        .increment(1);
        result
    }

    /// Reloads if a file changed since the last load; returns whether it tried.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        if *self.lock_stamps() == self.current_stamps() {
            return None;
        }
        Some(self.reload())
    }

    fn load_and_swap(&self) -> Result<(), TlsError> {
        // Load everything before swapping anything: a half-rotated pair
        // (new certificate, old key) must not be served.
        let certified = tls::load_certified_key(&self.files.cert, &self.files.key)?;
        let verifier = match (&self.client_ca, &self.verifier) {
            (Some(path), Some(_)) => Some(tls::load_client_verifier(path)?),
            _ => None,
        };
        self.cert.replace(certified);
        if let (Some(slot), Some(verifier)) = (&self.verifier, verifier) {
            slot.replace(verifier);
        }
        self.publish_expiry();
        Ok(())
    }

    /// Sets the expiry gauges from the files now in use.
    fn publish_expiry(&self) {
        let served = self.cert.current();
        if let Ok((_, not_after)) = tls::validity_of(&self.files.cert, &served.cert) {
            metrics::set_certificate_expiry(self.listener, "server", not_after);
        }
        if let Some(path) = &self.client_ca
            && let Ok((_, not_after)) = tls::validity(path)
        {
            metrics::set_certificate_expiry(self.listener, "client_ca", not_after);
        }
    }

    fn current_stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        let mut paths = vec![&self.files.cert, &self.files.key];
        paths.extend(self.client_ca.as_ref());
        paths
            .into_iter()
            .map(|path| {
                let metadata = std::fs::metadata(path).ok()?;
                Some((metadata.modified().ok()?, metadata.len()))
            })
            .collect()
    }

    fn lock_stamps(&self) -> std::sync::MutexGuard<'_, Vec<Option<(SystemTime, u64)>>> {
        self.stamps.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl CertSlot ===

/// The certificate the server presents; swapped on reload.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, certified: CertifiedKey) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

// === impl VerifierSlot ===

/// The client-certificate verifier; rebuilt from the CA file on reload.
#[derive(Debug)]
struct VerifierSlot {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    /// The CA names sent in the CertificateRequest. The trait hands out a
    /// borrowed slice, which cannot borrow from the lock, so each distinct
    /// list is leaked once: a few hundred bytes per CA change, and CAs change
    /// rarely (a reload with an unchanged CA reuses the old slice).
    hints: RwLock<&'static [DistinguishedName]>,
}

impl VerifierSlot {
    fn new(verifier: Arc<dyn ClientCertVerifier>) -> Self {
        let hints: &'static [DistinguishedName] =
            Box::leak(verifier.root_hint_subjects().to_vec().into_boxed_slice());
        Self {
            current: RwLock::new(verifier),
            hints: RwLock::new(hints),
        }
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, verifier: Arc<dyn ClientCertVerifier>) {
        let new_hints = verifier.root_hint_subjects();
        {
            let mut hints = self.hints.write().unwrap_or_else(PoisonError::into_inner);
            let unchanged = hints.len() == new_hints.len()
                && hints
                    .iter()
                    .zip(new_hints)
                    .all(|(old, new)| old.as_ref() == new.as_ref());
            if !unchanged {
                *hints = Box::leak(new_hints.to_vec().into_boxed_slice());
            }
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = verifier;
    }
}

impl ClientCertVerifier for VerifierSlot {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        *self.hints.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

// === accepting ===

/// Bounds on one listener's TLS handshakes.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// How long a new connection may take to send its whole ClientHello.
    /// Short: a real client sends it at once, in one packet, and a socket
    /// that stays silent only holds a handshake place.
    pub client_hello_timeout: Duration,
    /// How long the whole handshake may take, counted from the connection's
    /// arrival.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; further connections wait in the
    /// kernel's backlog, so a flood of sockets cannot exhaust memory.
    pub max_concurrent: usize,
    /// Handshakes in progress at once from one client address (IPv6: one
    /// /64), so one source cannot take every place; its further connections
    /// are closed at once.
    pub max_per_address: usize,
}

/// Completes TLS handshakes with `tls`'s current certificates on the
/// connections of `connections` (each with its peer address), within
/// `limits`, and yields the TLS streams, for tonic's
/// `serve_with_incoming_shutdown`.
///
/// The loop ends when the returned stream is dropped (tonic stopped) or
/// `connections` ends.
pub(crate) fn tls_incoming<IO, S>(
    connections: S,
    tls: Arc<ReloadableTls>,
    limits: HandshakeLimits,
) -> ReceiverStream<io::Result<TlsStream<IO>>>
where
    S: Stream<Item = (IO, SocketAddr)> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(accept_loop(connections, tls, limits, sender));
    ReceiverStream::new(receiver)
}

async fn accept_loop<IO, S>(
    connections: S,
    tls: Arc<ReloadableTls>,
    limits: HandshakeLimits,
    sender: mpsc::Sender<io::Result<TlsStream<IO>>>,
) where
    S: Stream<Item = (IO, SocketAddr)> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshakes = Arc::new(Semaphore::new(limits.max_concurrent.max(1)));
    let per_address = PerAddressLimit::new(limits.max_per_address);
    let config = tls.acceptor().config().clone();
    let listener_name = tls.listener;
    tokio::pin!(connections);
    loop {
        // A place first, then the next connection: while every place is
        // taken, connections wait in the backlog instead of in memory.
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let next = tokio::select! {
            next = connections.next() => next,
            () = sender.closed() => return,
        };
        let Some((stream, peer)) = next else {
            return;
        };
        let Some(address_permit) = per_address.try_acquire(peer.ip()) else {
            ::metrics::counter!(metrics::TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => listener_name)
                .increment(1);
            tracing::debug!(listener = listener_name, %peer, "too many tls handshakes from one address; connection closed");
            continue;
        };
        let config = config.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let handshake = handshake(stream, config, limits).await;
            drop(permit);
            drop(address_permit);
            match handshake {
                Ok(stream) => {
                    let _ = sender.send(Ok(stream)).await;
                }
                Err(failure) => {
                    ::metrics::counter!(metrics::TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => listener_name)
                        .increment(1);
                    tracing::debug!(listener = listener_name, %peer, %failure, "tls handshake failed");
                }
            }
        });
    }
}

/// Why a handshake did not complete (for the debug log).
#[derive(Debug, thiserror::Error)]
enum HandshakeFailure {
    #[error("no complete ClientHello in time")]
    ClientHelloTimeout,
    #[error("handshake timed out")]
    Timeout,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the ClientHello within its short timeout, then completes the
/// handshake within what is left of the whole handshake's timeout.
async fn handshake<IO>(
    stream: IO,
    config: Arc<rustls::ServerConfig>,
    limits: HandshakeLimits,
) -> Result<TlsStream<IO>, HandshakeFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let client_hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = tokio::time::timeout(limits.client_hello_timeout, client_hello)
        .await
        .map_err(|_| HandshakeFailure::ClientHelloTimeout)??;
    let stream = tokio::time::timeout_at(deadline, start.into_stream(config))
        .await
        .map_err(|_| HandshakeFailure::Timeout)??;
    Ok(stream)
}

// === watching ===

/// Reloads `configs` on SIGHUP and when their files change (checked every
/// `poll_interval`; zero turns polling off), until `shutdown` resolves.
pub(crate) async fn watch(
    configs: Vec<Arc<ReloadableTls>>,
    poll_interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    if configs.is_empty() {
        return;
    }
    let mut hangup = hangup_signal();
    let mut ticker = (!poll_interval.is_zero()).then(|| {
        let mut ticker = tokio::time::interval(poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    tokio::pin!(shutdown);
    loop {
        let forced = tokio::select! {
            () = &mut shutdown => return,
            () = recv_hangup(&mut hangup) => true,
            () = tick(&mut ticker) => false,
        };
        for config in &configs {
            let result = if forced {
                Some(config.reload())
            } else {
                config.reload_if_changed()
            };
            match result {
                Some(Ok(())) => {
                    tracing::info!(listener = config.listener, "tls certificates reloaded");
                }
                Some(Err(error)) => tracing::error!(
                    listener = config.listener,
                    %error,
                    "tls certificate reload failed; still serving the previous certificates"
                ),
                None => {}
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn hangup_signal() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn recv_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        signal.recv().await;
        return;
    }
    let _ = hangup;
    std::future::pending::<()>().await;
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}
