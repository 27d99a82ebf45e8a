//! The connection pool: per origin, idle HTTP/1.1 connections and at most one
//! shared HTTP/2 connection, never more than the per-host cap open at once.
//!
//! An HTTP/1.1 connection goes back to the pool the moment its response body
//! ends (not when a background task notices), so back-to-back requests reuse
//! it. While the first TLS connection to an origin is being set up, further
//! requests wait to learn whether it speaks HTTP/2 (one connection will do)
//! before opening their own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::Uri;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout};
use transfer_core::{ErrorKind, Protocol, TimeoutKind, Timeouts, TransferError};

use crate::HttpConfig;
use crate::dial;
use crate::error::chain;
use crate::proxy::Proxy;
use crate::request_body::UploadBody;
use crate::resolve;
use crate::tls::handshake_error;

/// An origin: scheme, lowercase host, port, and the proxy that carries
/// requests to it (connections through different proxies are not shared).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) proxy: Option<Proxy>,
}

impl Key {
    pub(crate) fn of(uri: &Uri, config: &HttpConfig) -> Result<Key, TransferError> {
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(TransferError::new(
                    ErrorKind::InvalidRequest,
                    format!("not an http(s) URL: {uri}"),
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| TransferError::new(ErrorKind::InvalidRequest, "URL has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = transfer_core::uri_port(uri)
            .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e))?;
        Ok(Key {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            proxy: config.proxies.for_uri(uri).cloned(),
        })
    }
}

/// Facts about a connection, reported in the metrics of its first request.
#[derive(Clone, Debug)]
pub(crate) struct ConnFacts {
    pub(crate) protocol: Protocol,
    pub(crate) remote: Option<SocketAddr>,
    pub(crate) dns: Option<Duration>,
    pub(crate) connect: Duration,
    pub(crate) tls: Option<Duration>,
    /// The proxy the connection goes through.
    pub(crate) proxy: Option<Proxy>,
    /// Whether requests on it go to an HTTP proxy in absolute form (plain
    /// `http://` URLs through an HTTP proxy), not to the origin.
    pub(crate) forward: bool,
}

pub(crate) enum Sender {
    H1(http1::SendRequest<UploadBody>),
    H2(http2::SendRequest<UploadBody>),
}

/// A connection taken from the pool for one request.
pub(crate) struct Checkout {
    pub(crate) sender: Sender,
    pub(crate) facts: Arc<ConnFacts>,
    pub(crate) reused: bool,
    pub(crate) id: u64,
}

struct Idle {
    id: u64,
    sender: http1::SendRequest<UploadBody>,
    facts: Arc<ConnFacts>,
    since: Instant,
}

struct Shared2 {
    id: u64,
    sender: http2::SendRequest<UploadBody>,
    facts: Arc<ConnFacts>,
}

#[derive(Default)]
struct Host {
    idle: Vec<Idle>,
    h2: Option<Shared2>,
    open: usize,
    connecting: usize,
    /// Learned from the first connection: whether this origin multiplexes.
    multiplexes: Option<bool>,
    changed: Arc<Notify>,
}

pub(crate) struct Pool {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    hosts: Mutex<HashMap<Key, Host>>,
    pub(crate) config: HttpConfig,
    /// The roots and pins behind `tls`.
    setup: crate::tls::TlsSetup,
    pub(crate) tls: tokio_rustls::TlsConnector,
    /// TLS to an `https://` proxy: HTTP/1.1 only (its `CONNECT` and
    /// absolute-form requests), the same roots and pins.
    pub(crate) proxy_tls: tokio_rustls::TlsConnector,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Gives an HTTP/1.1 connection back to the pool once its response is done.
pub(crate) struct Returner {
    inner: Arc<Inner>,
    key: Key,
    id: u64,
    sender: http1::SendRequest<UploadBody>,
    facts: Arc<ConnFacts>,
}

impl Returner {
    pub(crate) fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut hosts = lock(&self.inner.hosts);
        let host = hosts.entry(self.key).or_default();
        host.idle.push(Idle {
            id: self.id,
            sender: self.sender,
            facts: self.facts,
            since: Instant::now(),
        });
        host.changed.notify_waiters();
    }
}

/// Undoes the pool's accounting if a connect attempt is abandoned or fails.
struct Connecting<'a> {
    inner: &'a Arc<Inner>,
    key: &'a Key,
    armed: bool,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        let mut hosts = lock(&self.inner.hosts);
        let host = hosts.entry(self.key.clone()).or_default();
        host.connecting = host.connecting.saturating_sub(1);
        if self.armed {
            host.open = host.open.saturating_sub(1);
        }
        host.changed.notify_waiters();
    }
}

