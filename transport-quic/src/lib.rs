//! # transport-quic
//!
//! Ferry's [`Transport`] for HTTP/3: h3 over quinn with rustls (the ring
//! provider, named explicitly). It trusts the same roots, honours the same
//! pins and `--resolve` overrides, and reports the same typed TLS errors as
//! transport-http, from the same [`HttpConfig`].
//!
//! - **One QUIC connection per origin**, shared by every request to it (one
//!   stream each); a closed connection is replaced on the next request.
//! - **Bulk settings**: receive windows of 4 MiB per stream and 8 MiB per
//!   connection (chosen by measurement, `benches/windows.rs`), a 30 s idle
//!   timeout kept open by 5 s keep-alives (see [`QuicConfig`]).
//! - **Choice of protocol**: [`ProtocolChoice`] sends a request over HTTP/3
//!   when it asks for it or its origin advertised HTTP/3 (`Alt-Svc`,
//!   remembered for its `ma`), over TCP otherwise or when QUIC does not get
//!   through, and remembers that for a while.
//! - **Timeouts**: the handshake (connect and TLS together) under the
//!   connect timeout, the response head under the first-byte timeout counted
//!   from the end of the request body, the body under the idle timeout.
//! - **Bodies**: request bodies read from files a chunk at a time, with the
//!   sent-bytes callback and the pacer; response bodies stream frame by
//!   frame, and one shorter or longer than its `Content-Length` is an error.
//! - **Redirects** go through the one loop every Ferry transport uses
//!   ([`transfer_core::redirect`]).
//! - **Migration**: [`QuicTransport::rebind`] moves every connection to a
//!   new local socket (a new network path); QUIC carries the streams over
//!   without a new request.
//!
//! ```no_run
//! use transfer_core::{RequestBody, Transport, TransportRequest};
//! use transport_quic::{QuicConfig, QuicTransport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = QuicTransport::new(QuicConfig::default())?;
//! let request = http::Request::get("https://example.com/big.iso").body(RequestBody::empty())?;
//! let response = transport.send(TransportRequest::new(request)).await?;
//! assert_eq!(response.metrics.protocol, transfer_core::Protocol::Http3);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod body;
mod choice;
mod error;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use http::{Method, Response, Uri};
use http_body_util::BodyExt;
use tokio::time::{Instant, timeout, timeout_at};
use transfer_core::redirect::{self, Answer, HopSender, Outgoing};
use transfer_core::{
    ByteCount, ErrorKind, Protocol, ProtocolPreference, RequestMetrics, TimeoutKind, Timeouts,
    TransferError, Transport, TransportRequest, TransportResponse, headers,
};
use transport_http::HttpConfig;
use transport_http::request_body::RequestBodyStream;
use transport_http::tls::{Refusal, TlsSetup};

use crate::body::H3Body;
use crate::error::{connection_error, stream_error};

pub use choice::ProtocolChoice;
pub use transport_http::ConfigError;

/// Settings of a [`QuicTransport`].
#[derive(Clone, Debug)]
pub struct QuicConfig {
    http: HttpConfig,
    idle_timeout: Duration,
    keep_alive: Duration,
    stream_window: u32,
    connection_window: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            http: HttpConfig::default(),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            stream_window: 4 << 20,
            connection_window: 8 << 20,
        }
    }
}

impl QuicConfig {
    /// Roots, pins, `--resolve` overrides and the user agent, shared with
    /// transport-http (its connection-pool and HTTP/2 settings do not apply;
    /// nor do its proxies: HTTP/3 goes direct, and a
    /// [`ProtocolChoice`] keeps URLs that a proxy carries on TCP).
    pub fn http(mut self, http: HttpConfig) -> Self {
        self.http = http;
        self
    }

    /// How long a connection with nothing to say stays open (default 30 s).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// How often an idle connection proves it is alive (default 5 s), so
    /// NATs keep its path open between requests.
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every;
        self
    }

    /// Receive windows per stream and per connection (default 4 and
    /// 8 MiB: `cargo bench -p transport-quic --bench windows` measured them
    /// ahead of quinn's defaults and of 16/32 MiB on loopback).
    pub fn windows(mut self, stream: u32, connection: u32) -> Self {
        self.stream_window = stream;
        self.connection_window = connection.max(stream);
        self
    }
}

