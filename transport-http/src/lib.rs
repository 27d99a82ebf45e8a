//! # transport-http
//!
//! Ferry's [`Transport`] for HTTP/1.1 and HTTP/2: hyper 1 connections over
//! rustls (the ring provider, named explicitly), ALPN `h2` / `http/1.1`, and
//! optional HTTP/2 with prior knowledge on plain `http://`.
//!
//! - **Pool**: per origin, idle HTTP/1.1 connections and one shared HTTP/2
//!   connection, at most [`HttpConfig::max_connections_per_host`] open; an
//!   HTTP/1.1 connection is reusable the moment its body ends.
//! - **Streaming**: response bodies pass through frame by frame; request
//!   bodies are read from files a chunk at a time, with a sent-bytes callback.
//!   Downloads ask for `Accept-Encoding: identity`, so ranges count bytes of
//!   the file.
//! - **Dialling**: Happy Eyeballs v2 (RFC 8305) over a host's addresses,
//!   IPv6 and IPv4 alternating, the next attempt
//!   [250 ms](HttpConfig::connection_attempt_delay) after the one before;
//!   a name that does not exist is a permanent
//!   [`ErrorKind::NoSuchHost`].
//! - **Timeouts**: connect (with name resolution), TLS handshake, first byte
//!   (counted from the end of the request body), idle between body chunks;
//!   each a distinct [`TimeoutKind`].
//! - **Redirects**: at most the policy's limit, only to http(s), never
//!   https→http unless allowed, `Authorization`/`Cookie` dropped across
//!   origins, and a [`RedirectHook`](transfer_core::RedirectHook) that may
//!   veto or rewrite each hop.
//! - **TLS**: platform and webpki roots, extra roots, SPKI-SHA256 pins per
//!   host; a refused certificate is a permanent
//!   [`ErrorKind::Tls`] naming the reason.
//! - **Metrics** per request: the protocol negotiated, whether the
//!   connection was reused, DNS / connect / TLS / first-byte times, bytes up,
//!   and a live count of bytes down.
//!
//! The redirect loop and the request-header rules are not HTTP/1-2's own:
//! they are [`transfer_core::redirect`] and [`transfer_core::headers`],
//! which every transport uses. What HTTP/3 (transport-quic) shares with this crate
//! and needs IO for lives in four public modules, each named for what it
//! does, beside [`HttpConfig`] that configures them all:
//! [`tls`] (roots, pins, why a handshake was refused), [`resolve`] (names
//! with `--resolve` overrides), [`request_body`] (request bodies streamed
//! from files) and [`idle`] (the idle timeout between body frames).
//!
//! ```no_run
//! use http_body_util::BodyExt;
//! use transfer_core::{RequestBody, Transport, TransportRequest};
//! use transport_http::{HttpConfig, HttpTransport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = HttpTransport::new(HttpConfig::default())?;
//! let request = http::Request::get("https://example.com/big.iso")
//!     .header("range", "bytes=1048576-")
//!     .body(RequestBody::empty())?;
//! let response = transport.send(TransportRequest::new(request)).await?;
//! println!("{} over {}", response.response.status(), response.metrics.protocol);
//! let mut body = response.response.into_body();
//! while let Some(frame) = body.frame().await {
//!     let frame = frame?; // a classified TransferError on failure
//!     if let Some(chunk) = frame.data_ref() {
//!         let _ = chunk.len(); // write it somewhere
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod config;
mod dial;
mod error;
pub mod idle;
mod pool;
mod proxy;
pub mod request_body;
pub mod resolve;
mod response_body;
pub mod tls;
pub mod trace;
mod tunnel;
mod via;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use transfer_core::redirect::{self, Answer, HopSender, Outgoing};
use transfer_core::{
    ByteCount, ErrorKind, ProtocolPreference, RequestMetrics, RequestOptions, TimeoutKind,
    Timeouts, TransferError, Transport, TransportRequest, TransportResponse, headers,
};

pub use config::{HttpConfig, Roots};
pub use proxy::{Proxies, Proxy, ProxyScheme};
pub use tls::spki_sha256;

use error::from_hyper;
use pool::{Checkout, Key, Pool, Sender};
use request_body::{BodyHooks, SendClock, UploadBody};
use response_body::DownloadBody;

/// Why a transport could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// PEM data held no certificate or could not be read.
    #[error("PEM: {0}")]
    Pem(String),
    /// A certificate was refused as a root or could not be parsed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// No root certificate is trusted at all.
    #[error("no trusted root certificates (the platform store is empty and no roots were added)")]
    NoRoots,
    /// A proxy setting could not be read.
    #[error("proxy {0}")]
    Proxy(String),
}

/// The HTTP/1.1 + HTTP/2 transport. Cheap to share: one per session (clone
/// the `Arc` it is usually kept in); it owns the connection pool.
pub struct HttpTransport {
    pool: Pool,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("config", self.pool.config())
            .finish_non_exhaustive()
    }
}