impl Pool {
    pub(crate) fn new(
        config: HttpConfig,
        setup: crate::tls::TlsSetup,
        tls: rustls::ClientConfig,
        proxy_tls: rustls::ClientConfig,
    ) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                hosts: Mutex::new(HashMap::new()),
                config,
                setup,
                tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
                proxy_tls: tokio_rustls::TlsConnector::from(Arc::new(proxy_tls)),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    pub(crate) fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// Something that gives `sender` back to the pool when its response ends.
    pub(crate) fn returner(
        &self,
        key: &Key,
        id: u64,
        sender: http1::SendRequest<UploadBody>,
        facts: Arc<ConnFacts>,
    ) -> Returner {
        Returner {
            inner: self.inner.clone(),
            key: key.clone(),
            id,
            sender,
            facts,
        }
    }

    /// A connection for `key`: an idle or shared one if there is one, else a
    /// new one if the cap allows, else the first to come free.
    pub(crate) async fn checkout(
        &self,
        key: &Key,
        timeouts: &Timeouts,
    ) -> Result<Checkout, TransferError> {
        let cap = self.inner.config.max_per_host;
        let idle_limit = self.inner.config.pool_idle;
        loop {
            let (found, wait) = {
                let mut hosts = lock(&self.inner.hosts);
                let host = hosts.entry(key.clone()).or_default();
                if let Some(h2) = &host.h2 {
                    if h2.sender.is_closed() {
                        host.h2 = None;
                    } else {
                        let co = Checkout {
                            sender: Sender::H2(h2.sender.clone()),
                            facts: h2.facts.clone(),
                            reused: true,
                            id: h2.id,
                        };
                        return Ok(co);
                    }
                }
                let mut found = None;
                while let Some(idle) = host.idle.pop() {
                    // Dropping a stale sender closes its connection.
                    if !idle.sender.is_closed() && idle.since.elapsed() < idle_limit {
                        found = Some(idle);
                        break;
                    }
                }
                let wait = if found.is_some() {
                    None
                } else if host.open < cap
                    && !(host.connecting > 0 && host.multiplexes != Some(false))
                {
                    host.open += 1;
                    host.connecting += 1;
                    None
                } else {
                    Some(host.changed.clone().notified_owned())
                };
                (found, wait)
            };
            if let Some(mut idle) = found {
                if idle.sender.ready().await.is_ok() {
                    return Ok(Checkout {
                        sender: Sender::H1(idle.sender),
                        facts: idle.facts,
                        reused: true,
                        id: idle.id,
                    });
                }
                continue; // closed while idle; try again
            }
            match wait {
                Some(notified) => notified.await,
                None => break,
            }
        }
        let mut guard = Connecting {
            inner: &self.inner,
            key,
            armed: true,
        };
        let (sender, facts) = connect(&self.inner, key, timeouts).await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let facts = Arc::new(facts);
        {
            let mut hosts = lock(&self.inner.hosts);
            let host = hosts.entry(key.clone()).or_default();
            match &sender {
                Sender::H2(s) => {
                    host.multiplexes = Some(true);
                    host.h2 = Some(Shared2 {
                        id,
                        sender: s.clone(),
                        facts: facts.clone(),
                    });
                }
                Sender::H1(_) => host.multiplexes = Some(false),
            }
        }
        guard.armed = false; // the connection's driver now owns the `open` count
        drop(guard);
        Ok(Checkout {
            sender,
            facts,
            reused: false,
            id,
        })
    }
}

/// Resolves, connects, shakes hands, and spawns the connection's driver.
async fn connect(
    inner: &Arc<Inner>,
    key: &Key,
    timeouts: &Timeouts,
) -> Result<(Sender, ConnFacts), TransferError> {
    let started = Instant::now();
    if key.tls {
        // Read while this connects, not after.
        inner.setup.prefetch();
    }
    let deadline = started + timeouts.connect;
    if let Some(proxy) = &key.proxy {
        return crate::via::connect(inner, key, proxy, deadline, timeouts).await;
    }
    let (tcp, dns, connect) = open_tcp(&inner.config, &key.host, key.port, deadline).await?;
    let remote = tcp.peer_addr().ok();

    let (sender, tls) = if key.tls {
        let started = Instant::now();
        let tcp = BufReader::with_capacity(TLS_READ_BUFFER, tcp);
        let stream = tls_handshake(&inner.tls, &key.host, tcp, timeouts.tls).await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        (
            handshake(inner, key, stream, h2).await?,
            Some(started.elapsed()),
        )
    } else {
        let h2 = inner.config.h2_prior_knowledge;
        (handshake(inner, key, tcp, h2).await?, None)
    };
    let protocol = sender.protocol();
    Ok((
        sender,
        ConnFacts {
            protocol,
            remote,
            dns,
            connect,
            tls,
            proxy: None,
            forward: false,
        },
    ))
}

