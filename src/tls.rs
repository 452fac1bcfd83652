//! TLS on every port and every call between vesper services, off unless
//! asked for.
//!
//! A server turns TLS on with a certificate and its key
//! (`--tls-cert`, `--tls-key`); every port of the process (gRPC and HTTP)
//! then speaks TLS only. `--tls-client-ca` adds mutual TLS: a client must
//! present a certificate issued by that CA. The files are read again when
//! they change (checked every `--tls-reload-interval`) and on SIGHUP, so a
//! rotated certificate is served to new connections without a restart; a
//! file that does not load is logged as an error and the old certificate
//! keeps serving.
//!
//! A client reaches `https://` peers: it trusts `--tls-ca` (or, without it,
//! the system's trust store) and, for mutual TLS, presents
//! `--tls-client-cert` and `--tls-client-key`. `http://` peers stay
//! plaintext.
//!
//! One crypto provider, aws-lc-rs (rustls' default), serves every TLS
//! connection of the process ([`install_crypto_provider`]).

use std::{
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ParseError, parse_duration};

/// Default longest a TLS handshake may take before the connection is
/// closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of TLS handshakes a port runs at once.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
/// Default interval between checks of the certificate files.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// The ALPN protocols of a gRPC port.
const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// The ALPN protocols of an HTTP port (HTTP/2 preferred).
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Failure to load TLS settings. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// What the file was meant to hold (`--tls-cert`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no PEM block of the expected kind, or a broken one.
    #[error("the {what} {path} holds no usable PEM {expected}: {reason}")]
    Pem {
        /// What the file was meant to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The PEM kind expected.
        expected: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// rustls refused the combination (a key that does not match its
    /// certificate, a CA that is not a CA, ...).
    #[error("{context}: {reason}")]
    Rustls {
        /// Which files were being combined.
        context: String,
        /// rustls' reason.
        reason: String,
    },
}

/// Command-line options of a server's TLS.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerTlsArgs {
    /// PEM certificate chain (leaf first) every port of this process
    /// presents; with --tls-key it turns TLS on (no plaintext on the port).
    /// Reloaded when the file changes or on SIGHUP.
    #[arg(
        long,
        env = "VESPER_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "VESPER_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s) clients must present a certificate from
    /// (mutual TLS); a client without one, or with one from another CA, is
    /// refused during the handshake.
    #[arg(
        long,
        env = "VESPER_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// The longest a client may take to finish the TLS handshake (e.g.
    /// 10s); past it the connection is closed.
    #[arg(
        long,
        env = "VESPER_TLS_HANDSHAKE_TIMEOUT",
        default_value = "10s",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub tls_handshake_timeout: Duration,

    /// TLS handshakes a gRPC port runs at once; further connections wait in
    /// the listen backlog.
    #[arg(
        long,
        env = "VESPER_TLS_MAX_HANDSHAKES",
        default_value_t = DEFAULT_MAX_HANDSHAKES,
        value_parser = crate::config::parse_positive_count,
        value_name = "COUNT"
    )]
    pub tls_max_handshakes: usize,
}

impl Default for ServerTlsArgs {
    fn default() -> Self {
        Self {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tls_max_handshakes: DEFAULT_MAX_HANDSHAKES,
        }
    }
}

/// Command-line options of a client's TLS, for `https://` peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM CA certificate(s) to trust for https:// peers. gRPC peers are
    /// then checked against these alone; HTTP calls trust them on top of
    /// the system's store. Without it, the system's trust store.
    #[arg(long, env = "VESPER_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// PEM certificate this process presents to https:// peers that ask for
    /// one (mutual TLS).
    #[arg(
        long,
        env = "VESPER_TLS_CLIENT_CERT",
        requires = "tls_client_key",
        value_name = "FILE"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// PEM private key of --tls-client-cert.
    #[arg(
        long,
        env = "VESPER_TLS_CLIENT_KEY",
        requires = "tls_client_cert",
        value_name = "FILE"
    )]
    pub tls_client_key: Option<PathBuf>,
}

/// Every TLS option of a process that serves and calls.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    #[command(flatten)]
    pub server: ServerTlsArgs,

    #[command(flatten)]
    pub client: ClientTlsArgs,

    /// How often the TLS files are checked for changes (e.g. 5s); SIGHUP
    /// checks at once.
    #[arg(
        long,
        env = "VESPER_TLS_RELOAD_INTERVAL",
        default_value = "5s",
        value_parser = parse_reload_interval,
        value_name = "DURATION"
    )]
    pub tls_reload_interval: Duration,
}

