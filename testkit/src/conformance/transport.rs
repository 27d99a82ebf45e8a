//! The [`Transport`] conformance suite: what every transport must do against
//! the test [`Origin`], whatever protocol carries it. Each function panics
//! with a message naming the broken behaviour; [`all`] runs them in turn.
//!
//! A transport crate runs it once per protocol it speaks, e.g.:
//!
//! ```ignore
//! let origin = Origin::start().await?;
//! let make = |setup: &Setup| -> Arc<dyn Transport> { /* build with setup */ };
//! let h = Harness { origin: &origin, make: &make, secure: true, protocol: Protocol::Http2 };
//! testkit::conformance::transport::all(&h).await;
//! ```

// A conformance suite reports a broken behaviour by panicking with a message.
#![allow(clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode, Uri, header};
use http_body_util::BodyExt;
use transfer_core::{
    BodyPart, ErrorClass, ErrorKind, Pacer, Protocol, RedirectDecision, RedirectHook, RequestBody,
    TimeoutKind, TlsFailure, TransferError, Transport, TransportRequest, TransportResponse,
};

use crate::{BlackHole, Fault, Origin, Resource, Script, body};

/// How to build the transport under test for one check.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Trust the origin's root certificate (false: only the default roots).
    pub trust_origin: bool,
    /// SPKI-SHA256 pins per host.
    pub pins: Vec<(String, [u8; 32])>,
    /// Host names to connect to at fixed addresses (curl's `--resolve`).
    pub resolve: Vec<(String, SocketAddr)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            trust_origin: true,
            pins: Vec::new(),
            resolve: Vec::new(),
        }
    }
}

/// Builds a transport for a [`Setup`].
pub type MakeTransport = dyn Fn(&Setup) -> Arc<dyn Transport> + Send + Sync;

/// What the suite runs against.
pub struct Harness<'a> {
    /// The origin serving every request.
    pub origin: &'a Origin,
    /// Builds the transport under test.
    pub make: &'a MakeTransport,
    /// Whether to use the origin's TLS listener (`https://localhost:PORT`)
    /// or its plain one (`http://127.0.0.1:PORT`).
    pub secure: bool,
    /// The protocol every response must have come over.
    pub protocol: Protocol,
}

impl Harness<'_> {
    fn url(&self, path: &str) -> String {
        if self.secure {
            self.origin.https_url(path)
        } else {
            self.origin.http_url(path)
        }
    }

    /// The same listener under another host name (`127.0.0.1` ⇄
    /// `localhost`): another origin, the same server.
    fn other_origin_url(&self, path: &str) -> String {
        if self.secure {
            format!(
                "https://127.0.0.1:{}{path}",
                self.origin.https_addr().port()
            )
        } else {
            format!("http://localhost:{}{path}", self.origin.http_addr().port())
        }
    }

    fn transport(&self) -> Arc<dyn Transport> {
        (self.make)(&Setup::default())
    }
}

/// Runs every check of the suite.
pub async fn all(h: &Harness<'_>) {
    whole_bodies_and_validators(h).await;
    ranges(h).await;
    statuses_pass_through(h).await;
    streams_without_buffering(h).await;
    connection_reuse(h).await;
    timeouts(h).await;
    redirects(h).await;
    upload_progress(h).await;
    paced_uploads(h).await;
    broken_responses(h).await;
    if h.secure {
        tls_failures(h).await;
    }
}

/// A GET of `path` on the harness's listener with extra headers.
async fn get_with(
    h: &Harness<'_>,
    t: &dyn Transport,
    path: &str,
    headers: &[(&str, &str)],
) -> TransportResponse {
    send(
        t,
        request(Method::GET, &h.url(path), headers, RequestBody::empty()),
    )
    .await
}

fn get(url: &str) -> TransportRequest {
    request(Method::GET, url, &[], RequestBody::empty())
}

fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: RequestBody,
) -> TransportRequest {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    TransportRequest::new(
        b.body(body)
            .unwrap_or_else(|e| panic!("test request {url}: {e}")),
    )
}

async fn send(t: &dyn Transport, req: TransportRequest) -> TransportResponse {
    let what = format!("{} {}", req.request.method(), req.request.uri());
    t.send(req)
        .await
        .unwrap_or_else(|e| panic!("{what}: expected a response, got error: {e}"))
}

