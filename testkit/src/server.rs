//! The hyper side of the origin: routing, ranges and validators, the fault-
//! shaped body, and the request log.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

use crate::script::{BodyFaults, Fault, Script};

/// How a request reached the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2.
    Http2,
    /// HTTP/3.
    Http3,
}

/// Which listener took the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Listener {
    /// Plain HTTP (HTTP/1.1, or HTTP/2 with prior knowledge).
    Plain,
    /// TLS with ALPN `h2` / `http/1.1`.
    Tls,
    /// The raw HTTP/1.1 listener that can lie about lengths.
    Raw,
    /// TLS with an expired certificate.
    ExpiredTls,
    /// The listener that never answers.
    Silent,
    /// QUIC (HTTP/3) on the TLS listener's port number.
    Quic,
    /// QUIC with the expired certificate, on the expired listener's port.
    ExpiredQuic,
}

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The `Range` header asked, verbatim.
    pub range: Option<String>,
    /// The `If-Range` header asked, verbatim.
    pub if_range: Option<String>,
    /// The status answered.
    pub status: StatusCode,
    /// Body bytes written so far (final once `finished`).
    pub bytes_sent: u64,
    /// Request body bytes read (uploads to `/upload/…`).
    pub bytes_received: u64,
    /// Whether the body was written to its end (false when cut, dropped or still going).
    pub finished: bool,
    /// The HTTP version.
    pub protocol: Protocol,
    /// The listener.
    pub listener: Listener,
    /// The connection's number (unique per origin), to count connections.
    pub connection: u64,
    /// All request headers.
    pub headers: HeaderMap,
    /// When the request arrived.
    pub at: Instant,
    /// When its answer ended: written to its end, cut, or dropped with its
    /// connection (`None` while it is still going).
    pub ended: Option<Instant>,
}

/// Whether, and when, an answer ended.
#[derive(Default)]
pub(crate) struct Finish {
    /// Written to its end.
    whole: AtomicBool,
    /// When it ended, whole or not.
    at: Mutex<Option<Instant>>,
}

impl Finish {
    /// The answer was written to its end.
    pub(crate) fn set(&self) {
        self.whole.store(true, Ordering::Release);
        self.ended();
    }

    /// The answer ended (whole or not), now unless it already had.
    pub(crate) fn ended(&self) {
        lock(&self.at).get_or_insert_with(Instant::now);
    }
}

struct Logged {
    entry: LogEntry,
    sent: Arc<AtomicU64>,
    finished: Arc<Finish>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct ResourceState {
    pub(crate) seed: u64,
    pub(crate) len: u64,
    pub(crate) version: u32,
}

impl ResourceState {
    pub(crate) fn etag(&self) -> String {
        format!("\"s{}-l{}-v{}\"", self.seed, self.len, self.version)
    }

    pub(crate) fn last_modified(&self) -> String {
        // 2026-01-01T00:00:00Z plus an hour per version.
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_600 + u64::from(self.version) * 3600);
        httpdate::fmt_http_date(t)
    }
}

#[derive(Default)]
pub(crate) struct Routes {
    pub(crate) resources: HashMap<String, ResourceState>,
    pub(crate) scripts: HashMap<String, Script>,
    pub(crate) redirects: HashMap<String, (StatusCode, String)>,
    counts: HashMap<String, u64>,
}

/// State shared by all listeners of one origin.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) routes: Mutex<Routes>,
    log: Mutex<Vec<Logged>>,
    pub(crate) next_connection: AtomicU64,
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Resumable uploads in progress, by id.
    pub(crate) uploads: Mutex<HashMap<String, crate::resumable::Upload>>,
    pub(crate) next_upload: AtomicU64,
    /// The `Alt-Svc` value the TLS listener sends, when HTTP/3 is advertised.
    pub(crate) alt_svc: Mutex<Option<HeaderValue>>,
}

/// Locks a mutex, recovering the data if a holder panicked (a test's panic
/// must not turn every later request into a second panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a request resolves to, after scripts and redirects.
pub(crate) enum Plan {
    NotFound,
    Redirect(StatusCode, String),
    Status(StatusCode, Option<String>),
    Serve { resource: ResourceState },
}