impl Default for TlsArgs {
    fn default() -> Self {
        Self {
            server: ServerTlsArgs::default(),
            client: ClientTlsArgs::default(),
            tls_reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

fn parse_reload_interval(text: &str) -> Result<Duration, ParseError> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err(ParseError::new(format!(
            "the TLS reload interval {text:?} is below 100ms"
        )));
    }
    Ok(interval)
}

impl TlsArgs {
    /// Loads the files (failing at start on any that does not load),
    /// makes them this process's TLS for every server and client started
    /// from now on, and watches them: every `--tls-reload-interval` and on
    /// SIGHUP. Must be called inside a tokio runtime; the first call wins.
    pub fn install(&self) -> Result<(), TlsError> {
        let server = self.server.load()?;
        let client = self.client.load()?;
        if let Some(server) = &server {
            tracing::info!(
                cert = %server.files.cert.display(),
                mutual = server.files.client_ca.is_some(),
                fingerprint = %server.fingerprint(),
                "TLS on: every port of this process speaks TLS only"
            );
            if SERVER.set(server.clone()).is_err() {
                tracing::debug!("a server TLS configuration was installed already");
            }
        }
        if CLIENT.set(client.clone()).is_err() {
            tracing::debug!("a client TLS configuration was installed already");
        }
        let watched = server.is_some() || client.files.any();
        if watched {
            spawn_watcher(server, client, self.tls_reload_interval);
        }
        Ok(())
    }

    /// Whether this process serves TLS.
    pub fn serves_tls(&self) -> bool {
        self.server.tls_cert.is_some()
    }
}

impl ClientTlsArgs {
    /// Loads the client settings and makes them this process's, without
    /// watching the files (for short-lived commands).
    pub fn install(&self) -> Result<(), TlsError> {
        let client = self.load()?;
        if CLIENT.set(client).is_err() {
            tracing::debug!("a client TLS configuration was installed already");
        }
        Ok(())
    }

    /// The client settings these options name.
    pub fn load(&self) -> Result<Arc<ClientTls>, TlsError> {
        install_crypto_provider();
        let files = ClientFiles {
            ca: self.tls_ca.clone(),
            cert: self.tls_client_cert.clone(),
            key: self.tls_client_key.clone(),
        };
        let (digest, loaded) = files.read();
        let loaded = loaded?;
        Ok(Arc::new(ClientTls {
            config: ArcSwap::from_pointee(loaded.build()?),
            files,
            seen: Mutex::new(digest),
            http: loaded.for_http(),
        }))
    }
}

impl ServerTlsArgs {
    /// The server settings these options name; `None` when TLS is off.
    pub fn load(&self) -> Result<Option<Arc<ServerTls>>, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        install_crypto_provider();
        let files = ServerFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        };
        let (digest, loaded) = files.read();
        let configs = loaded?.build(&files)?;
        Ok(Some(Arc::new(ServerTls {
            files,
            configs: ArcSwap::from_pointee(configs),
            seen: Mutex::new(digest),
            handshake_timeout: self.tls_handshake_timeout,
            max_handshakes: self.tls_max_handshakes.clamp(1, Semaphore::MAX_PERMITS),
        })))
    }
}

static SERVER: OnceLock<Arc<ServerTls>> = OnceLock::new();
static CLIENT: OnceLock<Arc<ClientTls>> = OnceLock::new();

/// The process's crypto provider: aws-lc-rs, installed once as the rustls
/// default so every TLS user in the process (ours, reqwest's) agrees.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Installs aws-lc-rs as the process's default rustls provider (once;
/// later calls, or a provider installed by someone else first, are kept).
pub fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _already = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// What a server presents, and what it asks of clients.
#[derive(Debug, Clone)]
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// The bytes of a server's files, as read once.
struct ServerMaterial {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
}

