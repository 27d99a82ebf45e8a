#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The download fault matrix through a whole session, over HTTP/1.1 (plain),
//! HTTP/2 (TLS) and HTTP/3 (QUIC): each fault from the testkit origin, and
//! what the task must do about it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use scheduler::{SessionConfig, SessionEvent};
use store_fs::FsPayloadStore;
use testkit::{Fault, Resource, Script, body};
use transfer_core::{
    Destination, ErrorKind, Outcome, Partial, PartialLocation, PayloadStore, RestartReason,
    ResumeData, SessionId, StoreError, StoreErrorKind, TaskId, TimeoutKind, TlsFailure, WaitReason,
};

mod common;

use common::{Fixture, Proto, failed_with, wait};

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn http1() {
                super::$name(super::Proto::H1).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn http2() {
                super::$name(super::Proto::H2).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn http3() {
                super::$name(super::Proto::H3).await;
            }
        }
    };
}

both!(cut_mid_body_resumes_with_a_range);
async fn cut_mid_body_resumes_with_a_range(p: Proto) {
    interrupted_then_resumed(p, Fault::CutAfter(4 << 20), "/cut", 1).await;
}

both!(a_dropped_connection_resumes_with_a_range);
/// The whole connection goes (over HTTP/3 the QUIC connection closes; over
/// HTTP/1.1 the TCP one; over HTTP/2 the stream resets): the next attempt
/// opens a new one and continues from the durable offset.
async fn a_dropped_connection_resumes_with_a_range(p: Proto) {
    let f = interrupted_then_resumed(p, Fault::DropConnectionAfter(4 << 20), "/drop", 2).await;
    let log = f.origin.log();
    if p != Proto::H2 {
        assert_ne!(log[0].connection, log[1].connection, "a new connection");
    }
}

/// A 6 MiB download at `path` whose first response breaks with `fault`
/// after 4 MiB completes intact, the second request asking from the
/// durable offset.
async fn interrupted_then_resumed(p: Proto, fault: Fault, path: &str, seed: u64) -> Fixture {
    let f = Fixture::new(p).await;
    let len = 6u64 << 20;
    f.origin.resource(path, Resource::seeded(seed, len));
    f.origin.script(
        path,
        Script::new()
            .nth(1, fault)
            .always(Fault::RateLimit(32 << 20)),
    );
    let s = f.session().await;
    let name = path.trim_start_matches('/');
    let t = f.get(&s, &f.url(path), name).await;
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file(name).unwrap(), body::bytes(seed, 0, 0..len));
    let ranges = f.ranges(path);
    assert_eq!(ranges.len(), 2);
    assert!(ranges[1] > 0 && ranges[1] <= 4 << 20, "{ranges:?}");
    s.shutdown().await;
    f
}

both!(a_stall_past_the_idle_timeout_is_retried);
async fn a_stall_past_the_idle_timeout_is_retried(p: Proto) {
    let f = Fixture::new(p).await;
    let len = 2u64 << 20;
    f.origin.resource("/stall", Resource::seeded(2, len));
    f.origin.script(
        "/stall",
        Script::new().nth(
            1,
            Fault::Stall {
                after: 1 << 20,
                duration: Duration::from_secs(30),
            },
        ),
    );
    let s = f.session().await;
    let mut events = Box::pin(s.events());
    let t = f.get(&s, &f.url("/stall"), "stall").await;
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file("stall").unwrap(), body::bytes(2, 0, 0..len));
    assert_eq!(
        f.ranges("/stall").len(),
        2,
        "one stalled request, one retry"
    );
    let mut saw_idle = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        if let SessionEvent::Waiting {
            reason: WaitReason::BackingOff { error, .. },
            ..
        } = e
        {
            saw_idle |= error.kind() == ErrorKind::Timeout(TimeoutKind::Idle);
        }
    }
    assert!(saw_idle, "the task backed off after an idle timeout");
}

both!(retry_after_is_honoured);
async fn retry_after_is_honoured(p: Proto) {
    let f = Fixture::new(p).await;
    f.origin.resource("/busy", Resource::seeded(3, 1000));
    f.origin
        .script("/busy", Script::new().statuses(&[(503, Some("2"))]));
    let s = f.session().await;
    let started = Instant::now();
    let t = f.get(&s, &f.url("/busy"), "busy").await;
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: 1000 });
    // The policy's own backoff is 50–200 ms; only Retry-After explains 2 s.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(f.ranges("/busy").len(), 2);
}

