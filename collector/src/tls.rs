//! The collector's transport: TLS 1.3 only, a client certificate required
//! and checked against the client CA and the revoked list, each
//! connection's peer identity handed to the service with every request,
//! and the certificate, key, CA and revocations reread when their files
//! change, so rotation and revocation need no restart. Plaintext serves
//! only loopback, for trials and tests.
use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::ring::default_provider,
    pki_types::{CertificateDer, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
    server::WebPkiClientVerifier,
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{server::TlsStream, TlsAcceptor};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use vigil_proto::tls::{read_certs, read_key, read_valid_cert, CertInfo, Role, TlsFileError};

use crate::pki;

/// How long a client has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once, and from one address; connections past
/// either are closed at once.
pub const MAX_HANDSHAKES: usize = 256;
pub const MAX_HANDSHAKES_PER_IP: usize = 32;
/// How long a refused client has to read the alert that says why.
pub const LINGER: Duration = Duration::from_secs(1);
/// How often the TLS files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("{}: {reason}", .path.display())]
    Bad { path: PathBuf, reason: String },
    #[error("{0}")]
    Revoked(String),
}

/// The files the collector serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose client certificates are accepted.
    pub client_ca: PathBuf,
    /// Directory of revoked certificates (see [`pki`]); absent: none.
    pub revoked: Option<PathBuf>,
}

impl ServerTlsFiles {
    /// The layout `vigil-collector pki init DIR` writes.
    pub fn from_pki(dir: &Path) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: dir.join("collector.crt"),
            key: dir.join("collector.key"),
            client_ca: dir.join("ca.crt"),
            revoked: Some(dir.join(pki::REVOKED_DIR)),
        }
    }

    /// What identifies the certificate, key and CA files' contents, to
    /// notice a change.
    fn stamp(&self) -> Stamp {
        [&self.cert, &self.key, &self.client_ca]
            .into_iter()
            .map(|p| (p.clone(), meta(p)))
            .collect()
    }

    /// The same for the revoked directory and its files.
    fn revoked_stamp(&self) -> Stamp {
        let Some(dir) = &self.revoked else {
            return Vec::new();
        };
        let mut out = vec![(dir.clone(), meta(dir))];
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            files.sort();
            out.extend(files.into_iter().map(|p| {
                let m = meta(&p);
                (p, m)
            }));
        }
        out
    }
}

/// Each file's path with its modification time and length (None: absent).
type Stamp = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn meta(p: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// The last stamp loaded and the last that failed (logged once).
#[derive(Default)]
struct Stamps {
    loaded: Stamp,
    failed: Option<Stamp>,
}

impl Stamps {
    fn changed(&self, now: &Stamp) -> bool {
        *now != self.loaded && self.failed.as_ref() != Some(now)
    }
}

/// Who is on the other end of a connection, from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The certificate's common name.
    pub name: String,
    /// Its role; None when the certificate names none.
    pub role: Option<Role>,
    /// Its DNS and IP names.
    pub names: Vec<String>,
    pub serial: Vec<u8>,
}

impl Peer {
    /// The host an agent's certificate names: its first DNS or IP name, or
    /// its common name.
    pub fn host(&self) -> &str {
        self.names.first().unwrap_or(&self.name)
    }

    fn describe(&self) -> String {
        format!(
            "`{}` ({})",
            self.name,
            self.role.map_or("no role", Role::name)
        )
    }
}

/// What the service learns about a connection, in each request's
/// extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// Whether the connection is TLS (plaintext serves loopback only).
    pub tls: bool,
    /// The client's certificate; None on plaintext (and, on TLS, a
    /// certificate that could not be read, which is refused).
    pub peer: Option<Arc<Peer>>,
}

/// Serial numbers no longer accepted, shared between the handshake and the
/// service (which checks connections made before a revocation), and
/// reread on its own: a certificate that fails to reload never delays a
/// revocation.
#[derive(Debug, Default)]
pub struct Revoked(RwLock<HashSet<Vec<u8>>>);

impl Revoked {
    pub fn contains(&self, serial: &[u8]) -> bool {
        self.0.read().expect("revoked lock").contains(serial)
    }

    fn set(&self, serials: HashSet<Vec<u8>>) {
        *self.0.write().expect("revoked lock") = serials;
    }
}