impl ServerFiles {
    /// The files' contents, parsed, and a digest of what was read (or of
    /// why nothing could be), so the same state is reported once.
    fn read(&self) -> ([u8; 32], Result<ServerMaterial, TlsError>) {
        let read = || -> Result<_, TlsError> {
            let cert_pem = read_file("--tls-cert", &self.cert)?;
            let key_pem = read_file("--tls-key", &self.key)?;
            let ca_pem = match &self.client_ca {
                Some(path) => Some(read_file("--tls-client-ca", path)?),
                None => None,
            };
            Ok((cert_pem, key_pem, ca_pem))
        };
        match read() {
            Ok((cert_pem, key_pem, ca_pem)) => {
                let digest = digest_of([Some(&cert_pem), Some(&key_pem), ca_pem.as_ref()]);
                (digest, self.parse(&cert_pem, &key_pem, ca_pem.as_deref()))
            }
            Err(err) => (digest_of_error(&err), Err(err)),
        }
    }

    fn parse(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: Option<&[u8]>,
    ) -> Result<ServerMaterial, TlsError> {
        let chain = parse_certs("--tls-cert", &self.cert, cert_pem)?;
        let key = parse_key("--tls-key", &self.key, key_pem)?;
        let client_ca = match (&self.client_ca, ca_pem) {
            (Some(path), Some(pem)) => Some(parse_certs("--tls-client-ca", path, pem)?),
            _ => None,
        };
        Ok(ServerMaterial {
            chain,
            key,
            client_ca,
        })
    }
}

impl ServerMaterial {
    fn build(&self, files: &ServerFiles) -> Result<ServerConfigs, TlsError> {
        let provider = crypto_provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| rustls_error("the TLS protocol versions", err))?;
        let builder = match (&self.client_ca, &files.client_ca) {
            (Some(cas), Some(path)) => {
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    roots.add(ca.clone()).map_err(|err| {
                        rustls_error(&format!("the --tls-client-ca {}", path.display()), err)
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|err| TlsError::Rustls {
                        context: format!("the --tls-client-ca {}", path.display()),
                        reason: err.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|err| {
                rustls_error(
                    &format!(
                        "the --tls-cert {} with the --tls-key {}",
                        files.cert.display(),
                        files.key.display()
                    ),
                    err,
                )
            })?;
        let with_alpn = |protocols: &[&[u8]]| {
            let mut config = config.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        };
        Ok(ServerConfigs {
            grpc: with_alpn(GRPC_ALPN),
            http: with_alpn(HTTP_ALPN),
            fingerprint: self
                .chain
                .first()
                .map(|leaf| fingerprint(leaf))
                .unwrap_or_default(),
        })
    }
}

/// The rustls configurations of one certificate: gRPC ports offer HTTP/2
/// only, HTTP ports HTTP/2 and HTTP/1.1.
#[derive(Debug)]
struct ServerConfigs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    fingerprint: String,
}

/// Which kind of port a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// A gRPC port (ALPN `h2`).
    Grpc,
    /// An HTTP port (ALPN `h2`, `http/1.1`).
    Http,
}

/// A server's TLS: the current certificate (swapped when the files change)
/// and the handshake bounds.
pub struct ServerTls {
    files: ServerFiles,
    configs: ArcSwap<ServerConfigs>,
    /// Digest of the files' bytes last tried, loaded or not, so a broken
    /// file is reported once, not at every check.
    seen: Mutex<[u8; 32]>,
    handshake_timeout: Duration,
    max_handshakes: usize,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.files.cert)
            .field("client_ca", &self.files.client_ca)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The server TLS installed for this process, if TLS is on.
    pub fn current() -> Option<Arc<Self>> {
        SERVER.get().cloned()
    }

    /// An acceptor with the certificate as it is now: connections
    /// accepted through it keep it; later ones get whatever is current.
    pub fn acceptor(&self, port: Port) -> TlsAcceptor {
        let configs = self.configs.load();
        TlsAcceptor::from(match port {
            Port::Grpc => configs.grpc.clone(),
            Port::Http => configs.http.clone(),
        })
    }

    /// The longest a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// SHA-256 of the leaf certificate being served, in hex.
    pub fn fingerprint(&self) -> String {
        self.configs.load().fingerprint.clone()
    }

