//! # testkit
//!
//! Ferry's origin server for tests and benchmarks, started in-process on
//! 127.0.0.1 with ephemeral ports. One [`Origin`] runs eight listeners that
//! share one route table and one request log:
//!
//! - plain HTTP: HTTP/1.1, and HTTP/2 with prior knowledge (h2c);
//! - TLS with ALPN `h2` and `http/1.1` (no ALPN means HTTP/1.1), with a root
//!   CA made at start-up ([`Origin::root_cert_pem`]) and a leaf for
//!   `localhost`, `127.0.0.1` and `::1`;
//! - a raw HTTP/1.1 responder for lying `Content-Length`s ([`Fault::LieLength`]);
//! - TLS with an expired certificate ([`Origin::expired_https_url`]);
//! - a listener that accepts and never answers ([`Origin::silent_url`]);
//! - HTTP/3 over QUIC on UDP, on the port numbers of the TLS listener
//!   ([`Origin::https_url`] serves both), of the expired one, and of the
//!   silent one (datagrams in, nothing out).
//!
//! `PUT`/`POST` to `/upload/…` is a sink that answers with the length and
//! SHA-256 of what it received (`x-received-length`, `x-received-sha256`);
//! a `multipart/form-data` body is answered with JSON describing each part
//! (name, file name, content type, length, SHA-256, and a text field's
//! value). [`Fault::RateLimit`] on an upload path reads the body at that
//! pace; [`Fault::CutAfter`] reads that many bytes of
//! the request body and drops the connection without an answer (logged as
//! a 400 that never finished).
//! [`BlackHole`] is an address whose connects hang. [`Relay`] sits in front
//! of a server this crate does not run, counting, pacing and cutting what
//! clients send. The conformance suites
//! every store and transport runs are in [`conformance`].
//!
//! Bodies are generated from a seed ([`body`]), so any size and any range is
//! served without storage and checked with [`body::bytes`] / [`body::sha256`].
//! Resources carry a strong ETag and a Last-Modified; `Range` and `If-Range`
//! are honoured (one range; several ranges get the whole body). [`Script`]s
//! make requests fail on purpose: cuts, dropped connections, stalls, status sequences, changed
//! representations, ignored ranges, lying lengths, redirect chains, rate
//! limits, oversized headers.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), testkit::Error> {
//! use testkit::{Fault, Origin, Resource, Script};
//!
//! let origin = Origin::start().await?;
//! origin.resource("/file.bin", Resource::seeded(7, 10 << 20));
//! origin.script("/file.bin", Script::new().nth(1, Fault::CutAfter(1 << 20)));
//! let url = origin.https_url("/file.bin"); // https://localhost:PORT/file.bin
//! assert!(url.starts_with("https://localhost:"));
//! assert!(origin.root_cert_pem().contains("BEGIN CERTIFICATE"));
//! assert!(origin.log().is_empty());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod body;
mod caddy;
pub mod conformance;
mod h3;
mod moto;
mod process;
mod proxies;
mod raw;
mod relay;
mod resumable;
mod script;
mod server;
mod tls;
mod udp_relay;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::StatusCode;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub use caddy::Caddy;
pub use moto::Moto;
pub use proxies::{DANTE_PASSWORD, DANTE_USER, Dante, Squid};
pub use relay::{Relay, RelayConfig};
pub use script::{Fault, Script, When};
pub use server::{BodyError, Listener, LogEntry, Protocol};
use server::{ConnInfo, ResourceState, Shared, lock};
pub use tls::{PemCertificates, pem_certificates};
pub use udp_relay::{UdpRelay, UdpRelayConfig};

/// Why the origin could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or accepting failed.
    #[error("origin I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A resource the origin serves at a registered path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    seed: u64,
    len: u64,
}

impl Resource {
    /// `len` bytes generated from `seed` (see [`body`]).
    pub fn seeded(seed: u64, len: u64) -> Self {
        Resource { seed, len }
    }
}