/// The collector's TLS settings, reloadable.
pub struct ServerTls {
    files: ServerTlsFiles,
    purpose: Purpose,
    config: RwLock<Arc<ServerConfig>>,
    revoked: Arc<Revoked>,
    /// The certificate files as last loaded or failed, and the revoked
    /// directory's.
    stamps: Mutex<(Stamps, Stamps)>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

/// What a TLS listener serves, which sets what it asks of clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// gRPC (HTTP/2): every client presents a certificate.
    Grpc,
    /// The console (HTTP/1.1): browsers without a certificate are let in
    /// to sign in with a password; one that presents a certificate must
    /// present a valid, unrevoked one.
    Console,
}

impl ServerTls {
    /// Reads and checks every file; an error names the file and the reason.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        ServerTls::load_for(files, Purpose::Grpc)
    }

    /// [`ServerTls::load`] for `purpose`.
    pub fn load_for(files: ServerTlsFiles, purpose: Purpose) -> Result<Arc<ServerTls>, TlsError> {
        let stamps = (
            Stamps {
                loaded: files.stamp(),
                failed: None,
            },
            Stamps {
                loaded: files.revoked_stamp(),
                failed: None,
            },
        );
        // The certificate's errors first: they are the likelier mistake.
        let revoked = Arc::new(Revoked::default());
        let config = build(&files, revoked.clone(), purpose)?;
        revoked.set(read_revoked(&files)?);
        if files.revoked.is_none() && purpose == Purpose::Grpc {
            tracing::warn!("no revoked-certificates directory (--revoked DIR): certificates cannot be revoked while running");
        }
        Ok(Arc::new(ServerTls {
            files,
            purpose,
            config: RwLock::new(Arc::new(config)),
            revoked,
            stamps: Mutex::new(stamps),
        }))
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.read().expect("config lock").clone()
    }

    pub fn revoked(&self) -> &Arc<Revoked> {
        &self.revoked
    }

    /// Rereads the files if they changed. A set that does not load keeps
    /// the previous one in force (logged once per change).
    pub fn reload_if_changed(&self) {
        let mut stamps = self.stamps.lock().expect("stamps lock");
        // Revocations first, and on their own.
        let now = self.files.revoked_stamp();
        if stamps.1.changed(&now) {
            match read_revoked(&self.files) {
                Ok(serials) => {
                    let n = serials.len();
                    self.revoked.set(serials);
                    stamps.1 = Stamps {
                        loaded: now,
                        failed: None,
                    };
                    tracing::info!(revoked = n, "revoked certificates reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "revoked certificates not reloaded; the previous list stays in force");
                    stamps.1.failed = Some(now);
                }
            }
        }
        let now = self.files.stamp();
        if stamps.0.changed(&now) {
            match build(&self.files, self.revoked.clone(), self.purpose) {
                Ok(config) => {
                    *self.config.write().expect("config lock") = Arc::new(config);
                    stamps.0 = Stamps {
                        loaded: now,
                        failed: None,
                    };
                    tracing::info!("TLS files reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS files not reloaded; the previous ones stay in force");
                    stamps.0.failed = Some(now);
                }
            }
        }
    }

    /// Checks the files every [`RELOAD_EVERY`] until dropped.
    pub fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
            }
        })
    }
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Bad {
        path: path.into(),
        reason: reason.to_string(),
    }
}

/// The revoked serials. A configured directory that is missing is an
/// error: revocation must not fail open.
fn read_revoked(files: &ServerTlsFiles) -> Result<HashSet<Vec<u8>>, TlsError> {
    let Some(dir) = &files.revoked else {
        return Ok(HashSet::new());
    };
    if !dir.is_dir() {
        return Err(bad(
            dir,
            "no such directory of revoked certificates (create it, empty, to revoke none)",
        ));
    }
    Ok(pki::revoked_serials(dir)
        .map_err(|e| TlsError::Revoked(e.to_string()))?
        .into_iter()
        .collect())
}