both!(repeated_500s_fail_after_the_retry_limit_and_leave_nothing);
async fn repeated_500s_fail_after_the_retry_limit_and_leave_nothing(p: Proto) {
    let f = Fixture::new(p).await;
    let len = 4u64 << 20;
    f.origin.resource("/err", Resource::seeded(4, len));
    f.origin.script(
        "/err",
        Script::new()
            .nth(1, Fault::CutAfter(2 << 20))
            .nth(1, Fault::RateLimit(16 << 20))
            .from(
                2,
                Fault::Status {
                    code: http::StatusCode::INTERNAL_SERVER_ERROR,
                    retry_after: None,
                },
            ),
    );
    let s = f.session().await;
    let t = f.get(&s, &f.url("/err"), "err").await;
    let outcome = wait(&t).await;
    assert_eq!(failed_with(&outcome), ErrorKind::Status(500));
    // The cut (which made progress, so the count starts again), then the
    // three retries the policy allows, all answered 500.
    assert_eq!(f.ranges("/err").len(), 1 + 3);
    // No file, and no partial: a failed task leaves nothing behind.
    s.shutdown().await;
    assert!(f.file("err").is_none());
    assert_eq!(leftovers(&f.out), Vec::<String>::new());
}

/// The names in `dir`: what a task left behind.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

both!(a_changed_etag_restarts_from_zero);
async fn a_changed_etag_restarts_from_zero(p: Proto) {
    let f = Fixture::new(p).await;
    let len = 4u64 << 20;
    f.origin.resource("/chg", Resource::seeded(5, len));
    f.origin.script(
        "/chg",
        Script::new()
            .nth(1, Fault::CutAfter(3 << 20))
            .nth(2, Fault::ChangeRepresentation)
            .always(Fault::RateLimit(32 << 20)),
    );
    let s = f.session().await;
    let t = f.get(&s, &f.url("/chg"), "chg").await;
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
    assert_eq!(
        f.file("chg").unwrap(),
        body::bytes(5, 1, 0..len),
        "no splice"
    );
}

both!(a_change_without_validators_restarts_from_zero);
/// A server that sends neither ETag nor Last-Modified: nothing proves that
/// the bytes of a cut download belong to what the server serves next, so
/// the next attempt discards them and asks for the whole body, never a bare
/// range. The content changed in between (same length): the file is exactly
/// the new version, never the start of one and the rest of the other.
async fn a_change_without_validators_restarts_from_zero(p: Proto) {
    let f = Fixture::new(p).await;
    let len = 4u64 << 20;
    f.origin.resource("/bare", Resource::seeded(14, len));
    f.origin.script(
        "/bare",
        Script::new()
            .always(Fault::NoValidators)
            .nth(1, Fault::CutAfter(3 << 20))
            .nth(2, Fault::ChangeRepresentation)
            .always(Fault::RateLimit(32 << 20)),
    );
    let s = f.session().await;
    let mut events = Box::pin(s.events());
    let t = f.get(&s, &f.url("/bare"), "bare").await;
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
    assert_eq!(f.origin.version("/bare"), 1, "the content changed");
    let got = f.file("bare").unwrap();
    let (v1, v2) = (body::bytes(14, 0, 0..len), body::bytes(14, 1, 0..len));
    let first_of_v1 = got.iter().zip(&v1).take_while(|(a, b)| a == b).count();
    assert!(
        got == v2,
        "the file is not version 2: its first {first_of_v1} bytes are version 1's"
    );
    assert_eq!(
        f.ranges("/bare"),
        [0, 0],
        "no range is asked without a validator"
    );
    let mut reasons = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        if let SessionEvent::Restarted { reason, .. } = e {
            reasons.push(reason);
        }
    }
    assert_eq!(
        reasons,
        [RestartReason::NoStrongValidator],
        "the restart was announced, with its reason"
    );
}