impl Shared {
    /// Runs a connection's task; it is aborted when the origin shuts down.
    pub(crate) fn spawn_connection<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task).abort_handle();
        let mut all = lock(&self.connections);
        if all.len() >= 256 {
            all.retain(|h| !h.is_finished());
        }
        all.push(handle);
    }

    /// Aborts every connection task.
    pub(crate) fn abort_connections(&self) {
        for h in lock(&self.connections).drain(..) {
            h.abort();
        }
    }

    /// Counts the request, applies representation changes and decides what to answer.
    pub(crate) fn plan(&self, path: &str, query: Option<&str>) -> (Plan, Vec<Fault>) {
        let mut routes = lock(&self.routes);
        let n = {
            let c = routes.counts.entry(path.to_owned()).or_insert(0);
            *c += 1;
            *c
        };
        let faults = routes
            .scripts
            .get(path)
            .map(|s| s.faults_for(n))
            .unwrap_or_default();
        for f in &faults {
            if let Fault::Status { code, retry_after } = f {
                return (Plan::Status(*code, retry_after.clone()), faults.clone());
            }
        }
        if let Some((code, location)) = routes.redirects.get(path) {
            return (Plan::Redirect(*code, location.clone()), faults);
        }
        if faults.contains(&Fault::ChangeRepresentation) {
            let generated = generated(path, query);
            if let Some(r) = routes.resources.get_mut(path) {
                r.version += 1;
            } else if let Some(mut r) = generated {
                r.version = 1;
                routes.resources.insert(path.to_owned(), r);
            }
        }
        let resource = routes
            .resources
            .get(path)
            .copied()
            .or_else(|| generated(path, query));
        match resource {
            Some(resource) => (Plan::Serve { resource }, faults),
            None => (Plan::NotFound, faults),
        }
    }

    pub(crate) fn record(&self, entry: LogEntry) -> (Arc<AtomicU64>, Arc<Finish>) {
        let sent = Arc::new(AtomicU64::new(entry.bytes_sent));
        let finished = Arc::new(Finish::default());
        if entry.finished {
            finished.set();
        }
        lock(&self.log).push(Logged {
            entry,
            sent: sent.clone(),
            finished: finished.clone(),
        });
        (sent, finished)
    }

    pub(crate) fn log(&self) -> Vec<LogEntry> {
        lock(&self.log)
            .iter()
            .map(|l| {
                let mut e = l.entry.clone();
                e.bytes_sent = l.sent.load(Ordering::Acquire);
                e.finished = l.finished.whole.load(Ordering::Acquire);
                e.ended = *lock(&l.finished.at);
                e
            })
            .collect()
    }

    pub(crate) fn clear_log(&self) {
        lock(&self.log).clear();
    }
}

/// `/gen/{len}?seed=N`: a resource of any size, version 0.
fn generated(path: &str, query: Option<&str>) -> Option<ResourceState> {
    let len: u64 = path.strip_prefix("/gen/")?.parse().ok()?;
    let seed = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("seed="))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Some(ResourceState {
        seed,
        len,
        version: 0,
    })
}

/// A parsed single byte range, resolved against a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeAsk {
    /// No usable range: serve the whole body.
    Whole,
    /// Serve `first..=last`.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

pub(crate) fn parse_range(value: &str, len: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole; // several ranges: answered with the whole body
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len - 1),
            None => RangeAsk::Whole,
        },
        (first, "") => match num(first) {
            Some(f) if f < len => RangeAsk::Part(f, len - 1),
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Whole,
        },
        (first, last) => match (num(first), num(last)) {
            (Some(f), Some(l)) if f <= l && f < len => RangeAsk::Part(f, l.min(len - 1)),
            (Some(f), Some(l)) if f <= l => RangeAsk::Unsatisfiable,
            _ => RangeAsk::Whole,
        },
    }
}

/// Connection facts a request handler needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) id: u64,
    pub(crate) listener: Listener,
}

pub(crate) type OriginBody = BoxBody<Bytes, BodyError>;

/// Why reading a request body failed, whatever protocol carried it.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the handlers read it, whatever protocol carried it.
pub(crate) type ReqBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Why a generated body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The script cut the body.
    #[error("body cut by the test script")]
    Cut,
    /// The script drops the whole connection.
    #[error("connection dropped by the test script")]
    Dropped,
}

