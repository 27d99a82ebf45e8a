//! The [`Transport`] trait: send one HTTP request, get a streaming response.
//!
//! Transports (HTTP/1.1 + HTTP/2 in transport-http, HTTP/3 in transport-quic)
//! speak the `http` crate's types. They follow redirects under a
//! [`RedirectPolicy`], enforce [`Timeouts`], and report [`RequestMetrics`].

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use serde::{Deserialize, Serialize};

use crate::error::TransferError;

/// A streaming response body whose errors are already classified.
pub type ResponseBody = UnsyncBoxBody<Bytes, TransferError>;

/// One piece of a request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyPart {
    /// Bytes in memory (e.g. multipart boundaries and text fields).
    Bytes(Bytes),
    /// A range of a file, read while sending.
    File {
        /// The file.
        path: PathBuf,
        /// Where the range starts.
        offset: u64,
        /// How many bytes.
        len: u64,
        /// What the file must still look like: checked when the part is
        /// opened and again before its last bytes are sent, so a file that
        /// changes meanwhile fails the request (`SourceChanged`) instead of
        /// arriving as a torn mix of two versions.
        stamp: Option<FileStamp>,
    },
}

/// What a file looked like when it was checked: its length and modification
/// time (nanoseconds since the Unix epoch, where the platform has one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileStamp {
    /// The length in bytes.
    pub len: u64,
    /// The modification time, in nanoseconds since the Unix epoch.
    pub modified_ns: Option<u64>,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            len: meta.len(),
            modified_ns: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_nanos()).ok()),
        }
    }

    /// Says how `now` differs from this stamp, or `None` when it does not.
    pub fn changed(&self, now: &FileStamp) -> Option<String> {
        if now.len != self.len {
            Some(format!(
                "its size changed from {} to {} bytes",
                self.len, now.len
            ))
        } else if now.modified_ns != self.modified_ns {
            Some("it was modified".to_owned())
        } else {
            None
        }
    }
}

impl BodyPart {
    /// Bytes in this part.
    pub fn len(&self) -> u64 {
        match self {
            BodyPart::Bytes(b) => b.len() as u64,
            BodyPart::File { len, .. } => *len,
        }
    }

    /// Whether the part is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A request body made of parts; the transport streams them in order and can
/// replay them (for a 307/308 redirect). No parts means no body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestBody {
    /// The parts, in order.
    pub parts: Vec<BodyPart>,
}

impl RequestBody {
    /// No body.
    pub fn empty() -> Self {
        RequestBody::default()
    }

    /// A body of one in-memory buffer.
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        RequestBody {
            parts: vec![BodyPart::Bytes(b.into())],
        }
    }

    /// A body that is a range of a file.
    pub fn file(path: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        RequestBody {
            parts: vec![BodyPart::File {
                path: path.into(),
                offset,
                len,
                stamp: None,
            }],
        }
    }

    /// Total length in bytes (sent as `Content-Length`).
    pub fn len(&self) -> u64 {
        self.parts.iter().map(BodyPart::len).sum()
    }

    /// Whether there is no body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Called with the total bytes of the body sent so far.
pub type SentProgress = Arc<dyn Fn(u64) + Send + Sync>;

/// Paces a request body: the transport asks before it hands each chunk of
/// `n` bytes to the connection and sends it once the returned future is
/// done (the scheduler answers from its token buckets, so uploads obey the
/// same task, session and timetable rates as downloads). While a chunk waits
/// here the idle timeout does not run: the pause is the caller's choice.
pub trait Pacer: Send + Sync {
    /// Resolves when `n` more bytes may be sent.
    fn pace(&self, n: u64) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// Time limits for one request. Each expiry is a distinct
/// [`TimeoutKind`](crate::TimeoutKind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// TCP connect or QUIC handshake (default 15 s).
    pub connect: Duration,
    /// TLS handshake (default 15 s).
    pub tls: Duration,
    /// From request sent to response head (default 30 s).
    pub first_byte: Duration,
    /// Between body chunks (default 60 s, the session's idle timeout).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            tls: Duration::from_secs(15),
            first_byte: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// What may be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedirectPolicy {
    /// Most redirects followed for one request (default 10).
    pub max: u32,
    /// Whether an https URL may redirect to http (default false).
    pub allow_https_to_http: bool,
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        RedirectPolicy {
            max: 10,
            allow_https_to_http: false,
        }
    }
}

/// What to do about one redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedirectDecision {
    /// Follow it.
    Follow,
    /// Follow it, but to this URL instead.
    FollowTo(Uri),
    /// Do not follow it: the request fails with
    /// [`ErrorKind::RedirectRefused`](crate::ErrorKind::RedirectRefused).
    Refuse,
}