async fn send_err(t: &dyn Transport, req: TransportRequest) -> TransferError {
    let what = format!("{} {}", req.request.method(), req.request.uri());
    match t.send(req).await {
        Ok(r) => panic!("{what}: expected an error, got {}", r.response.status()),
        Err(e) => e,
    }
}

async fn read_all(r: TransportResponse) -> Result<Vec<u8>, TransferError> {
    let mut body = r.response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            out.extend_from_slice(d);
        }
    }
    Ok(out)
}

fn header_str(r: &TransportResponse, name: header::HeaderName) -> Option<&str> {
    r.response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A whole body arrives intact over the expected protocol, with its validators,
/// and the request asked for `Accept-Encoding: identity`.
pub async fn whole_bodies_and_validators(h: &Harness<'_>) {
    let t = h.transport();
    h.origin.resource("/c/whole", Resource::seeded(11, 3 << 20));
    let r = send(&*t, get(&h.url("/c/whole"))).await;
    assert_eq!(r.response.status(), StatusCode::OK, "whole body status");
    assert_eq!(
        r.metrics.protocol, h.protocol,
        "metrics name the protocol used"
    );
    assert!(
        header_str(&r, header::ETAG).is_some(),
        "ETag passed through"
    );
    assert!(
        header_str(&r, header::LAST_MODIFIED).is_some(),
        "Last-Modified passed through"
    );
    let received = r.received.clone();
    let got = read_all(r)
        .await
        .unwrap_or_else(|e| panic!("whole body: {e}"));
    assert_eq!(got.len(), 3 << 20, "whole body length");
    assert_eq!(body::sha256(11, 0, 3 << 20), sha(&got), "whole body bytes");
    assert_eq!(received.get(), 3 << 20, "bytes-down counter");
    let log = h.origin.log();
    let entry = log
        .iter()
        .rev()
        .find(|e| e.path == "/c/whole")
        .expect("logged");
    let ae = entry
        .headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    assert_eq!(ae, Some("identity"), "downloads ask for identity encoding");
    let origin_protocol = match h.protocol {
        Protocol::Http1 => crate::Protocol::Http1,
        Protocol::Http2 => crate::Protocol::Http2,
        Protocol::Http3 => crate::Protocol::Http3,
    };
    assert_eq!(
        entry.protocol, origin_protocol,
        "origin saw the same protocol"
    );
}

fn sha(data: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(data).into()
}

/// `Range` gives 206 with `Content-Range` and exactly those bytes; `If-Range`
/// with the current validator keeps the range, a stale one gets 200 and the
/// whole body; a range past the end gets 416 with `bytes */LEN`.
pub async fn ranges(h: &Harness<'_>) {
    let t = h.transport();
    let len = 1u64 << 20;
    h.origin.resource("/c/range", Resource::seeded(12, len));
    let etag = h.origin.etag("/c/range").expect("etag");

    let r = get_with(h, &*t, "/c/range", &[("range", "bytes=1000-1999")]).await;
    assert_eq!(
        r.response.status(),
        StatusCode::PARTIAL_CONTENT,
        "range status"
    );
    assert_eq!(
        header_str(&r, header::CONTENT_RANGE),
        Some(format!("bytes 1000-1999/{len}").as_str())
    );
    let got = read_all(r)
        .await
        .unwrap_or_else(|e| panic!("range body: {e}"));
    assert_eq!(got, body::bytes(12, 0, 1000..2000), "range bytes");

    let r = get_with(
        h,
        &*t,
        "/c/range",
        &[("range", "bytes=524288-"), ("if-range", &etag)],
    )
    .await;
    assert_eq!(
        r.response.status(),
        StatusCode::PARTIAL_CONTENT,
        "If-Range with the current ETag"
    );
    let got = read_all(r)
        .await
        .unwrap_or_else(|e| panic!("if-range body: {e}"));
    assert_eq!(got, body::bytes(12, 0, 524_288..len));

    let r = get_with(
        h,
        &*t,
        "/c/range",
        &[("range", "bytes=524288-"), ("if-range", "\"stale\"")],
    )
    .await;
    assert_eq!(
        r.response.status(),
        StatusCode::OK,
        "If-Range with a stale ETag gets the whole body"
    );
    let got = read_all(r)
        .await
        .unwrap_or_else(|e| panic!("stale if-range body: {e}"));
    assert_eq!(got.len() as u64, len);

    let r = get_with(h, &*t, "/c/range", &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(
        r.response.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "range past the end"
    );
    assert_eq!(
        header_str(&r, header::CONTENT_RANGE),
        Some(format!("bytes */{len}").as_str())
    );
    let _ = read_all(r).await;
}

/// Error statuses are answers, not transport errors: the caller judges them.
pub async fn statuses_pass_through(h: &Harness<'_>) {
    let t = h.transport();
    h.origin.script(
        "/c/status",
        Script::new().statuses(&[(503, Some("7")), (404, None)]),
    );
    let r = send(&*t, get(&h.url("/c/status"))).await;
    assert_eq!(r.response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header_str(&r, header::RETRY_AFTER),
        Some("7"),
        "Retry-After passed through"
    );
    let _ = read_all(r).await;
    let r = send(&*t, get(&h.url("/c/status"))).await;
    assert_eq!(r.response.status(), StatusCode::NOT_FOUND);
    let _ = read_all(r).await;
}

/// The first bytes reach the caller while the server is still sending: the
/// body is not buffered whole. The origin stalls mid-body; the bytes before
/// the stall must arrive before the origin finishes.
pub async fn streams_without_buffering(h: &Harness<'_>) {
    let t = h.transport();
    let before = 256u64 << 10;
    h.origin
        .resource("/c/stream", Resource::seeded(13, 4 << 20));
    h.origin.script(
        "/c/stream",
        Script::new().always(Fault::Stall {
            after: before,
            duration: Duration::from_secs(30),
        }),
    );
    let r = send(&*t, get(&h.url("/c/stream"))).await;
    let mut body = r.response.into_body();
    let mut got = Vec::new();
    while (got.len() as u64) < before {
        let frame = tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("bytes before the stall must arrive while the origin is stalled")
            .expect("body ended early")
            .unwrap_or_else(|e| panic!("streaming body: {e}"));
        if let Some(d) = frame.data_ref() {
            got.extend_from_slice(d);
        }
    }
    assert_eq!(&got[..before as usize], &body::bytes(13, 0, 0..before)[..]);
    let entry = h
        .origin
        .log()
        .into_iter()
        .rev()
        .find(|e| e.path == "/c/stream")
        .expect("logged");
    assert!(
        !entry.finished,
        "the caller had the first bytes before the origin finished"
    );
}

/// A second request after a fully read body reuses the connection (and says
/// so); the first reports connect (and TLS) times. HTTP/2 carries concurrent
/// requests on one connection.
pub async fn connection_reuse(h: &Harness<'_>) {
    let t = h.transport();
    h.origin
        .resource("/c/reuse", Resource::seeded(14, 64 << 10));
    h.origin.clear_log();
    let first = send(&*t, get(&h.url("/c/reuse"))).await;
    assert!(
        !first.metrics.reused_connection,
        "first request opens a connection"
    );
    assert!(
        first.metrics.connect.is_some(),
        "connect time of a new connection"
    );
    if h.protocol == Protocol::Http3 {
        // QUIC's handshake is the connect and the TLS handshake at once.
        assert!(
            first.metrics.tls.is_none(),
            "the handshake counts as connect"
        );
    } else {
        assert_eq!(
            first.metrics.tls.is_some(),
            h.secure,
            "TLS time only over TLS"
        );
    }
    assert!(first.metrics.remote_addr.is_some(), "peer address");
    read_all(first).await.unwrap_or_else(|e| panic!("{e}"));
    let second = send(&*t, get(&h.url("/c/reuse"))).await;
    assert!(
        second.metrics.reused_connection,
        "second request reuses the connection"
    );
    assert!(second.metrics.connect.is_none() && second.metrics.tls.is_none());
    read_all(second).await.unwrap_or_else(|e| panic!("{e}"));
    let conns: Vec<u64> = h.origin.log().iter().map(|e| e.connection).collect();
    assert_eq!(conns.len(), 2);
    assert_eq!(conns[0], conns[1], "both requests on one connection");

    if h.protocol != Protocol::Http1 {
        h.origin.clear_log();
        let t = h.transport();
        let (a, b) = tokio::join!(
            send(&*t, get(&h.url("/c/reuse"))),
            send(&*t, get(&h.url("/c/reuse")))
        );
        let (a, b) = tokio::join!(read_all(a), read_all(b));
        a.unwrap_or_else(|e| panic!("{e}"));
        b.unwrap_or_else(|e| panic!("{e}"));
        let conns: Vec<u64> = h.origin.log().iter().map(|e| e.connection).collect();
        assert_eq!(conns.len(), 2);
        assert_eq!(
            conns[0], conns[1],
            "concurrent requests multiplexed on one connection"
        );
    }
}

fn short(mut req: TransportRequest, d: Duration) -> TransportRequest {
    req.options.timeouts.connect = d;
    req.options.timeouts.tls = d;
    req.options.timeouts.first_byte = d;
    req.options.timeouts.idle = d;
    req
}

fn assert_timeout(e: &TransferError, kind: TimeoutKind, what: &str) {
    assert_eq!(e.kind(), ErrorKind::Timeout(kind), "{what}: {e}");
    assert_eq!(
        e.class(),
        ErrorClass::Transient,
        "{what}: timeouts are retried"
    );
}

/// Each stall is its own timeout kind: connect (a black hole), TLS or first
/// byte (a listener that never answers), idle (a body that stops).
pub async fn timeouts(h: &Harness<'_>) {
    let t = h.transport();
    let d = Duration::from_millis(400);

    let hole = BlackHole::start()
        .await
        .unwrap_or_else(|e| panic!("black hole: {e}"));
    let url = hole.url("/x");
    let url = if h.secure {
        url.replacen("http://", "https://", 1)
    } else {
        url
    };
    let e = send_err(&*t, short(get(&url), d)).await;
    assert_timeout(&e, TimeoutKind::Connect, "connect to a black hole");

    let scheme = if h.secure { "https" } else { "http" };
    let e = send_err(&*t, short(get(&h.origin.silent_url(scheme, "/x")), d)).await;
    let kind = match (h.protocol, h.secure) {
        // A QUIC handshake that never ends is a connect timeout.
        (Protocol::Http3, _) => TimeoutKind::Connect,
        (_, true) => TimeoutKind::Tls,
        (_, false) => TimeoutKind::FirstByte,
    };
    assert_timeout(&e, kind, "a listener that never answers");

    h.origin.resource("/c/idle", Resource::seeded(15, 1 << 20));
    h.origin.script(
        "/c/idle",
        Script::new().always(Fault::Stall {
            after: 64 << 10,
            duration: Duration::from_secs(30),
        }),
    );
    let r = send(&*t, short(get(&h.url("/c/idle")), d)).await;
    let e = read_all(r).await.expect_err("a stalled body must time out");
    assert_timeout(&e, TimeoutKind::Idle, "a body that stops");
}

struct Hook {
    decision: RedirectDecision,
    seen: Mutex<Vec<(Uri, Uri, StatusCode)>>,
}

#[async_trait]
impl RedirectHook for Hook {
    async fn redirect(&self, from: &Uri, to: &Uri, status: StatusCode) -> RedirectDecision {
        if let Ok(mut s) = self.seen.lock() {
            s.push((from.clone(), to.clone(), status));
        }
        self.decision.clone()
    }
}

/// Redirects: chains are followed (relative locations too) up to the limit;
/// loops, non-HTTP schemes and https→http are refused with typed errors;
/// credentials do not cross origins; 303 turns a POST into a GET, 307 replays
/// the body; the hook sees each hop and may veto or rewrite it.
pub async fn redirects(h: &Harness<'_>) {
    let t = h.transport();
    h.origin.resource("/c/r/end", Resource::seeded(16, 10_000));
    h.origin.redirect("/c/r/1", 301, "/c/r/2");
    h.origin.redirect("/c/r/2", 302, "3");
    h.origin.redirect("/c/r/3", 307, &h.url("/c/r/end"));
    let r = send(&*t, get(&h.url("/c/r/1"))).await;
    assert_eq!(r.response.status(), StatusCode::OK, "chain followed");
    assert_eq!(r.metrics.redirects, 3, "three hops counted");
    assert_eq!(r.url.path(), "/c/r/end", "final URL reported");
    let got = read_all(r).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, body::bytes(16, 0, 0..10_000));

    h.origin.redirect("/c/r/loop-a", 302, "/c/r/loop-b");
    h.origin.redirect("/c/r/loop-b", 302, "/c/r/loop-a");
    let e = send_err(&*t, get(&h.url("/c/r/loop-a"))).await;
    assert_eq!(e.kind(), ErrorKind::TooManyRedirects, "loop: {e}");
    assert_eq!(e.class(), ErrorClass::Permanent);

    h.origin.redirect("/c/r/ftp", 302, "ftp://127.0.0.1/file");
    let e = send_err(&*t, get(&h.url("/c/r/ftp"))).await;
    assert_eq!(e.kind(), ErrorKind::RedirectRefused, "non-HTTP scheme: {e}");
    // Refused for good, as is a Location that is no URL at all.
    h.origin.redirect("/c/r/file", 302, "file:///etc/passwd");
    h.origin.redirect("/c/r/bad", 302, "http://[::1");
    for path in ["/c/r/file", "/c/r/bad"] {
        let e = send_err(&*t, get(&h.url(path))).await;
        assert_eq!(e.kind(), ErrorKind::RedirectRefused, "{path}: {e}");
        assert_eq!(e.class(), ErrorClass::Permanent, "{path}");
    }

    if h.secure {
        h.origin
            .redirect("/c/r/down", 302, &h.origin.http_url("/c/r/end"));
        let e = send_err(&*t, get(&h.url("/c/r/down"))).await;
        assert_eq!(e.kind(), ErrorKind::RedirectRefused, "https→http: {e}");
        let mut req = get(&h.url("/c/r/down"));
        req.options.redirects.allow_https_to_http = true;
        if h.protocol == Protocol::Http3 {
            // HTTP/3 carries only https: the hop is for a TCP transport
            // (the scheduler's choice of transport takes it from there).
            let e = send_err(&*t, req).await;
            assert_eq!(e.kind(), ErrorKind::InvalidRequest, "http over HTTP/3: {e}");
        } else {
            let r = send(&*t, req).await;
            assert_eq!(
                r.response.status(),
                StatusCode::OK,
                "https→http when allowed"
            );
            let _ = read_all(r).await;
        }
    }

    // Credentials: kept on a same-origin hop, dropped on a cross-origin one.
    h.origin.redirect("/c/r/same", 302, "/c/r/cred-end");
    h.origin
        .redirect("/c/r/cross", 302, &h.other_origin_url("/c/r/cred-end"));
    h.origin
        .resource("/c/r/cred-end", Resource::seeded(16, 100));
    for (path, kept) in [("/c/r/same", true), ("/c/r/cross", false)] {
        h.origin.clear_log();
        let req = request(
            Method::GET,
            &h.url(path),
            &[("authorization", "Bearer secret"), ("cookie", "k=v")],
            RequestBody::empty(),
        );
        let r = send(&*t, req).await;
        assert_eq!(r.response.status(), StatusCode::OK);
        let _ = read_all(r).await;
        let log = h.origin.log();
        let last = log.last().expect("logged");
        assert_eq!(last.path, "/c/r/cred-end");
        assert_eq!(
            last.headers.contains_key(header::AUTHORIZATION),
            kept,
            "Authorization after {path}"
        );
        assert_eq!(
            last.headers.contains_key(header::COOKIE),
            kept,
            "Cookie after {path}"
        );
    }

    // 303 after a POST: a GET without the body.
    h.origin.redirect("/c/r/see-other", 303, "/c/r/end");
    let r = send(
        &*t,
        request(
            Method::POST,
            &h.url("/c/r/see-other"),
            &[("content-type", "text/plain")],
            RequestBody::bytes("form"),
        ),
    )
    .await;
    assert_eq!(r.response.status(), StatusCode::OK);
    let _ = read_all(r).await;
    let last = h.origin.log().into_iter().last().expect("logged");
    assert_eq!(last.method, Method::GET, "303 turns POST into GET");
    assert!(
        !last.headers.contains_key(header::CONTENT_TYPE),
        "body headers dropped with the body"
    );

    // 307 after a PUT: the same body again.
    h.origin.redirect("/c/r/temp", 307, "/upload/c-redirected");
    let payload = Bytes::from(body::bytes(17, 0, 0..300_000));
    let r = send(
        &*t,
        request(
            Method::PUT,
            &h.url("/c/r/temp"),
            &[],
            RequestBody::bytes(payload.clone()),
        ),
    )
    .await;
    assert_eq!(r.response.status(), StatusCode::OK, "307 replays the PUT");
    assert_eq!(
        header_str(&r, http::HeaderName::from_static("x-received-sha256")),
        Some(hex(&sha(&payload)).as_str())
    );
    let _ = read_all(r).await;

    // The hook: veto, and rewrite.
    let veto = Arc::new(Hook {
        decision: RedirectDecision::Refuse,
        seen: Mutex::new(Vec::new()),
    });
    let mut req = get(&h.url("/c/r/1"));
    req.redirect_hook = Some(veto.clone());
    let e = send_err(&*t, req).await;
    assert_eq!(e.kind(), ErrorKind::RedirectRefused, "vetoed: {e}");
    let seen = veto.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 1, "the hook saw the hop");
    assert_eq!(seen[0].2, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(seen[0].1.path(), "/c/r/2");

    let target: Uri = h.url("/c/r/cred-end").parse().expect("uri");
    let rewrite = Arc::new(Hook {
        decision: RedirectDecision::FollowTo(target),
        seen: Mutex::new(Vec::new()),
    });
    let mut req = get(&h.url("/c/r/1"));
    req.redirect_hook = Some(rewrite);
    let r = send(&*t, req).await;
    assert_eq!(r.url.path(), "/c/r/cred-end", "rewritten hop followed");
    let got = read_all(r).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), 100);
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// A scratch file removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(data: &[u8]) -> Scratch {
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ferry-conformance-{}-{n}", std::process::id()));
        std::fs::write(&path, data)
            .unwrap_or_else(|e| panic!("scratch file {}: {e}", path.display()));
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A body of memory and file parts streams in order: the server receives
/// exactly those bytes, the sent-bytes callback climbs to the total, and
/// the metrics count the bytes up. A missing source file fails before
/// anything is sent.
pub async fn upload_progress(h: &Harness<'_>) {
    let t = h.transport();
    let file = body::bytes(18, 0, 0..(6 << 20));
    let scratch = Scratch::new(&file);
    let head = Bytes::from_static(b"--head--");
    let tail = Bytes::from_static(b"--tail--");
    let range = 1000..(file.len() as u64 - 1000);
    let parts = RequestBody {
        parts: vec![
            BodyPart::Bytes(head.clone()),
            BodyPart::File {
                path: scratch.0.clone(),
                offset: range.start,
                len: range.end - range.start,
                stamp: None,
            },
            BodyPart::Bytes(tail.clone()),
        ],
    };
    let total = parts.len();
    let mut expected = head.to_vec();
    expected.extend_from_slice(&file[range.start as usize..range.end as usize]);
    expected.extend_from_slice(&tail);

    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    let mut req = request(
        Method::PUT,
        &h.url("/upload/c-parts"),
        &[("content-type", "application/octet-stream")],
        parts,
    );
    req.on_sent = Some(Arc::new(move |n| {
        if let Ok(mut r) = sink.lock() {
            r.push(n);
        }
    }));
    let r = send(&*t, req).await;
    assert_eq!(r.response.status(), StatusCode::OK, "upload accepted");
    assert_eq!(
        header_str(&r, http::HeaderName::from_static("x-received-length")),
        Some(total.to_string().as_str())
    );
    assert_eq!(
        header_str(&r, http::HeaderName::from_static("x-received-sha256")),
        Some(hex(&sha(&expected)).as_str()),
        "server got the parts in order"
    );
    assert_eq!(r.metrics.bytes_sent, total, "bytes up in the metrics");
    let _ = read_all(r).await;
    let reports = reports.lock().map(|r| r.clone()).unwrap_or_default();
    assert!(
        reports.len() > 2,
        "progress reported as the body goes ({} reports)",
        reports.len()
    );
    assert!(
        reports.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back"
    );
    assert_eq!(
        reports.last().copied(),
        Some(total),
        "progress ends at the total"
    );

    h.origin.clear_log();
    let gone = RequestBody::file(
        std::env::temp_dir().join("ferry-conformance-missing"),
        0,
        10,
    );
    let e = send_err(
        &*t,
        request(Method::PUT, &h.url("/upload/c-missing"), &[], gone),
    )
    .await;
    assert_eq!(
        e.kind(),
        ErrorKind::SourceChanged,
        "missing source file: {e}"
    );
    assert!(
        h.origin.log().is_empty(),
        "nothing sent for a missing source"
    );

    // A file that no longer matches its stamp is refused before sending.
    let stamp = transfer_core::FileStamp::of(&std::fs::metadata(&scratch.0).expect("scratch"));
    let mut grown = std::fs::OpenOptions::new()
        .append(true)
        .open(&scratch.0)
        .expect("scratch");
    std::io::Write::write_all(&mut grown, b"more").expect("scratch grows");
    let stale = RequestBody {
        parts: vec![BodyPart::File {
            path: scratch.0.clone(),
            offset: 0,
            len: stamp.len,
            stamp: Some(stamp),
        }],
    };
    let e = send_err(
        &*t,
        request(Method::PUT, &h.url("/upload/c-stale"), &[], stale),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::SourceChanged, "changed source: {e}");
    assert!(e.to_string().contains("size changed"), "{e}");
    assert!(
        h.origin.log().is_empty(),
        "nothing sent for a changed source"
    );
}