pub(crate) fn text(status: StatusCode, msg: String) -> Response<OriginBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(msg))
            .map_err(|n: Infallible| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Answers one request on a hyper connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: ConnInfo,
    req: Request<ReqBody>,
) -> Result<Response<OriginBody>, Cut> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or(path.clone(), |p| p.to_string());
    let (plan, faults) = shared.plan(&path, parts.uri.query());
    let header_str = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let protocol = match parts.version {
        Version::HTTP_2 => Protocol::Http2,
        Version::HTTP_3 => Protocol::Http3,
        _ => Protocol::Http1,
    };

    // What a request whose connection is dropped before an answer is
    // logged as: a 400 that never finished.
    let unanswered = |path_and_query: String, received: u64| LogEntry {
        method: parts.method.clone(),
        path: path_and_query,
        range: None,
        if_range: None,
        status: StatusCode::BAD_REQUEST,
        bytes_sent: 0,
        bytes_received: received,
        finished: false,
        protocol,
        listener: conn.listener,
        connection: conn.id,
        headers: parts.headers.clone(),
        at: Instant::now(),
        ended: None,
    };
    if path.starts_with("/resumable/") {
        let log = unanswered(path_and_query, 0);
        let req = crate::resumable::Request {
            shared: &shared,
            parts: &parts,
            path: &path,
            faults: &faults,
            log,
        };
        return crate::resumable::handle(req, body).await;
    }
    let mut received = 0;
    let mut response = match plan {
        Plan::NotFound
            if path.starts_with("/upload/")
                && (parts.method == Method::PUT || parts.method == Method::POST) =>
        {
            if let Some(k) = faults.iter().find_map(|f| match f {
                Fault::CutAfter(k) => Some(*k),
                _ => None,
            }) {
                let got = consume_up_to(body, k).await;
                shared.record(unanswered(path_and_query, got));
                return Err(Cut);
            }
            let boundary =
                header_str(header::CONTENT_TYPE).and_then(|ct| multer::parse_boundary(ct).ok());
            if let Some(boundary) = boundary {
                let (len, summary) = consume_form(body, boundary).await;
                received = len;
                match summary {
                    Ok(json) => {
                        let mut r = text(StatusCode::OK, json);
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        r.headers_mut()
                            .insert("x-received-length", HeaderValue::from(len));
                        r
                    }
                    Err(e) => text(
                        StatusCode::BAD_REQUEST,
                        format!("bad multipart body after {len} bytes: {e}\n"),
                    ),
                }
            } else {
                let rate = faults.iter().find_map(|f| match f {
                    Fault::RateLimit(r) => Some((*r).max(1)),
                    _ => None,
                });
                let (len, digest, complete) = consume(body, rate).await;
                received = len;
                if complete {
                    let mut r = text(StatusCode::OK, format!("received {len} bytes\n"));
                    let h = r.headers_mut();
                    h.insert("x-received-length", HeaderValue::from(len));
                    if let Ok(v) = HeaderValue::from_str(&digest) {
                        h.insert("x-received-sha256", v);
                    }
                    r
                } else {
                    text(
                        StatusCode::BAD_REQUEST,
                        format!("request body broke after {len} bytes\n"),
                    )
                }
            }
        }
        Plan::NotFound => {
            linger(body).await;
            text(StatusCode::NOT_FOUND, format!("no resource at {path}\n"))
        }
        Plan::Redirect(code, location) => {
            linger(body).await;
            let mut r = text(code, format!("see {location}\n"));
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Plan::Status(code, retry_after) => {
            linger(body).await;
            let mut r = text(code, format!("scripted {code}\n"));
            if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Plan::Serve { .. } if parts.method != Method::GET && parts.method != Method::HEAD => {
            linger(body).await;
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} not allowed on {path}\n", parts.method),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        Plan::Serve { resource } => {
            let etag = resource.etag();
            let last_modified = resource.last_modified();
            let ignore = faults.contains(&Fault::IgnoreRange);
            let if_range_ok = match header_str(header::IF_RANGE) {
                None => true,
                Some(v) if v.starts_with('"') => v == etag,
                Some(v) => v == last_modified,
            };
            let ask = match header_str(header::RANGE) {
                Some(r) if !ignore && if_range_ok => parse_range(&r, resource.len),
                _ => RangeAsk::Whole,
            };
            let (status, first, end) = match ask {
                RangeAsk::Whole => (StatusCode::OK, 0, resource.len),
                RangeAsk::Part(f, l) => (StatusCode::PARTIAL_CONTENT, f, l + 1),
                RangeAsk::Unsatisfiable => (StatusCode::RANGE_NOT_SATISFIABLE, 0, 0),
            };
            let mut r = if status == StatusCode::RANGE_NOT_SATISFIABLE {
                let mut r = text(status, String::new());
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", resource.len)) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                r
            } else {
                let body: OriginBody = if parts.method == Method::HEAD {
                    Full::new(Bytes::new())
                        .map_err(|n: Infallible| match n {})
                        .boxed()
                } else {
                    GenBody::new(resource, first, end, BodyFaults::from(&faults)).boxed()
                };
                let mut r = Response::new(body);
                *r.status_mut() = status;
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                if !faults.contains(&Fault::NoLength) {
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - first));
                }
                if status == StatusCode::PARTIAL_CONTENT
                    && let Ok(v) = HeaderValue::from_str(&format!(
                        "bytes {first}-{}/{}",
                        end - 1,
                        resource.len
                    ))
                {
                    h.insert(header::CONTENT_RANGE, v);
                }
                r
            };
            let h = r.headers_mut();
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            if !faults.contains(&Fault::NoValidators) {
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    h.insert(header::ETAG, v);
                }
                if let Ok(v) = HeaderValue::from_str(&last_modified) {
                    h.insert(header::LAST_MODIFIED, v);
                }
            }
            for f in &faults {
                if let Fault::ReprDigest(right) = f {
                    use base64::Engine as _;
                    let mut digest =
                        crate::body::sha256(resource.seed, resource.version, resource.len);
                    if !right {
                        digest[0] ^= 0xff;
                    }
                    let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
                    if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{b64}:")) {
                        h.insert("repr-digest", v);
                    }
                }
            }
            r
        }
    };
    if conn.listener == Listener::Tls
        && let Some(v) = lock(&shared.alt_svc).clone()
    {
        response.headers_mut().insert("alt-svc", v);
    }
    for f in &faults {
        if let Fault::OversizedHeaders(n) = f {
            add_filler_headers(response.headers_mut(), *n);
        }
    }
    let streams =
        response.status() == StatusCode::OK || response.status() == StatusCode::PARTIAL_CONTENT;
    let entry = LogEntry {
        method: parts.method.clone(),
        path: path_and_query,
        range: header_str(header::RANGE),
        if_range: header_str(header::IF_RANGE),
        status: response.status(),
        bytes_sent: 0,
        bytes_received: received,
        finished: false,
        protocol,
        listener: conn.listener,
        connection: conn.id,
        headers: parts.headers.clone(),
        at: Instant::now(),
        ended: None,
    };
    let (sent, finished) = shared.record(entry);
    if streams && parts.method == Method::GET {
        let (head, body) = response.into_parts();
        let counted = Counted {
            inner: body,
            sent,
            finished,
        };
        response = Response::from_parts(head, counted.boxed());
    } else {
        finished.set();
    }
    Ok(response)
}