/// A running origin. Dropping it stops its listeners and connections.
pub struct Origin {
    shared: Arc<Shared>,
    http: SocketAddr,
    https: SocketAddr,
    raw: SocketAddr,
    expired: SocketAddr,
    silent: SocketAddr,
    root_pem: String,
    root_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_spki: [u8; 32],
    udp: Arc<h3::UdpSwitch>,
    listeners: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("http", &self.http)
            .field("https", &self.https)
            .field("raw", &self.raw)
            .finish()
    }
}

/// Receive windows for bulk HTTP/2 (the defaults, 64 KiB, starve a fast
/// client on loopback).
const H2_STREAM_WINDOW: u32 = 16 << 20;
const H2_CONNECTION_WINDOW: u32 = 32 << 20;
const H2_MAX_FRAME: u32 = 1 << 20;

impl Origin {
    /// Starts all listeners on 127.0.0.1 with ephemeral ports.
    pub async fn start() -> Result<Origin, Error> {
        let certs = tls::generate()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(
            &certs.chain,
            &certs.key,
        )?));
        let expired_acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(
            &certs.expired_chain,
            &certs.expired_key,
        )?));
        let shared = Arc::new(Shared::default());
        let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
        let (plain, raw) = (bind().await?, bind().await?);
        let (secure, quic) = twin_ports().await?;
        let (expired, expired_quic) = twin_ports().await?;
        let (silent, silent_udp) = twin_ports().await?;
        let udp = Arc::new(h3::UdpSwitch::default());
        let quic = h3::endpoint(
            quic,
            tls::server_config(&certs.chain, &certs.key)?,
            udp.clone(),
        )?;
        let expired_tls = tls::server_config(&certs.expired_chain, &certs.expired_key)?;
        let expired_quic = h3::endpoint(expired_quic, expired_tls, udp.clone())?;
        silent_udp.set_nonblocking(true)?;
        let silent_udp = tokio::net::UdpSocket::from_std(silent_udp)?;
        let addr = |l: &TcpListener| l.local_addr();
        let (http, https, raw_addr) = (addr(&plain)?, addr(&secure)?, addr(&raw)?);
        let (expired_addr, silent_addr) = (addr(&expired)?, addr(&silent)?);

        let tls_serve = |acceptor: tokio_rustls::TlsAcceptor| {
            move |stream, shared, conn| {
                let acceptor = acceptor.clone();
                async move {
                    match acceptor.accept(stream).await {
                        Ok(tls) => serve(tls, shared, conn).await,
                        Err(e) => tracing::debug!(error = %e, "TLS handshake refused"),
                    }
                }
            }
        };
        let listeners = vec![
            tokio::spawn(accept_loop(plain, shared.clone(), Listener::Plain, serve)),
            tokio::spawn(accept_loop(
                secure,
                shared.clone(),
                Listener::Tls,
                tls_serve(acceptor),
            )),
            tokio::spawn(accept_loop(raw, shared.clone(), Listener::Raw, raw::serve)),
            tokio::spawn(accept_loop(
                expired,
                shared.clone(),
                Listener::ExpiredTls,
                tls_serve(expired_acceptor),
            )),
            tokio::spawn(accept_loop(
                silent,
                shared.clone(),
                Listener::Silent,
                hold_silently,
            )),
            tokio::spawn(h3::accept_loop(quic, shared.clone(), Listener::Quic)),
            tokio::spawn(h3::accept_loop(
                expired_quic,
                shared.clone(),
                Listener::ExpiredQuic,
            )),
            tokio::spawn(async move {
                // Datagrams in, nothing out: a QUIC handshake that never ends.
                let mut buf = vec![0u8; 65536];
                while silent_udp.recv_from(&mut buf).await.is_ok() {}
            }),
        ];
        Ok(Origin {
            shared,
            http,
            https,
            raw: raw_addr,
            expired: expired_addr,
            silent: silent_addr,
            root_pem: certs.root_pem,
            root_der: certs.root_der,
            leaf_der: certs.chain[0].clone(),
            leaf_spki: certs.leaf_spki_sha256,
            udp,
            listeners,
        })
    }

    /// `https://localhost:PORT{path}` on a TLS listener whose certificate
    /// (trusted root, right names) expired in 2021.
    pub fn expired_https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.expired.port())
    }

    /// `{scheme}://127.0.0.1:PORT{path}` on a listener that accepts
    /// connections and never answers (not even a TLS handshake): for
    /// first-byte and TLS timeouts.
    pub fn silent_url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.silent)
    }

    /// SHA-256 of the TLS listener's leaf SubjectPublicKeyInfo: a pin that
    /// matches it.
    pub fn leaf_spki_sha256(&self) -> [u8; 32] {
        self.leaf_spki
    }

    /// The TLS listener's leaf certificate (DER).
    pub fn leaf_cert_der(&self) -> CertificateDer<'static> {
        self.leaf_der.clone()
    }

    /// `http://127.0.0.1:PORT{path}` on the plain listener.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `https://localhost:PORT{path}` on the TLS listener.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    /// `http://127.0.0.1:PORT{path}` on the raw listener (lying lengths).
    pub fn raw_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.raw)
    }

    /// The plain listener's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The TLS listener's address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https
    }

    /// The raw listener's address.
    pub fn raw_addr(&self) -> SocketAddr {
        self.raw
    }

    /// Serves `resource` at `path` (replacing what was there, version 0).
    pub fn resource(&self, path: &str, resource: Resource) {
        let state = ResourceState {
            seed: resource.seed,
            len: resource.len,
            version: 0,
        };
        lock(&self.shared.routes)
            .resources
            .insert(path.to_owned(), state);
    }

    /// The current ETag of the resource at `path`, if it is one.
    pub fn etag(&self, path: &str) -> Option<String> {
        lock(&self.shared.routes)
            .resources
            .get(path)
            .map(ResourceState::etag)
    }

    /// The current version of the resource at `path` (bumped by
    /// [`Fault::ChangeRepresentation`]); 0 for generated paths never changed.
    pub fn version(&self, path: &str) -> u32 {
        lock(&self.shared.routes)
            .resources
            .get(path)
            .map_or(0, |r| r.version)
    }

    /// Sets the fault script of `path` (requests are counted per path, from 1).
    pub fn script(&self, path: &str, script: Script) {
        lock(&self.shared.routes)
            .scripts
            .insert(path.to_owned(), script);
    }

    /// Answers requests to `from` with a redirect `status` to `location`
    /// (relative, or absolute such as [`http_url`](Self::http_url)`(..)`).
    pub fn redirect(&self, from: &str, status: u16, location: &str) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
        lock(&self.shared.routes)
            .redirects
            .insert(from.to_owned(), (status, location.to_owned()));
    }

    /// Advertises the HTTP/3 listener on the TLS listener's answers
    /// (`Alt-Svc: h3=":PORT"; ma=MAX_AGE`), or stops (`None`).
    pub fn advertise_h3(&self, max_age: Option<u64>) {
        let value = max_age.and_then(|ma| {
            http::HeaderValue::from_str(&format!("h3=\":{}\"; ma={ma}", self.https.port())).ok()
        });
        *lock(&self.shared.alt_svc) = value;
    }

    /// Drops every datagram to and from the HTTP/3 listeners while `true`,
    /// as a network that blocks UDP does.
    pub fn block_udp(&self, blocked: bool) {
        self.udp.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Datagrams the HTTP/3 listeners dropped while UDP was blocked.
    pub fn udp_dropped(&self) -> u64 {
        self.udp.dropped.load(Ordering::Relaxed)
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<LogEntry> {
        self.shared.log()
    }

    /// Forgets the requests logged so far.
    pub fn clear_log(&self) {
        self.shared.clear_log();
    }

    /// The root certificate in PEM, for clients to trust.
    pub fn root_cert_pem(&self) -> &str {
        &self.root_pem
    }

    /// The root certificate in DER.
    pub fn root_cert_der(&self) -> CertificateDer<'static> {
        self.root_der.clone()
    }

    /// A rustls client configuration (ring provider) that trusts only this
    /// origin's root and offers `alpn` (empty: no ALPN).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, Error> {
        tls::client_config(&self.root_der, alpn)
    }

    /// Stops the listeners and every open connection.
    pub async fn shutdown(mut self) {
        self.stop();
        for l in self.listeners.drain(..) {
            let _ = l.await;
        }
    }

    fn stop(&self) {
        for l in &self.listeners {
            l.abort();
        }
        self.shared.abort_connections();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until aborted, numbering them and running `handler` on each.
async fn accept_loop<F, Fut>(listener: TcpListener, shared: Arc<Shared>, kind: Listener, handler: F)
where
    F: Fn(TcpStream, Arc<Shared>, ConnInfo) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                let conn = ConnInfo { id, listener: kind };
                shared.spawn_connection(handler(stream, shared.clone(), conn));
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// A TCP listener and a UDP socket with the same port number on 127.0.0.1
/// (HTTP/3 beside HTTPS, as `Alt-Svc: h3=":PORT"` advertises it).
async fn twin_ports() -> Result<(TcpListener, std::net::UdpSocket), Error> {
    for _ in 0..50 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = tcp.local_addr()?.port();
        if let Ok(udp) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) {
            return Ok((tcp, udp));
        }
    }
    Err(Error::Io(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both TCP and UDP",
    )))
}