/// Sends requests over HTTP/3; see the crate documentation.
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("config", &self.inner.config)
            .finish()
    }
}

struct Inner {
    config: QuicConfig,
    tls: TlsSetup,
    transport: Arc<quinn::TransportConfig>,
    /// Client endpoints (local UDP sockets), one per address family.
    endpoints: Mutex<Endpoints>,
    /// One slot per origin; the async lock makes concurrent first requests
    /// share one handshake.
    conns: Mutex<HashMap<Origin, Slot>>,
}

/// An origin's connection, if open; locked while one is being made.
type Slot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

#[derive(Default)]
struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Origin {
    host: String,
    port: u16,
}

/// One QUIC connection with its HTTP/3 request sender.
struct Conn {
    quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    dns: Option<Duration>,
    handshake: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl QuicTransport {
    /// A transport with `config` (loads the trusted roots).
    pub fn new(config: QuicConfig) -> Result<QuicTransport, ConfigError> {
        let tls = TlsSetup::new(&config.http)?;
        let mut transport = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
            .map_err(|e| ConfigError::Certificate(format!("idle timeout: {e}")))?;
        transport
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(config.keep_alive))
            .stream_receive_window(quinn::VarInt::from_u32(config.stream_window))
            .receive_window(quinn::VarInt::from_u32(config.connection_window))
            .send_window(u64::from(config.connection_window));
        Ok(QuicTransport {
            inner: Arc::new(Inner {
                config,
                tls,
                transport: Arc::new(transport),
                endpoints: Mutex::new(Endpoints::default()),
                conns: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Moves every open connection to a new local UDP socket, as when the
    /// network path changes (another interface, another address). QUIC
    /// validates the new path and carries the connections' streams over:
    /// transfers in flight continue without a new request.
    pub fn rebind(&self) -> std::io::Result<()> {
        let endpoints = lock(&self.inner.endpoints);
        if let Some(e) = &endpoints.v4 {
            e.rebind(std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?)?;
        }
        if let Some(e) = &endpoints.v6 {
            e.rebind(std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?)?;
        }
        Ok(())
    }

    /// The local addresses of the endpoints (IPv4, then IPv6, those bound).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let endpoints = lock(&self.inner.endpoints);
        [&endpoints.v4, &endpoints.v6]
            .into_iter()
            .flatten()
            .filter_map(|e| e.local_addr().ok())
            .collect()
    }

    fn endpoint_for(&self, addr: SocketAddr) -> Result<quinn::Endpoint, TransferError> {
        let mut endpoints = lock(&self.inner.endpoints);
        let (slot, any): (_, SocketAddr) = if addr.is_ipv4() {
            (&mut endpoints.v4, (Ipv4Addr::UNSPECIFIED, 0).into())
        } else {
            (&mut endpoints.v6, (Ipv6Addr::UNSPECIFIED, 0).into())
        };
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let e = quinn::Endpoint::client(any).map_err(|e| {
            TransferError::new(
                ErrorKind::ConnectFailed,
                format!("binding a UDP socket: {e}"),
            )
        })?;
        *slot = Some(e.clone());
        Ok(e)
    }

    /// The origin's connection: the open one, or a new one. `true` when it
    /// was already open.
    async fn conn(
        &self,
        origin: &Origin,
        timeouts: &Timeouts,
    ) -> Result<(Arc<Conn>, bool), TransferError> {
        let slot = lock(&self.inner.conns)
            .entry(origin.clone())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        if let Some(c) = held.as_ref()
            && c.quic.close_reason().is_none()
        {
            return Ok((c.clone(), true));
        }
        let c = Arc::new(self.connect(origin, timeouts).await?);
        *held = Some(c.clone());
        Ok((c, false))
    }

    /// Forgets `conn` if it is still the origin's connection.
    fn forget(&self, origin: &Origin, conn: &Arc<Conn>) {
        let slot = lock(&self.inner.conns).get(origin).cloned();
        if let Some(slot) = slot
            && let Ok(mut held) = slot.try_lock()
            && held.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn))
        {
            *held = None;
        }
    }

    async fn connect(&self, origin: &Origin, timeouts: &Timeouts) -> Result<Conn, TransferError> {
        let started = Instant::now();
        let deadline = started + timeouts.connect;
        let http = &self.inner.config.http;
        let (addrs, dns) =
            transport_http::resolve::lookup(http, &origin.host, origin.port, deadline).await?;
        if addrs.is_empty() {
            return Err(TransferError::new(
                ErrorKind::NoSuchHost,
                format!("cannot resolve {} (it has no addresses)", origin.host),
            ));
        }
        // Every address at once (a name may resolve to ::1 and 127.0.0.1
        // while the server listens on one): the first handshake wins.
        let attempts = addrs
            .iter()
            .map(|&addr| Box::pin(self.handshake(origin, addr, deadline, timeouts.connect)));
        let quic = match futures::future::select_ok(attempts).await {
            Ok((quic, _)) => quic,
            Err(e) => return Err(e),
        };
        let limit = u64::from(http.header_limit());
        let mut builder = h3::client::builder();
        builder.max_field_section_size(limit);
        let h3 = builder.build(h3_quinn::Connection::new(quic.clone()));
        let h3 = timeout_at(deadline, h3).await.map_err(|_| {
            TransferError::new(
                ErrorKind::Timeout(TimeoutKind::Connect),
                format!("HTTP/3 settings from {} took too long", origin.host),
            )
        })?;
        let (mut driver, send) = h3.map_err(|e| {
            TransferError::new(ErrorKind::Quic, format!("HTTP/3 with {}: {e}", origin.host))
        })?;
        let host = origin.host.clone();
        tokio::spawn(async move {
            let e = driver.wait_idle().await;
            tracing::debug!(%host, error = %e, "HTTP/3 connection ended");
        });
        Ok(Conn {
            quic,
            send,
            dns,
            handshake: started.elapsed(),
        })
    }

    /// A QUIC handshake with `addr`, by `deadline`.
    async fn handshake(
        &self,
        origin: &Origin,
        addr: SocketAddr,
        deadline: Instant,
        limit: Duration,
    ) -> Result<quinn::Connection, TransferError> {
        self.inner.tls.prefetch();
        let endpoint = self.endpoint_for(addr)?;
        let refusal = Refusal::new();
        let invalid = |e: String| TransferError::new(ErrorKind::InvalidRequest, e);
        let tls = self
            .inner
            .tls
            .client_config(vec![b"h3".to_vec()], Some(refusal.clone()))
            .map_err(|e| invalid(e.to_string()))?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| invalid(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(self.inner.transport.clone());
        let connecting = endpoint
            .connect_with(client, addr, &origin.host)
            .map_err(|e| invalid(format!("QUIC connection to {}: {e}", origin.host)))?;
        match timeout_at(deadline, connecting).await {
            Ok(Ok(quic)) => Ok(quic),
            Ok(Err(e)) => {
                if let Some(refused) = refusal.take() {
                    return Err(transport_http::tls::tls_error(&origin.host, &refused));
                }
                // Whatever broke it, a handshake that failed is a QUIC
                // failure (the caller may fall back to TCP).
                let e = connection_error(&e, &format!("QUIC handshake with {addr}"));
                Err(TransferError::new(ErrorKind::Quic, e.to_string()))
            }
            Err(_) => Err(TransferError::new(
                ErrorKind::Timeout(TimeoutKind::Connect),
                format!(
                    "no QUIC handshake with {} ({addr}) within {limit:?}",
                    origin.host
                ),
            )),
        }
    }

    /// One request and its response head, on the origin's connection.
    async fn exchange(&self, out: &Outgoing, request: &Hooks) -> Result<Exchange, TransferError> {
        let mut origin = origin_of(&out.uri)?;
        if let Some((authority, port)) = &request.alternative
            && out.uri.authority().map(|a| a.as_str()) == Some(authority.as_str())
        {
            origin.port = *port;
        }
        let timeouts = &request.timeouts;
        let idempotent = matches!(
            out.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let mut attempts_left = 1;
        loop {
            // Opened first: a missing or changed source fails before
            // anything is sent.
            let body =
                RequestBodyStream::open(&out.body, request.on_sent.clone(), request.pacer.clone())?;
            let (conn, reused) = self.conn(&origin, timeouts).await?;
            let head = self.request_head(out);
            tracing::debug!(
                method = %out.method,
                url = %transport_http::trace::shown_uri(&out.uri),
                headers = %transport_http::trace::shown_headers(head.headers()),
                "request over HTTP/3"
            );
            let started = Instant::now();
            let mut sender = conn.send.clone();
            let stream = match timeout(timeouts.first_byte, sender.send_request(head)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    // A connection the server closed while idle: once more on
                    // a new one.
                    self.forget(&origin, &conn);
                    if reused && idempotent && attempts_left > 0 {
                        attempts_left -= 1;
                        continue;
                    }
                    return Err(stream_error(&e, "sending the request"));
                }
                Err(_) => {
                    return Err(TransferError::new(
                        ErrorKind::Timeout(TimeoutKind::FirstByte),
                        format!(
                            "no HTTP/3 stream to {} within {:?}",
                            origin.host, timeouts.first_byte
                        ),
                    ));
                }
            };
            return self
                .finish_exchange(stream, body, conn, reused, started, timeouts)
                .await;
        }
    }

    async fn finish_exchange(
        &self,
        mut stream: h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
        mut body: RequestBodyStream,
        conn: Arc<Conn>,
        reused: bool,
        started: Instant,
        timeouts: &Timeouts,
    ) -> Result<Exchange, TransferError> {
        let mut sent = 0u64;
        // The server may answer before it has read the whole request and
        // ask us to stop sending (`H3_NO_ERROR`, RFC 9114 §4.1): then the
        // answer is read all the same.
        let mut stopped = false;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let n = data.len() as u64;
            match timeout(timeouts.idle, stream.send_data(data)).await {
                Ok(Ok(())) => sent += n,
                Ok(Err(e)) if told_to_stop(&e) => {
                    stopped = true;
                    break;
                }
                Ok(Err(e)) => return Err(stream_error(&e, "sending the request body")),
                Err(_) => {
                    return Err(TransferError::new(
                        ErrorKind::Timeout(TimeoutKind::Idle),
                        format!("the request body did not move for {:?}", timeouts.idle),
                    ));
                }
            }
        }
        if !stopped {
            match timeout(timeouts.idle, stream.finish()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if told_to_stop(&e) => {}
                Ok(Err(e)) => return Err(stream_error(&e, "ending the request")),
                Err(_) => {
                    return Err(TransferError::new(
                        ErrorKind::Timeout(TimeoutKind::Idle),
                        format!("the request did not end within {:?}", timeouts.idle),
                    ));
                }
            }
        }
        let head = match timeout(timeouts.first_byte, stream.recv_response()).await {
            Ok(Ok(head)) => head,
            Ok(Err(e)) => return Err(stream_error(&e, "reading the response head")),
            Err(_) => {
                return Err(TransferError::new(
                    ErrorKind::Timeout(TimeoutKind::FirstByte),
                    format!(
                        "no response head within {:?} of the request",
                        timeouts.first_byte
                    ),
                ));
            }
        };
        Ok(Exchange {
            head,
            stream,
            conn,
            reused,
            first_byte: started.elapsed(),
            sent,
        })
    }

    /// The HTTP/3 request head for `out`.
    fn request_head(&self, out: &Outgoing) -> http::Request<()> {
        let mut head = http::Request::new(());
        *head.method_mut() = out.method.clone();
        *head.uri_mut() = out.uri.clone();
        *head.version_mut() = http::Version::HTTP_3;
        let h = head.headers_mut();
        *h = out.headers.clone();
        let agent = self.inner.config.http.agent();
        headers::finish(h, &out.method, out.body.len(), agent, true);
        head
    }
}

/// What a request brings beside its head and body.
struct Hooks {
    /// An `Alt-Svc` port for the authority of the first request.
    alternative: Option<(String, u16)>,
    timeouts: Timeouts,
    on_sent: Option<transfer_core::SentProgress>,
    pacer: Option<Arc<dyn transfer_core::Pacer>>,
}

/// One request of a [`QuicTransport`] on its way: how the redirect loop
/// sends each hop, on the origin's connection.
struct Hops<'a> {
    transport: &'a QuicTransport,
    hooks: Hooks,
}

impl HopSender for Hops<'_> {
    type Body = H3Body;