/// A pacer that lets chunks through only as permits are added, and counts
/// the bytes it was asked about.
struct Gate {
    permits: Arc<tokio::sync::Semaphore>,
    asked: AtomicU64,
}

impl Pacer for Gate {
    fn pace(&self, n: u64) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.asked.fetch_add(n, Ordering::Relaxed);
        let permits = self.permits.clone();
        Box::pin(async move {
            if let Ok(p) = permits.acquire().await {
                p.forget();
            }
        })
    }
}

/// A paced body goes out only as its pacer allows: while the pacer holds a
/// chunk nothing more is sent and no idle timeout fires (the pause is the
/// caller's), and once it lets go the body arrives whole. Every byte of the
/// body is put to the pacer.
pub async fn paced_uploads(h: &Harness<'_>) {
    let t = h.transport();
    let file = body::bytes(21, 0, 0..(3 << 20));
    let scratch = Scratch::new(&file);
    let gate = Arc::new(Gate {
        permits: Arc::new(tokio::sync::Semaphore::new(1)),
        asked: AtomicU64::new(0),
    });
    let sent = Arc::new(AtomicU64::new(0));
    let seen = sent.clone();
    let idle = Duration::from_millis(300);
    let mut req = short(
        request(
            Method::PUT,
            &h.url("/upload/c-paced"),
            &[],
            RequestBody::file(scratch.0.clone(), 0, file.len() as u64),
        ),
        idle,
    );
    req.options.timeouts.connect = Duration::from_secs(10);
    req.options.timeouts.tls = Duration::from_secs(10);
    req.on_sent = Some(Arc::new(move |n| {
        seen.fetch_max(n, Ordering::Relaxed);
    }));
    req.pacer = Some(gate.clone());
    let upload = tokio::spawn({
        let t = t.clone();
        async move { t.send(req).await }
    });
    // Held for five idle timeouts: one chunk out, the rest waiting.
    tokio::time::sleep(idle * 5).await;
    assert!(!upload.is_finished(), "a paced upload waits for its pacer");
    let held = sent.load(Ordering::Relaxed);
    assert!(
        held > 0 && held < file.len() as u64,
        "one chunk goes out before the pacer holds the next ({held} bytes sent)"
    );
    gate.permits.add_permits(1 << 20);
    let r = upload
        .await
        .expect("upload task")
        .unwrap_or_else(|e| panic!("paced upload failed: {e}"));
    assert_eq!(r.response.status(), StatusCode::OK, "paced upload accepted");
    assert_eq!(
        header_str(&r, http::HeaderName::from_static("x-received-sha256")),
        Some(hex(&sha(&file)).as_str()),
        "the paced body arrived whole"
    );
    let _ = read_all(r).await;
    assert_eq!(
        gate.asked.load(Ordering::Relaxed),
        file.len() as u64,
        "every byte was put to the pacer"
    );
}