/// The rustls configuration from `files`, refusing `revoked` serials.
fn build(
    files: &ServerTlsFiles,
    revoked: Arc<Revoked>,
    purpose: Purpose,
) -> Result<ServerConfig, TlsError> {
    read_valid_cert(&files.cert)?;
    let chain = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let mut roots = RootCertStore::empty();
    for c in read_certs(&files.client_ca)? {
        roots.add(c).map_err(|e| {
            bad(
                &files.client_ca,
                format!("not a usable CA certificate: {e}"),
            )
        })?;
    }
    let provider = Arc::new(default_provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match purpose {
        Purpose::Grpc => builder,
        Purpose::Console => builder.allow_unauthenticated(),
    };
    let inner = builder.build().map_err(|e| bad(&files.client_ca, e))?;
    let verifier = Arc::new(RevocationCheck { inner, revoked });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(&files.cert, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => bad(
                &files.key,
                format!(
                    "the key does not belong to the certificate {}",
                    files.cert.display()
                ),
            ),
            e => bad(&files.key, e),
        })?;
    config.alpn_protocols = match purpose {
        Purpose::Grpc => vec![b"h2".to_vec()],
        Purpose::Console => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}

/// The CA's checks, then the revoked list.
#[derive(Debug)]
struct RevocationCheck {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<Revoked>,
}

impl ClientCertVerifier for RevocationCheck {
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = CertInfo::parse(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.revoked.contains(&info.serial) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A socket to serve: TLS, or plaintext on loopback.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<Arc<ServerTls>>,
}

impl Listener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// One accepted connection.
pub enum Conn {
    Plain(TcpStream, ConnInfo),
    Tls(Box<TlsStream<TcpStream>>, ConnInfo),
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(_, i) | Conn::Tls(_, i) => i.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// Handshakes in progress, in all and per client address.
#[derive(Default)]
struct Pending {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A handshake slot, given back when dropped.
struct Slot {
    pending: Arc<Mutex<Pending>>,
    ip: IpAddr,
}

impl Slot {
    /// A slot for `ip`, or None when the collector or that address has
    /// too many handshakes in progress.
    fn take(pending: &Arc<Mutex<Pending>>, ip: IpAddr) -> Option<Slot> {
        let mut p = pending.lock().expect("pending lock");
        let mine = p.per_ip.get(&ip).copied().unwrap_or(0);
        if p.total >= MAX_HANDSHAKES || mine >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        p.total += 1;
        *p.per_ip.entry(ip).or_default() += 1;
        Some(Slot {
            pending: pending.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut p = self.pending.lock().expect("pending lock");
        p.total -= 1;
        if let Some(n) = p.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                p.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections and completes their handshakes off the accept
/// loop, each within [`HANDSHAKE_TIMEOUT`]. The loop never waits for a
/// handshake: past [`MAX_HANDSHAKES`] in progress, or
/// [`MAX_HANDSHAKES_PER_IP`] from one address, a new connection is closed
/// at once (counted in the log), so clients without a certificate cannot
/// hold the door shut for agents. The stream ends when the receiver is
/// dropped. A refused handshake is logged with the peer's address and the
/// reason.
pub fn incoming(listener: Listener) -> ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let Listener { tcp, tls } = listener;
    let pending = Arc::new(Mutex::new(Pending::default()));
    tokio::spawn(async move {
        let mut shed = 0u64;
        loop {
            let (sock, remote) = tokio::select! {
                r = tcp.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = sock.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                let info = ConnInfo {
                    remote: Some(remote),
                    tls: false,
                    peer: None,
                };
                if tx.send(Ok(Conn::Plain(sock, info))).await.is_err() {
                    return;
                }
                continue;
            };
            let Some(slot) = Slot::take(&pending, remote.ip()) else {
                shed += 1;
                if shed.is_power_of_two() {
                    tracing::warn!(%remote, total = shed, "too many TLS handshakes in progress: connection closed");
                }
                drop(sock);
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let acceptor = TlsAcceptor::from(tls.config());
                let accept = acceptor.accept(sock).into_fallible();
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                    Ok(Ok(s)) => s,
                    Ok(Err((e, sock))) => {
                        tracing::warn!(%remote, error = %e, "TLS handshake refused");
                        linger(sock).await;
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| CertInfo::parse(c).ok())
                    .map(|i| {
                        Arc::new(Peer {
                            name: i.common_name,
                            role: i.role,
                            names: i.names,
                            serial: i.serial,
                        })
                    });
                if let Some(p) = &peer {
                    tracing::debug!(%remote, peer = %p.describe(), "TLS connection");
                }
                let info = ConnInfo {
                    remote: Some(remote),
                    tls: true,
                    peer,
                };
                let _ = tx.send(Ok(Conn::Tls(Box::new(stream), info))).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// After a refused handshake, reads what the client still sends until it
/// closes (at most [`LINGER`]) before closing: closing with its request
/// unread would reset the connection, and the client would see "broken
/// pipe" instead of the alert that says why (revoked, unknown CA, ...).
async fn linger(mut sock: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = sock.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Why a request is refused, for the service to turn into a status.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No identity, or one no longer valid: `Unauthenticated`.
    Unauthenticated(String),
    /// A valid identity whose role may not do this: `PermissionDenied`.
    PermissionDenied(String),
}

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> tonic::Status {
        match d {
            Denied::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Denied::PermissionDenied(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// Checks that the connection's peer may do `what` (`allowed` by role).
/// A plaintext connection (served on loopback only) is trusted, as a local
/// trial; Ok(None) then. Anything unknown is refused.
pub fn authorize(
    info: Option<&ConnInfo>,
    revoked: Option<&Revoked>,
    what: &str,
    allowed: fn(Role) -> bool,
) -> Result<Option<Arc<Peer>>, Denied> {
    let Some(info) = info else {
        return Err(Denied::Unauthenticated("no connection information".into()));
    };
    let Some(peer) = &info.peer else {
        if info.tls {
            return Err(Denied::Unauthenticated(
                "the client certificate could not be read".into(),
            ));
        }
        return Ok(None);
    };
    if revoked.is_some_and(|r| r.contains(&peer.serial)) {
        return Err(Denied::Unauthenticated(format!(
            "certificate {} has been revoked",
            peer.describe()
        )));
    }
    match peer.role {
        Some(r) if allowed(r) => Ok(Some(peer.clone())),
        Some(r) => Err(Denied::PermissionDenied(format!(
            "certificate `{}` has role {}, which may not {what}",
            peer.name,
            r.name()
        ))),
        None => Err(Denied::PermissionDenied(format!(
            "certificate `{}` carries no Vigil role (subject OU agent, responder or admin)",
            peer.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tls: bool, role: Option<Role>) -> ConnInfo {
        ConnInfo {
            remote: None,
            tls,
            peer: role.map(|r| {
                Arc::new(Peer {
                    name: "n".into(),
                    role: Some(r),
                    names: vec![],
                    serial: vec![7],
                })
            }),
        }
    }

    #[test]
    fn authorization_fails_closed() {
        let q = |i: Option<&ConnInfo>, rev: Option<&Revoked>| {
            authorize(i, rev, "query", Role::may_query)
        };
        assert!(matches!(q(None, None), Err(Denied::Unauthenticated(_))));
        assert!(matches!(
            q(Some(&info(true, None)), None),
            Err(Denied::Unauthenticated(_))
        ));
        assert_eq!(q(Some(&info(false, None)), None), Ok(None));
        assert!(q(Some(&info(true, Some(Role::Responder))), None).is_ok());
        assert!(q(Some(&info(true, Some(Role::Admin))), None).is_ok());
        let e = q(Some(&info(true, Some(Role::Agent))), None).unwrap_err();
        assert_eq!(
            e,
            Denied::PermissionDenied("certificate `n` has role agent, which may not query".into())
        );
        let mut no_role = info(true, Some(Role::Agent));
        Arc::get_mut(no_role.peer.as_mut().unwrap()).unwrap().role = None;
        assert!(matches!(
            q(Some(&no_role), None),
            Err(Denied::PermissionDenied(m)) if m.contains("no Vigil role")
        ));
        let revoked = Revoked::default();
        revoked.set([vec![7u8]].into_iter().collect());
        assert!(matches!(
            q(Some(&info(true, Some(Role::Responder))), Some(&revoked)),
            Err(Denied::Unauthenticated(m)) if m.contains("revoked")
        ));
    }

    #[test]
    fn handshake_slots_are_capped_per_address_and_given_back() {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<_> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|_| Slot::take(&pending, a).unwrap())
            .collect();
        assert!(Slot::take(&pending, a).is_none(), "one address is capped");
        assert!(Slot::take(&pending, b).is_some(), "others still get in");
        drop(held);
        let p = pending.lock().unwrap();
        assert_eq!(p.total, 0);
        assert!(p.per_ip.is_empty());
    }
}