both!(an_ignored_range_restarts_from_zero);
async fn an_ignored_range_restarts_from_zero(p: Proto) {
    let f = Fixture::new(p).await;
    let len = 4u64 << 20;
    f.origin.resource("/ign", Resource::seeded(6, len));
    f.origin.script(
        "/ign",
        Script::new()
            .nth(1, Fault::CutAfter(3 << 20))
            .nth(2, Fault::IgnoreRange)
            .always(Fault::RateLimit(32 << 20)),
    );
    let s = f.session().await;
    let mut events = Box::pin(s.events());
    let t = f.get(&s, &f.url("/ign"), "ign").await;
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file("ign").unwrap(), body::bytes(6, 0, 0..len));
    let ranges = f.ranges("/ign");
    assert_eq!(ranges.len(), 2, "the 200 body is used from its first byte");
    assert!(ranges[1] > 0);
    let mut restarted = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        restarted |= matches!(e, SessionEvent::Restarted { .. });
    }
    assert!(restarted, "the restart was announced");
}

both!(redirects_are_followed_and_refused_by_policy);
async fn redirects_are_followed_and_refused_by_policy(p: Proto) {
    let f = Fixture::new(p).await;
    f.origin.resource("/r/end", Resource::seeded(7, 50_000));
    f.origin.redirect("/r/a", 301, "/r/b");
    f.origin.redirect("/r/b", 307, "/r/end");
    f.origin.redirect("/r/loop1", 302, "/r/loop2");
    f.origin.redirect("/r/loop2", 302, "/r/loop1");
    f.origin
        .redirect("/r/down", 302, &f.origin.http_url("/r/end"));
    let s = f.session().await;
    let ok = f.get(&s, &f.url("/r/a"), "redirected").await;
    assert_eq!(wait(&ok).await, Outcome::Completed { bytes: 50_000 });
    assert_eq!(f.file("redirected").unwrap(), body::bytes(7, 0, 0..50_000));
    let looped = f.get(&s, &f.url("/r/loop1"), "loop").await;
    assert_eq!(
        failed_with(&wait(&looped).await),
        ErrorKind::TooManyRedirects
    );
    if p != Proto::H1 {
        let down = f.get(&s, &f.url("/r/down"), "down").await;
        assert_eq!(failed_with(&wait(&down).await), ErrorKind::RedirectRefused);
    }
    assert!(f.file("loop").is_none() && f.file("down").is_none());
}

both!(a_redirect_out_of_http_fails_at_once_quoting_little);
/// A redirect to `file:` or to a `Location` that is no URL fails the task
/// at the first answer, not after every retry; and however long the
/// `Location`, the error the task ends with (and its record keeps) quotes a
/// few hundred bytes of it.
async fn a_redirect_out_of_http_fails_at_once_quoting_little(p: Proto) {
    let f = Fixture::new(p).await;
    let huge = format!("http://[{}", "a".repeat(200 << 10));
    f.origin.redirect("/r/file", 302, "file:///etc/passwd");
    f.origin.redirect("/r/huge", 302, &huge);
    let s = f.session().await;
    for (path, name) in [("/r/file", "file"), ("/r/huge", "huge")] {
        let t = f.get(&s, &f.url(path), name).await;
        let outcome = wait(&t).await;
        let Outcome::Failed { error, .. } = &outcome else {
            panic!("{path}: expected Failed, got {outcome:?}");
        };
        let shown = error.to_string();
        assert_eq!(
            error.kind(),
            ErrorKind::RedirectRefused,
            "{path}: {}",
            &shown[..shown.len().min(300)]
        );
        assert!(
            shown.len() < 1024,
            "{path}: the error is {} bytes long",
            shown.len()
        );
        assert_eq!(f.ranges(path).len(), 1, "{path}: asked once, not retried");
        assert!(f.file(name).is_none());
    }
    s.shutdown().await;
    let run = "a".repeat(1024);
    for entry in std::fs::read_dir(&f.state).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&run),
                "{} keeps the Location",
                path.display()
            );
        }
    }
}