    async fn send_hop(&self, out: &Outgoing) -> Result<Answer<H3Body>, TransferError> {
        let ex = self.transport.exchange(out, &self.hooks).await?;
        let status = ex.head.status();
        tracing::info!(
            method = %out.method,
            url = %transport_http::trace::shown_uri(&out.uri),
            status = status.as_u16(),
            protocol = "HTTP/3",
            proxy = "none",
            reused = ex.reused,
            first_byte = ?ex.first_byte,
            "response"
        );
        tracing::debug!(
            headers = %transport_http::trace::shown_headers(ex.head.headers()),
            "response headers"
        );
        let expects_body = out.method != Method::HEAD
            && status != http::StatusCode::NO_CONTENT
            && status != http::StatusCode::NOT_MODIFIED;
        let declared = ex
            .head
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|_| expects_body);
        let received = ByteCount::new();
        let (_, recv) = ex.stream.split();
        let body = H3Body::new(
            recv,
            ex.conn.clone(),
            self.hooks.timeouts.idle,
            received.clone(),
            declared,
            expects_body,
        );
        let metrics = RequestMetrics {
            protocol: Protocol::Http3,
            reused_connection: ex.reused,
            dns: ex.conn.dns.filter(|_| !ex.reused),
            connect: Some(ex.conn.handshake).filter(|_| !ex.reused),
            tls: None,
            first_byte: ex.first_byte,
            bytes_sent: ex.sent,
            redirects: 0,
            remote_addr: Some(ex.conn.quic.remote_address()),
            // HTTP/3 goes direct: proxies carry TCP only.
            proxy: None,
        };
        let (head, ()) = ex.head.into_parts();
        Ok(Answer {
            response: Response::from_parts(head, body),
            metrics,
            received,
        })
    }
}