/// Resolves `host` and opens a TCP connection to it on `port` by
/// `deadline`: with the lookup's time, if there was one, and the connect's.
pub(crate) async fn open_tcp(
    config: &HttpConfig,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<(TcpStream, Option<Duration>, Duration), TransferError> {
    let (addrs, dns) = resolve::lookup(config, host, port, deadline).await?;

    let t = Instant::now();
    let tcp = dial::connect(host, port, &addrs, deadline, config.attempt_delay).await?;
    let connect = t.elapsed();
    // Small requests must not wait for Nagle; bulk bodies are unaffected.
    let _ = tcp.set_nodelay(true);
    Ok((tcp, dns, connect))
}

impl Sender {
    /// The protocol it speaks.
    pub(crate) fn protocol(&self) -> Protocol {
        match self {
            Sender::H1(_) => Protocol::Http1,
            Sender::H2(_) => Protocol::Http2,
        }
    }
}

/// The socket reads beneath TLS: rustls reads at most 4 KiB per call; a
/// buffer beneath it turns a bulk download's tens of thousands of small
/// socket reads into 64 KiB ones.
pub(crate) const TLS_READ_BUFFER: usize = 64 << 10;

/// TLS over `io` for `host`, within `limit`; a refusal names its reason.
pub(crate) async fn tls_handshake<S>(
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    io: S,
    limit: Duration,
) -> Result<tokio_rustls::client::TlsStream<S>, TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        TransferError::new(
            ErrorKind::InvalidRequest,
            format!("{host} is not a TLS server name: {e}"),
        )
    })?;
    match timeout(limit, connector.connect(name, io)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(handshake_error(host, e)),
        Err(_) => Err(TransferError::new(
            ErrorKind::Timeout(TimeoutKind::Tls),
            format!("TLS handshake with {host} took over {limit:?}"),
        )),
    }
}

/// Starts HTTP/1.1 or HTTP/2 on `io` and spawns the connection's driver,
/// which gives back the connection's place under the cap when it ends.
pub(crate) async fn handshake<I>(
    inner: &Arc<Inner>,
    key: &Key,
    io: I,
    h2: bool,
) -> Result<Sender, TransferError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &inner.config;
    let io = TokioIo::new(io);
    let done = {
        // Weak: the pool holds this connection's sender, and a transport
        // dropped must close its connections, not keep them and itself alive.
        let inner = Arc::downgrade(inner);
        let key = key.clone();
        move || {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let mut hosts = lock(&inner.hosts);
            if let Some(host) = hosts.get_mut(&key) {
                host.open = host.open.saturating_sub(1);
                if host.h2.as_ref().is_some_and(|h| h.sender.is_closed()) {
                    host.h2 = None;
                }
                host.changed.notify_waiters();
            }
        }
    };
    let failed = |e: hyper::Error| {
        TransferError::new(
            ErrorKind::ConnectionLost,
            format!("starting HTTP with {}: {}", key.host, chain(&e)),
        )
    };
    if h2 {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .initial_stream_window_size(config.h2_stream_window)
            .initial_connection_window_size(config.h2_connection_window)
            .max_frame_size(config.h2_max_frame)
            .max_header_list_size(config.max_header_bytes)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        let (sender, conn) = b.handshake(io).await.map_err(failed)?;
        drive(conn, "HTTP/2", done);
        Ok(Sender::H2(sender))
    } else {
        let mut b = http1::Builder::new();
        b.max_buf_size(config.h1_max_buf)
            .max_headers(200)
            .max_header_size(config.max_header_bytes as usize);
        let (sender, conn) = b.handshake(io).await.map_err(failed)?;
        drive(conn, "HTTP/1.1", done);
        Ok(Sender::H1(sender))
    }
}

/// Runs a connection until it closes, then calls `done`.
fn drive<C>(conn: C, protocol: &'static str, done: impl FnOnce() + Send + 'static)
where
    C: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, protocol, "connection ended");
        }
        done();
    });
}