both!(a_too_large_body_fails);
async fn a_too_large_body_fails(p: Proto) {
    let f = Fixture::new(p).await;
    f.origin.resource("/big", Resource::seeded(8, 2 << 20));
    let s = f.session().await;
    let t = s
        .download(&f.url("/big"))
        .unwrap()
        .to("big")
        .expected_size(1 << 20)
        .enqueue()
        .await
        .unwrap();
    assert_eq!(failed_with(&wait(&t).await), ErrorKind::SizeLimitExceeded);
    assert!(f.file("big").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_once() {
    let f = Fixture::new(Proto::H2).await;
    let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
    let s = f.session_with(false, payloads, Fixture::config()).await;
    let t = f.get(&s, &f.url("/gen/1000"), "tls").await;
    assert_eq!(
        failed_with(&wait(&t).await),
        ErrorKind::Tls(TlsFailure::UnknownIssuer)
    );
    assert!(f.origin.log().is_empty(), "no request reached the origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_body_is_retried_never_taken_as_whole() {
    let f = Fixture::new(Proto::H1).await;
    let len = 300_000u64;
    f.origin.resource("/short", Resource::seeded(9, len));
    f.origin.script(
        "/short",
        Script::new().nth(
            1,
            Fault::LieLength {
                declared_extra: 10_000,
            },
        ),
    );
    let s = f.session().await;
    let t = f.get(&s, &f.origin.raw_url("/short"), "short").await;
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file("short").unwrap(), body::bytes(9, 0, 0..len));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_destinations_stay_inside_the_payload_root() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/x", Resource::seeded(10, 1000));
    let s = f.session().await;
    let t = f.get(&s, &f.url("/x"), "../escape").await;
    assert_eq!(failed_with(&wait(&t).await), ErrorKind::Storage);
    assert!(!f.out.parent().unwrap().join("escape").exists());
}

/// A payload store with a byte quota that can be raised while running: a
/// full disk that gets space back. (A wrapper, not a real full disk: filling
/// the test machine's disk would hurt everything else on it.)
struct Quota {
    inner: FsPayloadStore,
    left: Arc<AtomicU64>,
}

struct QuotaPartial {
    inner: Box<dyn Partial>,
    left: Arc<AtomicU64>,
}

#[async_trait]
impl PayloadStore for Quota {
    async fn open(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        resume: &ResumeData,
    ) -> Result<Box<dyn Partial>, StoreError> {
        let inner = self.inner.open(session, task, destination, resume).await?;
        Ok(Box::new(QuotaPartial {
            inner,
            left: self.left.clone(),
        }))
    }

    async fn discard(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        partial: Option<&PartialLocation>,
    ) -> Result<(), StoreError> {
        self.inner
            .discard(session, task, destination, partial)
            .await
    }
}

#[async_trait]
impl Partial for QuotaPartial {
    fn offset(&self) -> u64 {
        self.inner.offset()
    }

    async fn write(&mut self, data: bytes::Bytes) -> Result<(), StoreError> {
        let n = data.len() as u64;
        let ok = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(n))
            .is_ok();
        if !ok {
            return Err(StoreError::new(
                StoreErrorKind::Full,
                "quota exhausted (test)",
            ));
        }
        self.inner.write(data).await
    }

    async fn sync(&mut self) -> Result<(u64, PartialLocation), StoreError> {
        self.inner.sync().await
    }

    async fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.inner.read_at(at, buf).await
    }

    async fn commit(self: Box<Self>, overwrite: bool) -> Result<(), StoreError> {
        self.inner.commit(overwrite).await
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.discard().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_the_task_resumes_when_space_returns() {
    let f = Fixture::new(Proto::H1).await;
    let len = 4u64 << 20;
    f.origin.resource("/full", Resource::seeded(11, len));
    f.origin
        .script("/full", Script::new().always(Fault::RateLimit(32 << 20)));
    let left = Arc::new(AtomicU64::new(1 << 20));
    let payloads = Arc::new(Quota {
        inner: FsPayloadStore::new(&f.out).unwrap(),
        left: left.clone(),
    });
    let mut config = Fixture::config();
    config.retry.retry_limit = 100;
    config.retry.base_delay = Duration::from_millis(200);
    config.retry.max_delay = Duration::from_millis(200);
    let s = f.session_with(true, payloads, config).await;
    let mut events = Box::pin(s.events());
    let t = f.get(&s, &f.url("/full"), "full").await;
    // Wait for the task to say why it stopped.
    let error = loop {
        let e = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event")
            .expect("events go on");
        if let SessionEvent::Waiting {
            reason: WaitReason::BackingOff { error, .. },
            ..
        } = e
        {
            break error;
        }
    };
    assert_eq!(error.kind(), ErrorKind::StorageFull, "{error}");
    left.store(u64::MAX, Ordering::SeqCst); // space returns
    assert_eq!(wait(&t).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file("full").unwrap(), body::bytes(11, 0, 0..len));
    let ranges = f.ranges("/full");
    assert!(
        ranges.iter().skip(1).any(|&r| r > 0),
        "it went on from the durable bytes: {ranges:?}"
    );
}

both!(a_partial_that_is_already_whole_gets_416_and_is_committed);
async fn a_partial_that_is_already_whole_gets_416_and_is_committed(p: Proto) {
    use store_fs::FsTaskStore;
    use transfer_core::{TaskStore, Validator};
    let f = Fixture::new(p).await;
    let len = 1u64 << 20;
    f.origin.resource("/whole", Resource::seeded(12, len));
    let session_id = SessionId::new("test.faults").unwrap();

    // A task whose partial holds every byte, as after a kill between the
    // last checkpoint and the commit.
    let s = f.session().await;
    let task = s
        .download(&f.url("/whole"))
        .unwrap()
        .to("whole.bin")
        .suspended()
        .enqueue()
        .await
        .unwrap();
    s.shutdown().await;
    drop(s);
    let payloads = FsPayloadStore::new(&f.out).unwrap();
    let dest = Destination::Path("whole.bin".into());
    let mut partial = payloads
        .open(&session_id, task.id(), &dest, &ResumeData::default())
        .await
        .unwrap();
    partial
        .write(bytes::Bytes::from(body::bytes(12, 0, 0..len)))
        .await
        .unwrap();
    let (durable, location) = partial.sync().await.unwrap();
    drop(partial);
    let store = FsTaskStore::open(&f.state).unwrap();
    let mut record = store.load(&session_id).await.unwrap().records.remove(0);
    record.state.resume = ResumeData {
        validator: Some(Validator::StrongETag(f.origin.etag("/whole").unwrap())),
        total_length: Some(len),
        durable_offset: durable,
        partial: Some(location),
        attempts: Vec::new(),
    };
    record.state.bytes_received = durable;
    store.save(&session_id, vec![record]).await.unwrap();
    drop(store);

    let s = f.session().await;
    let task = s.task(task.id());
    task.resume().await.unwrap();
    assert_eq!(wait(&task).await, Outcome::Completed { bytes: len });
    assert_eq!(f.file("whole.bin").unwrap(), body::bytes(12, 0, 0..len));
    let log = f.origin.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, http::StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        log[0].range.as_deref(),
        Some(format!("bytes={len}-").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_body_is_cut_at_its_content_length() {
    let f = Fixture::new(Proto::H1).await;
    let len = 300_000u64;
    f.origin.resource("/long", Resource::seeded(13, len));
    f.origin.script(
        "/long",
        Script::new().always(Fault::LieLength {
            declared_extra: -10_000,
        }),
    );
    let s = f.session().await;
    let t = f.get(&s, &f.origin.raw_url("/long"), "long").await;
    // HTTP frames the body by its Content-Length: what follows is not body.
    assert_eq!(
        wait(&t).await,
        Outcome::Completed {
            bytes: len - 10_000
        }
    );
    assert_eq!(f.file("long").unwrap(), body::bytes(13, 0, 0..len - 10_000));
}

/// A body that trickles in under the low-speed limit fails its attempt with
/// a low-speed timeout once the window has passed, and the task backs off
/// to retry as after a stall; one that keeps above the limit completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_under_the_low_speed_limit_is_a_stall() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/trickle", Resource::seeded(7, 1 << 20));
    f.origin
        .script("/trickle", Script::new().always(Fault::RateLimit(8 << 10)));
    f.origin.resource("/steady", Resource::seeded(8, 160 << 10));
    f.origin
        .script("/steady", Script::new().always(Fault::RateLimit(160 << 10)));
    let config = SessionConfig {
        low_speed: Some((64 << 10, Duration::from_secs(1))),
        ..Fixture::config()
    };
    let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
    let s = f.session_with(true, payloads, config).await;
    let mut events = Box::pin(s.events());
    let started = Instant::now();
    let t = f.get(&s, &f.url("/trickle"), "trickle").await;
    let backed_off = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if let SessionEvent::Waiting {
                task,
                reason: WaitReason::BackingOff { error, .. },
            } = e
                && task == t.id()
            {
                return error;
            }
        }
        panic!("the session's events ended");
    })
    .await;
    let error = backed_off.expect("the trickle backed off within 10 s");
    assert_eq!(
        error.kind(),
        ErrorKind::Timeout(TimeoutKind::LowSpeed),
        "{error}"
    );
    assert!(error.is_retryable(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    t.cancel().await.unwrap();

    let steady = f.get(&s, &f.url("/steady"), "steady").await;
    assert_eq!(wait(&steady).await, Outcome::Completed { bytes: 160 << 10 });
    s.shutdown().await;
}