/// Asked before each redirect that the [`RedirectPolicy`] allows (the
/// scheduler forwards it to the delegate).
#[async_trait]
pub trait RedirectHook: Send + Sync {
    /// Decides about a redirect from `from` to `to` with `status`.
    async fn redirect(&self, from: &Uri, to: &Uri, status: StatusCode) -> RedirectDecision;
}

/// Which HTTP version to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProtocolPreference {
    /// Whatever the transport and the server agree on (ALPN).
    #[default]
    Auto,
    /// HTTP/3 when the transport can, falling back otherwise.
    PreferHttp3,
    /// HTTP/3 only.
    RequireHttp3,
    /// HTTP/1.1 or HTTP/2 over TCP only: never HTTP/3, even where the
    /// server advertises it (curl's `--http2` and `--http1.1`).
    TcpOnly,
}

/// Options of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Time limits.
    pub timeouts: Timeouts,
    /// Redirect rules.
    pub redirects: RedirectPolicy,
    /// HTTP version preference.
    pub protocol: ProtocolPreference,
}

/// A request for a [`Transport`].
pub struct TransportRequest {
    /// Method, URL, headers and body.
    pub request: http::Request<RequestBody>,
    /// Options.
    pub options: RequestOptions,
    /// Called as body bytes are sent.
    pub on_sent: Option<SentProgress>,
    /// Asked before following a redirect.
    pub redirect_hook: Option<Arc<dyn RedirectHook>>,
    /// Paces the request body (none: as fast as the connection takes it).
    pub pacer: Option<Arc<dyn Pacer>>,
}

impl TransportRequest {
    /// A request with default options and no callbacks.
    pub fn new(request: http::Request<RequestBody>) -> Self {
        TransportRequest {
            request,
            options: RequestOptions::default(),
            on_sent: None,
            redirect_hook: None,
            pacer: None,
        }
    }
}

impl fmt::Debug for TransportRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportRequest")
            .field("request", &self.request)
            .field("options", &self.options)
            .field("on_sent", &self.on_sent.is_some())
            .field("redirect_hook", &self.redirect_hook.is_some())
            .field("pacer", &self.pacer.is_some())
            .finish()
    }
}

/// The HTTP version that carried a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
    /// HTTP/3.
    Http3,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
            Protocol::Http3 => "HTTP/3",
        })
    }
}

/// How one request went (of the last hop, when redirected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMetrics {
    /// The protocol actually used.
    pub protocol: Protocol,
    /// Whether an existing connection carried it.
    pub reused_connection: bool,
    /// Name resolution time (new connections).
    pub dns: Option<Duration>,
    /// Connect time (new connections).
    pub connect: Option<Duration>,
    /// TLS handshake time (new TLS connections).
    pub tls: Option<Duration>,
    /// From request start to response head.
    pub first_byte: Duration,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Redirects followed.
    pub redirects: u32,
    /// The peer's address (the proxy's, when one carried the request).
    pub remote_addr: Option<SocketAddr>,
    /// The proxy the request went through, as `scheme://host:port` (never
    /// with its credentials); `None` when it went direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

/// A counter of body bytes shared between a transport and its caller: the
/// transport adds what arrives; the caller reads it at any time (for the
/// metrics of a finished request, the bytes down).
#[derive(Clone, Debug, Default)]
pub struct ByteCount(Arc<AtomicU64>);

impl ByteCount {
    /// A counter at zero.
    pub fn new() -> Self {
        ByteCount::default()
    }

    /// Adds `n` bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The bytes counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A response from a [`Transport`]: head, streaming body, metrics.
#[derive(Debug)]
pub struct TransportResponse {
    /// Status, headers and the streaming body.
    pub response: http::Response<ResponseBody>,
    /// The URL that answered (after redirects).
    pub url: Uri,
    /// Metrics of the request, as of the response head.
    pub metrics: RequestMetrics,
    /// Body bytes received so far (the bytes down); grows as the body is read.
    pub received: ByteCount,
}

/// Sends HTTP requests. Implementations are shared by all of a session's tasks.
#[async_trait]
pub trait Transport: Send + Sync {
    /// A short name for logs and metrics (`"http"`, `"quic"`).
    fn name(&self) -> &'static str;

    /// Whether this transport can carry a request to `url` with `preference`.
    fn handles(&self, url: &Uri, preference: ProtocolPreference) -> bool;

    /// Sends the request, following redirects, and returns once the response
    /// head has arrived; the body streams from the response. Errors are
    /// classified [`TransferError`]s.
    async fn send(&self, request: TransportRequest) -> Result<TransportResponse, TransferError>;

    /// The network path changed (another network or interface). A
    /// transport whose connections can move (QUIC) moves them now, so
    /// transfers in flight continue; the default does nothing (TCP
    /// transfers that break are resumed with a Range).
    fn network_changed(&self) {}
}