/// A response that breaks mid-body is a transient error, never a clean end;
/// a header flood is refused rather than buffered.
pub async fn broken_responses(h: &Harness<'_>) {
    let t = h.transport();
    h.origin.resource("/c/cut", Resource::seeded(19, 2 << 20));
    h.origin
        .script("/c/cut", Script::new().always(Fault::CutAfter(100_000)));
    let r = send(&*t, get(&h.url("/c/cut"))).await;
    let e = read_all(r).await.expect_err("a cut body must be an error");
    assert_eq!(e.class(), ErrorClass::Transient, "cut body: {e}");

    h.origin.resource("/c/flood", Resource::seeded(19, 1000));
    h.origin.script(
        "/c/flood",
        Script::new().always(Fault::OversizedHeaders(4 << 20)),
    );
    let e = match t.send(get(&h.url("/c/flood"))).await {
        Err(e) => e,
        Ok(r) => panic!(
            "4 MiB of headers accepted ({} headers)",
            r.response.headers().len()
        ),
    };
    assert_eq!(e.class(), ErrorClass::Transient, "header flood: {e}");
}

/// Lying lengths on the raw HTTP/1.1 listener: fewer bytes than declared is
/// an error, never a short file taken as whole. (HTTP/1.1 transports only.)
pub async fn lying_lengths(t: &dyn Transport, origin: &Origin) {
    origin.resource("/c/lie", Resource::seeded(20, 200_000));
    origin.script(
        "/c/lie",
        Script::new().always(Fault::LieLength {
            declared_extra: 5000,
        }),
    );
    let r = send(t, get(&origin.raw_url("/c/lie"))).await;
    let e = read_all(r)
        .await
        .expect_err("a body shorter than its Content-Length must be an error");
    assert_eq!(e.kind(), ErrorKind::ConnectionLost, "short body: {e}");

    origin.script(
        "/c/lie",
        Script::new().always(Fault::LieLength {
            declared_extra: -5000,
        }),
    );
    let r = send(t, get(&origin.raw_url("/c/lie"))).await;
    let got = read_all(r).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got.len(),
        195_000,
        "no more than Content-Length is delivered"
    );
}