/// Reads and drops a request body the answer does not need (up to 64 MiB),
/// as nginx's lingering close does: answering first and closing would reset
/// the connection under a client still sending, losing the answer.
async fn linger(body: ReqBody) {
    if body.is_end_stream() {
        return;
    }
    let mut body = body;
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > 64 << 20 {
            break;
        }
    }
}

/// Reads a request body to its end: its length, hex SHA-256, and whether it
/// ended cleanly.
/// The connection is dropped on purpose (a scripted cut of an upload).
#[derive(Debug, thiserror::Error)]
#[error("connection cut by the script")]
pub(crate) struct Cut;

/// Reads up to `k` bytes of a request body; returns how many came.
async fn consume_up_to(mut body: ReqBody, k: u64) -> u64 {
    let mut len = 0u64;
    while len < k {
        match body.frame().await {
            Some(Ok(frame)) => len += frame.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
    len
}

/// Reads a `multipart/form-data` body and describes each part: name, file
/// name, content type, length and SHA-256 (JSON, one object per part).
async fn consume_form(body: ReqBody, boundary: String) -> (u64, Result<String, multer::Error>) {
    use sha2::{Digest, Sha256};
    let total = Arc::new(AtomicU64::new(0));
    let counted = total.clone();
    let stream = http_body_util::BodyStream::new(body).filter_map(move |frame| {
        let data = match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(e)),
        };
        if let Some(Ok(d)) = &data {
            counted.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        std::future::ready(data)
    });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    let result = async {
        while let Some(mut field) = form.next_field().await? {
            let name = field.name().map(str::to_owned);
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            let mut hasher = Sha256::new();
            let mut len = 0u64;
            let mut text = Vec::new();
            while let Some(chunk) = field.chunk().await? {
                hasher.update(&chunk);
                len += chunk.len() as u64;
                if file_name.is_none() && text.len() < 4096 {
                    text.extend_from_slice(&chunk);
                }
            }
            let digest: [u8; 32] = hasher.finalize().into();
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let mut part = serde_json::json!({
                "name": name,
                "file_name": file_name,
                "content_type": content_type,
                "length": len,
                "sha256": hex,
            });
            if file_name.is_none() {
                part["value"] = String::from_utf8_lossy(&text).into_owned().into();
            }
            parts.push(part);
        }
        Ok(serde_json::json!({ "parts": parts }).to_string())
    }
    .await;
    (total.load(Ordering::Relaxed), result)
}

/// Reads a request body (at most `rate` bytes per second when given):
/// its length, SHA-256, and whether it ended cleanly.
async fn consume(mut body: ReqBody, rate: Option<u64>) -> (u64, String, bool) {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let start = tokio::time::Instant::now();
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    len += data.len() as u64;
                }
                if let Some(rate) = rate {
                    let due = Duration::from_secs_f64(len as f64 / rate as f64);
                    tokio::time::sleep_until(start + due).await;
                }
            }
            Some(Err(_)) => return (len, String::new(), false),
        }
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    (len, hex, true)
}