    /// Reads the files again and, if they changed and load, serves them
    /// to new connections. A state that does not load is logged once (a
    /// file half-written while being replaced fails once; the check after
    /// the writer is done loads it).
    pub fn reload(&self) -> Reload {
        let (digest, loaded) = self.files.read();
        if !remember(&self.seen, digest) {
            return Reload::Unchanged;
        }
        match loaded.and_then(|loaded| loaded.build(&self.files)) {
            Ok(configs) => {
                tracing::info!(
                    cert = %self.files.cert.display(),
                    fingerprint = %configs.fingerprint,
                    "reloaded TLS certificate"
                );
                self.configs.store(Arc::new(configs));
                Reload::Reloaded
            }
            Err(err) => {
                tracing::error!(
                    "cannot reload the TLS certificate, still serving the previous one ({}): {err}",
                    self.fingerprint()
                );
                Reload::Failed
            }
        }
    }

    /// TLS connections from `listener`, a `port`: handshakes run apart
    /// from the accept loop (a slow client never holds up the others), at
    /// most `--tls-max-handshakes` at once, each bounded by
    /// `--tls-handshake-timeout`. Accepting stops when the stream is
    /// dropped.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        port: Port,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
        let (ready, incoming) = mpsc::channel(16);
        tokio::spawn(async move {
            let handshakes = Arc::new(Semaphore::new(self.max_handshakes));
            loop {
                let permit = tokio::select! {
                    permit = handshakes.clone().acquire_owned() => permit,
                    () = ready.closed() => break,
                };
                let Ok(permit) = permit else { break };
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = ready.closed() => break,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors, or a connection reset
                        // before it was accepted: neither ends the server.
                        tracing::warn!("cannot accept a connection: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = self.acceptor(port);
                let timeout = self.handshake_timeout;
                let ready = ready.clone();
                tokio::spawn(async move {
                    let handshake = handshake(acceptor, stream, timeout, peer).await;
                    drop(permit);
                    if let Some(connection) = handshake {
                        let _ = ready.send(Ok(TlsConnection::new(connection))).await;
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(incoming)
    }
}

/// A TLS listener for `axum::serve` (the metrics port of a gRPC-only
/// service).
#[derive(Debug)]
pub struct TlsListener {
    local: std::net::SocketAddr,
    incoming: mpsc::Receiver<io::Result<TlsConnection>>,
}

impl TlsListener {
    /// TLS over `listener`, an HTTP port.
    pub fn new(tls: Arc<ServerTls>, listener: TcpListener) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            local,
            incoming: tls.incoming(listener, Port::Http).into_inner(),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.recv().await {
                Some(Ok(connection)) => {
                    let peer = connection
                        .inner
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or(self.local);
                    return (connection, peer);
                }
                Some(Err(_)) => continue,
                // The accept task only ends once this receiver is gone.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Runs a server handshake within `timeout`; failures are counted and
/// logged at debug (a port scanner must not flood the log).
pub async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    peer: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(connection)) => Some(connection),
        Ok(Err(err)) => {
            metrics::counter!("vesper_tls_handshake_failures_total", "reason" => "refused")
                .increment(1);
            tracing::debug!("TLS handshake with {peer} failed: {err}");
            None
        }
        Err(_) => {
            metrics::counter!("vesper_tls_handshake_failures_total", "reason" => "timeout")
                .increment(1);
            tracing::debug!(
                "TLS handshake with {peer} did not finish within {} (--tls-handshake-timeout)",
                humantime::format_duration(timeout)
            );
            None
        }
    }
}

/// What happened when the files were checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files are as they were.
    Unchanged,
    /// New files were loaded and are served from now on.
    Reloaded,
    /// New files did not load; the previous ones keep serving.
    Failed,
}

/// A server-side TLS connection, as tonic takes it.
#[derive(Debug)]
pub struct TlsConnection {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
}

impl TlsConnection {
    fn new(inner: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        Self { inner }
    }
}

/// What a gRPC handler can learn of its TLS connection (a request
/// extension): the addresses, and the client's certificate chain under
/// mutual TLS.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    /// The TCP addresses.
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The chain the client presented (mutual TLS), leaf first.
    pub client_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        let (tcp, session) = self.inner.get_ref();
        TlsConnectInfo {
            tcp: tcp.connect_info(),
            client_certificates: session.peer_certificates().map(|chain| {
                Arc::new(chain.iter().map(|cert| cert.clone().into_owned()).collect())
            }),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a client trusts and presents.
#[derive(Debug, Clone, Default)]
struct ClientFiles {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl ClientFiles {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// Like [`ServerFiles::read`].
    fn read(&self) -> ([u8; 32], Result<ClientMaterial, TlsError>) {
        let optional = |what, path: &Option<PathBuf>| match path {
            Some(path) => read_file(what, path).map(Some),
            None => Ok(None),
        };
        let read = || -> Result<_, TlsError> {
            Ok((
                optional("--tls-ca", &self.ca)?,
                optional("--tls-client-cert", &self.cert)?,
                optional("--tls-client-key", &self.key)?,
            ))
        };
        match read() {
            Ok((ca_pem, cert_pem, key_pem)) => (
                digest_of([ca_pem.as_ref(), cert_pem.as_ref(), key_pem.as_ref()]),
                self.parse(ca_pem, cert_pem, key_pem),
            ),
            Err(err) => (digest_of_error(&err), Err(err)),
        }
    }

    fn parse(
        &self,
        ca_pem: Option<Vec<u8>>,
        cert_pem: Option<Vec<u8>>,
        key_pem: Option<Vec<u8>>,
    ) -> Result<ClientMaterial, TlsError> {
        let roots = match (&self.ca, &ca_pem) {
            (Some(path), Some(pem)) => Some(parse_certs("--tls-ca", path, pem)?),
            _ => None,
        };
        let identity = match (&self.cert, &cert_pem, &self.key, &key_pem) {
            (Some(cert), Some(cert_bytes), Some(key), Some(key_bytes)) => Some((
                parse_certs("--tls-client-cert", cert, cert_bytes)?,
                parse_key("--tls-client-key", key, key_bytes)?,
            )),
            _ => None,
        };
        Ok(ClientMaterial {
            roots,
            identity,
            ca_pem,
            identity_pem: cert_pem.zip(key_pem).map(|(mut cert, key)| {
                cert.push(b'\n');
                cert.extend_from_slice(&key);
                cert
            }),
        })
    }
}

/// A client's files, as read once.
struct ClientMaterial {
    roots: Option<Vec<CertificateDer<'static>>>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
}

impl ClientMaterial {
    fn build(&self) -> Result<ClientConfig, TlsError> {
        let provider = crypto_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| rustls_error("the TLS protocol versions", err))?;
        let builder = match &self.roots {
            Some(cas) => {
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    roots
                        .add(ca.clone())
                        .map_err(|err| rustls_error("the --tls-ca", err))?;
                }
                builder.with_root_certificates(roots)
            }
            None => {
                let verifier = rustls_platform_verifier::Verifier::new(provider)
                    .map_err(|err| rustls_error("the system's trust store", err))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
            }
        };
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|err| {
                    rustls_error("the --tls-client-cert with the --tls-client-key", err)
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = GRPC_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    fn for_http(&self) -> HttpClientTls {
        HttpClientTls {
            ca_pem: self.ca_pem.clone(),
            identity_pem: self.identity_pem.clone(),
        }
    }
}

/// The PEM an HTTP client (reqwest) adds to its own TLS settings.
#[derive(Clone, Default)]
struct HttpClientTls {
    ca_pem: Option<Vec<u8>>,
    identity_pem: Option<Vec<u8>>,
}

/// A client's TLS: what it trusts and presents, swapped when the files
/// change.
pub struct ClientTls {
    files: ClientFiles,
    config: ArcSwap<ClientConfig>,
    seen: Mutex<[u8; 32]>,
    http: HttpClientTls,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.files.ca)
            .field("cert", &self.files.cert)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The client TLS installed for this process, or the default: the
    /// system's trust store, no client certificate.
    pub fn current() -> Arc<Self> {
        if let Some(installed) = CLIENT.get() {
            return installed.clone();
        }
        static DEFAULT: OnceLock<Option<Arc<ClientTls>>> = OnceLock::new();
        let default = DEFAULT.get_or_init(|| match ClientTlsArgs::default().load() {
            Ok(tls) => Some(tls),
            Err(err) => {
                tracing::error!("cannot set up TLS for https:// peers: {err}");
                None
            }
        });
        match default {
            Some(tls) => tls.clone(),
            // Only the system's trust store can fail to load here; a
            // client that trusts nothing refuses every peer, the safe
            // answer.
            None => Arc::new(Self {
                files: ClientFiles::default(),
                config: ArcSwap::from_pointee(trusting_nothing()),
                seen: Mutex::new([0; 32]),
                http: HttpClientTls::default(),
            }),
        }
    }

    /// A connector with the settings as they are now.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.config.load_full())
    }

    /// Reads the files again; new connections use them if they changed and
    /// load. (HTTP clients keep what they were built with.)
    pub fn reload(&self) -> Reload {
        let (digest, loaded) = self.files.read();
        if !remember(&self.seen, digest) {
            return Reload::Unchanged;
        }
        match loaded.and_then(|loaded| loaded.build()) {
            Ok(config) => {
                self.config.store(Arc::new(config));
                tracing::info!("reloaded the client TLS files");
                Reload::Reloaded
            }
            Err(err) => {
                tracing::error!(
                    "cannot reload the client TLS files, keeping the previous ones: {err}"
                );
                Reload::Failed
            }
        }
    }
}

/// Records `digest` as the state last seen; whether it is a new one.
fn remember(seen: &Mutex<[u8; 32]>, digest: [u8; 32]) -> bool {
    let mut seen = seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *seen == digest {
        return false;
    }
    *seen = digest;
    true
}

fn trusting_nothing() -> ClientConfig {
    install_crypto_provider();
    ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// An HTTP client builder that trusts `--tls-ca` (on top of the system's
/// store) and presents `--tls-client-cert`, for every HTTP call a vesper
/// process makes (webhook pushes, batch pulls, health probes).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let tls = ClientTls::current();
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = &tls.http.ca_pem {
        match reqwest::Certificate::from_pem_bundle(pem) {
            Ok(certs) => builder = builder.tls_certs_merge(certs),
            Err(err) => tracing::error!("the --tls-ca is not usable for HTTP calls: {err}"),
        }
    }
    if let Some(pem) = &tls.http.identity_pem {
        match reqwest::Identity::from_pem(pem) {
            Ok(identity) => builder = builder.identity(identity),
            Err(_) => tracing::error!(
                "the --tls-client-cert and --tls-client-key are not usable for HTTP calls"
            ),
        }
    }
    builder
}

/// Connects to `https://` peers for tonic: TCP, then TLS with the
/// process's client settings at the time of the connection.
#[derive(Debug, Clone)]
pub(crate) struct TlsConnect {
    tls: Arc<ClientTls>,
}

impl TlsConnect {
    pub(crate) fn new() -> Self {
        Self {
            tls: ClientTls::current(),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Uri> for TlsConnect {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.tls.connector();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| format!("the peer {uri} has no host"))?;
            let port = uri.port_u16().unwrap_or(443);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

fn spawn_watcher(server: Option<Arc<ServerTls>>, client: Arc<ClientTls>, every: Duration) {
    let mut hangups = Hangups::listen();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            let hangup = tokio::select! {
                _ = ticks.tick() => false,
                () = hangups.recv() => true,
            };
            if hangup {
                tracing::info!("SIGHUP: checking the TLS files");
            }
            let server_reload = server.as_ref().map(|server| server.reload());
            let client_reload = client.reload();
            if hangup
                && server_reload != Some(Reload::Reloaded)
                && client_reload != Reload::Reloaded
            {
                tracing::info!("the TLS files are unchanged (or still do not load)");
            }
        }
    });
}

/// SIGHUP, where there is such a thing; registered at once, so a SIGHUP
/// sent after [`TlsArgs::install`] returns never kills the process.
struct Hangups {
    #[cfg(unix)]
    signals: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::hangup())
                .map_err(|err| {
                    tracing::warn!("cannot listen for SIGHUP, reloading on the timer only: {err}")
                })
                .ok();
            Self { signals }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signals) = self.signals.as_mut()
            && signals.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "CERTIFICATE",
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(err.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

fn parse_key(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The parser's error names the PEM section at fault, never its bytes.
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::Pem {
        what,
        path: path.to_owned(),
        expected: "PRIVATE KEY",
        reason: err.to_string(),
    })
}

fn rustls_error(context: &str, err: rustls::Error) -> TlsError {
    TlsError::Rustls {
        context: context.to_owned(),
        reason: err.to_string(),
    }
}

fn digest_of_error(err: &TlsError) -> [u8; 32] {
    Sha256::digest(err.to_string().as_bytes()).into()
}

fn digest_of<'a>(parts: impl IntoIterator<Item = Option<&'a Vec<u8>>>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        match part {
            Some(bytes) => {
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            None => hasher.update(u64::MAX.to_le_bytes()),
        }
    }
    hasher.finalize().into()
}

/// SHA-256 of a certificate, in hex: what `openssl x509 -fingerprint
/// -sha256` shows, without the colons.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}