fn assert_tls(e: &TransferError, failure: TlsFailure, what: &str) {
    assert_eq!(e.kind(), ErrorKind::Tls(failure), "{what}: {e}");
    assert_eq!(
        e.class(),
        ErrorClass::Permanent,
        "{what}: TLS failures are permanent"
    );
}

/// Bad certificates are permanent, typed errors naming the reason: an
/// untrusted issuer, an expired certificate, a name mismatch, a pin
/// mismatch, and a server that does not speak TLS. A matching pin passes.
pub async fn tls_failures(h: &Harness<'_>) {
    let untrusted = (h.make)(&Setup {
        trust_origin: false,
        ..Setup::default()
    });
    let e = send_err(&*untrusted, get(&h.url("/gen/10"))).await;
    assert_tls(&e, TlsFailure::UnknownIssuer, "untrusted root");

    let t = h.transport();
    let e = send_err(&*t, get(&h.origin.expired_https_url("/gen/10"))).await;
    assert_tls(&e, TlsFailure::Expired, "expired certificate");

    let wrong = (h.make)(&Setup {
        resolve: vec![("wrong.test".to_owned(), h.origin.https_addr())],
        ..Setup::default()
    });
    let url = format!("https://wrong.test:{}/gen/10", h.origin.https_addr().port());
    let e = send_err(&*wrong, get(&url)).await;
    assert_tls(&e, TlsFailure::NameMismatch, "certificate for another name");

    // (Over QUIC nothing answers on a TCP server's port: that is a connect
    // timeout, covered by `timeouts`.)
    if h.protocol != Protocol::Http3 {
        let plain_as_tls = format!("https://127.0.0.1:{}/gen/10", h.origin.http_addr().port());
        let e = send_err(&*t, get(&plain_as_tls)).await;
        assert_eq!(
            e.kind().class(),
            ErrorClass::Permanent,
            "a server that does not speak TLS: {e}"
        );
        assert!(
            matches!(e.kind(), ErrorKind::Tls(_)),
            "a server that does not speak TLS: {e}"
        );
    }

    let pinned_wrong = (h.make)(&Setup {
        pins: vec![("localhost".to_owned(), [7; 32])],
        ..Setup::default()
    });
    let e = send_err(&*pinned_wrong, get(&h.url("/gen/10"))).await;
    assert_tls(&e, TlsFailure::PinMismatch, "pin mismatch");

    let pin = h.origin.leaf_spki_sha256();
    let pinned = (h.make)(&Setup {
        pins: vec![("localhost".to_owned(), pin)],
        ..Setup::default()
    });
    let r = send(&*pinned, get(&h.url("/gen/10"))).await;
    assert_eq!(r.response.status(), StatusCode::OK, "matching pin accepted");
    let _ = read_all(r).await;
}