fn add_filler_headers(h: &mut HeaderMap, total: usize) {
    let mut left = total;
    let mut i = 0;
    while left > 0 {
        let n = left.min(4096);
        let name = format!("x-filler-{i}");
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&"f".repeat(n)),
        ) {
            h.insert(k, v);
        }
        left -= n;
        i += 1;
    }
}

/// Counts the body bytes handed to the connection, for the log.
struct Counted {
    inner: OriginBody,
    sent: Arc<AtomicU64>,
    finished: Arc<Finish>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        // Cut, or dropped with its connection: it ends here either way.
        self.finished.ended();
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    self.sent.fetch_add(d.len() as u64, Ordering::AcqRel);
                }
                // Connections stop polling a body that says it has ended.
                if self.inner.is_end_stream() {
                    self.finished.set();
                }
            }
            Some(Err(_)) => {}
            None => self.finished.set(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const CHUNK: u64 = 128 * 1024;

/// A seeded body, shaped by cut, stall and rate faults.
pub(crate) struct GenBody {
    seed: u64,
    version: u32,
    pos: u64,
    end: u64,
    sent: u64,
    faults: BodyFaults,
    stalled: bool,
    /// The cut point was reached and the connection given time to flush.
    cut_armed: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    start: tokio::time::Instant,
}

/// Pause before a cut, so the connection flushes the bytes before it: an
/// error from the body makes hyper drop what it has buffered.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(20);

impl GenBody {
    pub(crate) fn new(r: ResourceState, first: u64, end: u64, faults: BodyFaults) -> Self {
        GenBody {
            seed: r.seed,
            version: r.version,
            pos: first,
            end,
            sent: 0,
            faults,
            stalled: false,
            cut_armed: false,
            sleep: None,
            start: tokio::time::Instant::now(),
        }
    }

    fn wait(&mut self, d: Duration) {
        self.sleep = Some(Box::pin(tokio::time::sleep(d)));
    }
}

impl Body for GenBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            if let Some(s) = this.sleep.as_mut() {
                ready!(s.as_mut().poll(cx));
                this.sleep = None;
            }
            if this.pos >= this.end {
                return Poll::Ready(None);
            }
            let mut n = CHUNK.min(this.end - this.pos);
            if let Some(cut) = this.faults.cut_after {
                if this.sent >= cut {
                    if this.cut_armed {
                        let e = if this.faults.drop_connection {
                            BodyError::Dropped
                        } else {
                            BodyError::Cut
                        };
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.cut_armed = true;
                    this.wait(FLUSH_BEFORE_CUT);
                    continue;
                }
                n = n.min(cut - this.sent);
            }
            if let Some((after, pause)) = this.faults.stall
                && !this.stalled
            {
                if this.sent >= after {
                    this.stalled = true;
                    this.wait(pause);
                    continue;
                }
                n = n.min(after - this.sent);
            }
            if let Some(rate) = this.faults.rate {
                n = n.min((rate / 10).max(1));
                let due = Duration::from_secs_f64((this.sent + n) as f64 / rate as f64);
                let elapsed = this.start.elapsed();
                if due > elapsed {
                    this.wait(due - elapsed);
                    continue;
                }
            }
            let len = usize::try_from(n).unwrap_or(usize::MAX);
            let mut buf = vec![0u8; len];
            crate::body::fill(this.seed, this.version, this.pos, &mut buf);
            this.pos += n;
            this.sent += n;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        if self.faults.no_length {
            // Nothing for the server to derive a Content-Length from.
            return SizeHint::default();
        }
        SizeHint::with_exact(self.end - self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_like_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAsk::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), RangeAsk::Part(0, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeAsk::Part(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=9-1", 100), RangeAsk::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeAsk::Whole);
    }
}