/// Reads and discards whatever the client sends, answering nothing, until the
/// client goes away or the origin stops.
async fn hold_silently(mut stream: TcpStream, _shared: Arc<Shared>, _conn: ConnInfo) {
    let mut sink = tokio::io::sink();
    let _ = tokio::io::copy(&mut stream, &mut sink).await;
}

/// A TCP address whose connection attempts hang: a listener with a full
/// accept queue that never accepts, so the kernel drops further SYNs. For
/// connect timeouts. Dropping it closes everything.
#[derive(Debug)]
pub struct BlackHole {
    addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl BlackHole {
    /// Binds on 127.0.0.1 and fills the accept queue.
    pub async fn start() -> Result<BlackHole, Error> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let listener = socket.listen(0)?;
        let addr = listener.local_addr()?;
        let mut queued = Vec::new();
        // The queue holds one or two connections, whatever the kernel's
        // rounding; stop at the first attempt that hangs.
        for _ in 0..8 {
            match tokio::time::timeout(
                std::time::Duration::from_millis(200),
                TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => queued.push(s),
                _ => break,
            }
        }
        Ok(BlackHole {
            addr,
            _listener: listener,
            _queued: queued,
        })
    }

    /// `http://127.0.0.1:PORT{path}`: connecting to it hangs.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn serve<I>(io: I, shared: Arc<Shared>, conn: ConnInfo)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME);
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let req = req.map(|b| b.map_err(server::BoxError::from).boxed_unsync());
        server::handle(shared.clone(), conn, req)
    });
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, connection = conn.id, "connection ended with an error");
    }
}

/// GETs `url` through `transport` and reads the body to its end, keeping
/// nothing: the bytes it had (for throughput benches).
pub async fn drain(
    transport: &dyn transfer_core::Transport,
    url: &str,
) -> Result<u64, transfer_core::TransferError> {
    let request = http::Request::get(url)
        .body(transfer_core::RequestBody::empty())
        .map_err(|e| {
            transfer_core::TransferError::new(
                transfer_core::ErrorKind::InvalidRequest,
                e.to_string(),
            )
        })?;
    let r = transport
        .send(transfer_core::TransportRequest::new(request))
        .await?;
    let mut body = r.response.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        n += frame?.data_ref().map_or(0, |d| d.len() as u64);
    }
    Ok(n)
}