/// One request's answer, before redirects are judged.
struct Exchange {
    head: Response<()>,
    stream: h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    conn: Arc<Conn>,
    reused: bool,
    first_byte: Duration,
    sent: u64,
}

/// Whether the server asked us to stop sending the request without an
/// error (it has its answer).
fn told_to_stop(e: &h3::error::StreamError) -> bool {
    matches!(e, h3::error::StreamError::RemoteTerminate { code, .. } if *code == h3::error::Code::H3_NO_ERROR)
}

fn origin_of(uri: &Uri) -> Result<Origin, TransferError> {
    if uri.scheme_str() != Some("https") {
        return Err(TransferError::new(
            ErrorKind::InvalidRequest,
            format!("HTTP/3 needs an https URL, not {uri}"),
        ));
    }
    let host = uri.host().ok_or_else(|| {
        TransferError::new(ErrorKind::InvalidRequest, format!("no host in {uri}"))
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = transfer_core::uri_port(uri)
        .map_err(|e| TransferError::new(ErrorKind::InvalidRequest, e))?;
    Ok(Origin {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[async_trait]
impl Transport for QuicTransport {
    fn name(&self) -> &'static str {
        "quic"
    }

    fn handles(&self, url: &Uri, preference: ProtocolPreference) -> bool {
        url.scheme_str() == Some("https") && preference != ProtocolPreference::TcpOnly
    }

    async fn send(&self, request: TransportRequest) -> Result<TransportResponse, TransferError> {
        self.send_via(request, None).await
    }

    fn network_changed(&self) {
        match self.rebind() {
            Ok(()) => {
                tracing::debug!(local = ?self.local_addrs(), "QUIC endpoints moved to new sockets")
            }
            Err(e) => tracing::warn!(error = %e, "QUIC endpoints could not move to new sockets"),
        }
    }
}

impl QuicTransport {
    /// Whether the shared HTTP configuration sends `uri` through a proxy
    /// (which HTTP/3 cannot use).
    pub fn proxied(&self, uri: &http::Uri) -> bool {
        self.inner.config.http.proxy_rules().for_uri(uri).is_some()
    }

    /// Sends `request` over HTTP/3, to `port` on the URL's host instead of
    /// the URL's own port when one is given (an `Alt-Svc` alternative:
    /// `h3=":PORT"`); the request keeps its authority.
    pub async fn send_via(
        &self,
        request: TransportRequest,
        port: Option<u16>,
    ) -> Result<TransportResponse, TransferError> {
        let TransportRequest {
            request,
            options,
            on_sent,
            redirect_hook,
            pacer,
        } = request;
        let alternative = port.and_then(|p| {
            request
                .uri()
                .authority()
                .map(|a| (a.as_str().to_owned(), p))
        });
        let hops = Hops {
            transport: self,
            hooks: Hooks {
                alternative,
                timeouts: options.timeouts,
                on_sent,
                pacer,
            },
        };
        redirect::follow(&hops, request, &options.redirects, redirect_hook.as_ref()).await
    }
}