type HeadFuture = Pin<Box<dyn Future<Output = hyper::Result<Response<Incoming>>> + Send>>;

/// One request's answer on one connection, before redirects are judged.
struct Exchange {
    response: Response<Incoming>,
    checkout_facts: Arc<pool::ConnFacts>,
    reused: bool,
    first_byte: Duration,
    sent: u64,
    returner: Option<pool::Returner>,
}

impl HttpTransport {
    /// A transport with `config`. Fails only if no root can be trusted or an
    /// added root is not a certificate.
    pub fn new(config: HttpConfig) -> Result<Self, ConfigError> {
        let (setup, tls, proxy_tls) = tls::client_config(&config)?;
        Ok(HttpTransport {
            pool: Pool::new(config, setup, tls, proxy_tls),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HttpConfig {
        self.pool.config()
    }

    /// Sends one request on one connection and waits for its head.
    async fn exchange(
        &self,
        key: &Key,
        out: &Outgoing,
        options: &RequestOptions,
        hooks: &BodyHooks,
    ) -> Result<Exchange, TransferError> {
        let Outgoing { method, body, .. } = out;
        let idempotent = matches!(
            *method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        // A pooled connection the server closed as we picked it up fails at
        // once; idempotent requests go again on another connection.
        let mut attempts_left = 2;
        loop {
            let started = Instant::now();
            let clock = SendClock::new(body.is_empty());
            let upload = UploadBody::open(body, clock.clone(), hooks.clone())?;
            let co = self.pool.checkout(key, &options.timeouts).await?;
            let request = self.request_for(&co, key, out, upload)?;
            tracing::debug!(
                method = %request.method(),
                url = %trace::shown_uri(&out.uri),
                headers = %trace::shown_headers(request.headers()),
                "request"
            );
            let Checkout {
                sender,
                facts,
                reused,
                id,
            } = co;
            let (head, returner): (HeadFuture, _) = match sender {
                Sender::H1(mut s) => {
                    let head = Box::pin(s.send_request(request));
                    (head, Some(self.pool.returner(key, id, s, facts.clone())))
                }
                Sender::H2(mut s) => (Box::pin(s.send_request(request)), None),
            };
            match await_head(head, &clock, &options.timeouts).await {
                Ok(response)
                    if facts.forward
                        && response.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED =>
                {
                    // The proxy's answer, not the origin's.
                    if let Some(proxy) = &facts.proxy {
                        return Err(tunnel::refused_407(proxy));
                    }
                    return Err(TransferError::new(
                        ErrorKind::ProxyRefused,
                        "407 from a proxy",
                    ));
                }
                Ok(response) => {
                    tracing::info!(
                        method = %out.method,
                        url = %trace::shown_uri(&out.uri),
                        status = response.status().as_u16(),
                        protocol = %facts.protocol,
                        proxy = %facts.proxy.as_ref().map_or("none".to_owned(), |p| p.to_string()),
                        reused,
                        first_byte = ?started.elapsed(),
                        "response"
                    );
                    tracing::debug!(
                        headers = %trace::shown_headers(response.headers()),
                        "response headers"
                    );
                    return Ok(Exchange {
                        response,
                        checkout_facts: facts,
                        reused,
                        first_byte: started.elapsed(),
                        sent: clock.sent(),
                        returner,
                    });
                }
                Err(e) => {
                    let e = match e {
                        HeadError::Timeout(kind, after) => TransferError::new(
                            ErrorKind::Timeout(kind),
                            format!("no response head from {} within {after:?}", key.host),
                        ),
                        HeadError::Hyper(h) => clock
                            .failure()
                            .unwrap_or_else(|| from_hyper(&h, "sending the request")),
                    };
                    let stale = reused
                        && idempotent
                        && clock.sent() == 0
                        && e.kind() == ErrorKind::ConnectionLost;
                    if stale && attempts_left > 0 {
                        attempts_left -= 1;
                        tracing::debug!(error = %e, "pooled connection was stale; trying again");
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The hyper request for this connection's protocol.
    fn request_for(
        &self,
        co: &Checkout,
        key: &Key,
        out: &Outgoing,
        upload: UploadBody,
    ) -> Result<Request<UploadBody>, TransferError> {
        let Outgoing {
            method,
            uri,
            headers,
            body,
        } = out;
        let h2 = matches!(co.sender, Sender::H2(_));
        let target = if h2 || co.facts.forward {
            // HTTP/2 carries the parts in pseudo-headers; an HTTP proxy is
            // sent the whole URL (absolute form).
            uri.clone()
        } else {
            let pq = uri.path_and_query().map_or("/", |p| p.as_str());
            pq.parse().map_err(|e| {
                TransferError::new(ErrorKind::InvalidRequest, format!("request target: {e}"))
            })?
        };
        let mut request = Request::new(upload);
        *request.method_mut() = method.clone();
        *request.uri_mut() = target;
        *request.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let h = request.headers_mut();
        *h = headers.clone();
        if !h2 && !h.contains_key(header::HOST) {
            let default_port = if key.tls { 443 } else { 80 };
            let host = if key.host.contains(':') {
                format!("[{}]", key.host)
            } else {
                key.host.clone()
            };
            let value = if key.port == default_port {
                host
            } else {
                format!("{host}:{}", key.port)
            };
            let value = HeaderValue::from_str(&value).map_err(|e| {
                TransferError::new(ErrorKind::InvalidRequest, format!("Host header: {e}"))
            })?;
            h.insert(header::HOST, value);
        }
        if co.facts.forward
            && let Some(auth) = co.facts.proxy.as_ref().and_then(|p| p.authorization())
        {
            h.insert(header::PROXY_AUTHORIZATION, auth);
        }
        headers::finish(h, method, body.len(), self.pool.config().agent(), h2);
        Ok(request)
    }
}

enum HeadError {
    Timeout(TimeoutKind, Duration),
    Hyper(hyper::Error),
}

/// Waits for the response head: while the body is being sent the idle
/// timeout applies between chunks; once it is sent, the first-byte timeout.
async fn await_head(
    mut head: HeadFuture,
    clock: &SendClock,
    timeouts: &Timeouts,
) -> Result<Response<Incoming>, HeadError> {
    loop {
        let (deadline, _) = clock.deadline(timeouts.first_byte, timeouts.idle);
        match tokio::time::timeout_at(deadline, &mut head).await {
            Ok(result) => return result.map_err(HeadError::Hyper),
            Err(_) => {
                let (now_deadline, kind_now) = clock.deadline(timeouts.first_byte, timeouts.idle);
                if now_deadline <= Instant::now() {
                    let after = match kind_now {
                        TimeoutKind::FirstByte => timeouts.first_byte,
                        _ => timeouts.idle,
                    };
                    return Err(HeadError::Timeout(kind_now, after));
                }
            }
        }
    }
}

/// One request of an [`HttpTransport`] on its way: how the redirect loop
/// sends each hop, on a pooled connection.
struct Hops<'a> {
    transport: &'a HttpTransport,
    options: &'a RequestOptions,
    hooks: BodyHooks,
}

impl HopSender for Hops<'_> {
    type Body = DownloadBody;

    async fn send_hop(&self, out: &Outgoing) -> Result<Answer<DownloadBody>, TransferError> {
        let key = Key::of(&out.uri, self.transport.config())?;
        let ex = self
            .transport
            .exchange(&key, out, self.options, &self.hooks)
            .await?;
        let received = ByteCount::new();
        let (head, incoming) = ex.response.into_parts();
        let body = DownloadBody::new(
            incoming,
            self.options.timeouts.idle,
            received.clone(),
            ex.returner,
        );
        let facts = &ex.checkout_facts;
        let fresh = !ex.reused;
        let metrics = RequestMetrics {
            protocol: facts.protocol,
            reused_connection: ex.reused,
            dns: facts.dns.filter(|_| fresh),
            connect: Some(facts.connect).filter(|_| fresh),
            tls: facts.tls.filter(|_| fresh),
            first_byte: ex.first_byte,
            bytes_sent: ex.sent,
            redirects: 0,
            remote_addr: facts.remote,
            proxy: facts.proxy.as_ref().map(|p| p.to_string()),
        };
        Ok(Answer {
            response: Response::from_parts(head, body),
            metrics,
            received,
        })
    }

    async fn discard(&self, body: DownloadBody) {
        drain(body).await;
    }
}

/// Reads what is left of a redirect's body (a few KiB at most) so its
/// HTTP/1.1 connection can carry the next hop; gives up on large or slow ones.
async fn drain(body: DownloadBody) {
    const LIMIT: usize = 64 << 10;
    let mut body = body;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > LIMIT {
                break;
            }
        }
    })
    .await;
}

#[async_trait]
impl Transport for HttpTransport {
    fn name(&self) -> &'static str {
        "http"
    }

    fn handles(&self, url: &Uri, preference: ProtocolPreference) -> bool {
        matches!(url.scheme_str(), Some("http" | "https"))
            && preference != ProtocolPreference::RequireHttp3
    }

    async fn send(&self, request: TransportRequest) -> Result<TransportResponse, TransferError> {
        let TransportRequest {
            request,
            options,
            on_sent,
            redirect_hook,
            pacer,
        } = request;
        let hops = Hops {
            transport: self,
            options: &options,
            hooks: BodyHooks { on_sent, pacer },
        };
        redirect::follow(&hops, request, &options.redirects, redirect_hook.as_ref()).await
    }
}
