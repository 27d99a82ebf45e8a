#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two sessions sharing one session's state (two processes, in one here):
//! each over its own store-s3 replica of the same object store, each task
//! run by one of them at a time through its claim. The object store is
//! object_store's `InMemory` (these tests are about the scheduler; the
//! same store and claims against a real S3-protocol server are tested in
//! store-s3 and by the `ferry` workers test).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use scheduler::{ScriptedConditions, Session, SessionConfig};
use sha2::{Digest, Sha256};
use store_fs::FsPayloadStore;
use store_s3::{S3Claims, S3TaskStore};
use testkit::{Fault, Origin, Script, body};
use transfer_core::{Completion, Delegate, Outcome, TaskId};
use transport_http::HttpTransport;

/// Counts the completions each session's delegate hears, by task.
#[derive(Default)]
struct Heard(Mutex<HashMap<TaskId, u32>>);

#[async_trait]
impl Delegate for Heard {
    async fn completed(&self, c: &Completion) {
        *self.0.lock().unwrap().entry(c.task).or_default() += 1;
    }
}

async fn worker(
    objects: &Arc<dyn ObjectStore>,
    name: &str,
    out: &std::path::Path,
    delegate: Arc<Heard>,
) -> Session {
    let config = SessionConfig {
        checkpoint_interval: Duration::from_millis(50),
        ..SessionConfig::default()
    };
    let steady = ScriptedConditions::new(transfer_core::Conditions::default());
    worker_in(
        objects,
        name,
        out,
        delegate,
        config,
        Arc::new(steady),
        FOLLOW,
    )
    .await
}

/// How often the workers read the store for the others' changes.
const FOLLOW: Duration = Duration::from_millis(100);

/// A worker with its own settings, conditions and reading of the store.
async fn worker_in(
    objects: &Arc<dyn ObjectStore>,
    name: &str,
    out: &std::path::Path,
    delegate: Arc<Heard>,
    config: SessionConfig,
    conditions: Arc<dyn transfer_core::ConditionSource>,
    follow: Duration,
) -> Session {
    let claims = S3Claims::new(objects.clone(), "ferry", name, Duration::from_millis(900));
    Session::builder("shared.test")
        .unwrap()
        .store(Arc::new(S3TaskStore::new(objects.clone(), "ferry")))
        .payloads(Arc::new(FsPayloadStore::new(out).unwrap()))
        .transport(Arc::new(
            HttpTransport::new(transport_http::HttpConfig::default()).unwrap(),
        ))
        .config(config)
        .conditions(conditions)
        .delegate(delegate)
        .shared(Arc::new(claims), Some(follow))
        .build()
        .await
        .unwrap()
}

/// Requests for the same path whose lifetimes overlap: two processes
/// fetching one task at once.
fn overlapping(log: &[testkit::LogEntry]) -> Vec<String> {
    let mut by_path: HashMap<&str, Vec<_>> = HashMap::new();
    for e in log {
        by_path
            .entry(e.path.as_str())
            .or_default()
            .push((e.at, e.ended.expect("every answer has ended")));
    }
    let mut bad = Vec::new();
    for (path, mut spans) in by_path {
        spans.sort();
        if spans.windows(2).any(|w| w[1].0 < w[0].1) {
            bad.push(path.to_owned());
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_share_the_work_and_each_task_runs_once() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    const N: u64 = 32;
    const LEN: u64 = 512 << 10;
    // About 1/8 s each: long enough for both sessions to take some.
    origin.script(
        &format!("/gen/{LEN}"),
        Script::new().always(Fault::RateLimit(4 << 20)),
    );
    let (heard_a, heard_b) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
    let a = worker(&objects, "worker-a", dir.path(), heard_a.clone()).await;
    let b = worker(&objects, "worker-b", dir.path(), heard_b.clone()).await;
    let mut handles = Vec::new();
    for i in 0..N {
        let url = origin.http_url(&format!("/gen/{LEN}?seed={i}"));
        handles.push(
            a.download(&url)
                .unwrap()
                .to(format!("f{i}"))
                .enqueue()
                .await
                .unwrap(),
        );
    }
    for h in &handles {
        let outcome = tokio::time::timeout(Duration::from_secs(60), h.wait())
            .await
            .expect("every task ends")
            .unwrap();
        assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");
    }
    // Every task is heard of once, by one of the two.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = heard_a.0.lock().unwrap().len() + heard_b.0.lock().unwrap().len();
            if n as u64 >= N {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every completion is delivered");
    let (ha, hb) = (
        heard_a.0.lock().unwrap().clone(),
        heard_b.0.lock().unwrap().clone(),
    );
    assert!(ha.values().chain(hb.values()).all(|n| *n == 1));
    assert!(ha.keys().all(|t| !hb.contains_key(t)), "heard by both");
    assert_eq!((ha.len() + hb.len()) as u64, N);
    assert!(
        !ha.is_empty() && !hb.is_empty(),
        "both took work: {} and {}",
        ha.len(),
        hb.len()
    );
    for i in 0..N {
        let data = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
        assert_eq!(
            Sha256::digest(&data).as_slice(),
            body::sha256(i, 0, LEN),
            "f{i}"
        );
    }
    // One request per task: nothing fetched twice, nothing at once.
    let log = origin.log();
    assert_eq!(log.len() as u64, N, "one request per task");
    assert!(overlapping(&log).is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

/// A task that another process finished while this one waited to claim it
/// (and before this one read the store again): when the claim comes at
/// last, the record it reads says the task ended, and this process's
/// waiters and event stream hear how, though not its delegate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_ended_elsewhere_while_its_claim_was_awaited_ends_here_too() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    const LEN: u64 = 256 << 10;
    // About 1/8 s: over well before the other worker tries again (after
    // half the claims' time to live, 450 ms).
    origin.script(
        &format!("/gen/{LEN}"),
        Script::new().always(Fault::RateLimit(2 << 20)),
    );
    let (heard_a, heard_b) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
    let b = worker(&objects, "worker-b", dir.path(), heard_b.clone()).await;
    let url = origin.http_url(&format!("/gen/{LEN}?seed=9"));
    let tb = b.download(&url).unwrap().to("f").enqueue().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while origin.log().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("worker-b starts the task");
    // worker-a finds the task under way, cannot claim it, and reads the
    // store again only in a minute: its claim is what tells it.
    let steady = ScriptedConditions::new(transfer_core::Conditions::default());
    let a = worker_in(
        &objects,
        "worker-a",
        dir.path(),
        heard_a.clone(),
        SessionConfig::default(),
        Arc::new(steady),
        Duration::from_secs(60),
    )
    .await;
    let mut events = Box::pin(a.events());
    let outcome = tokio::time::timeout(Duration::from_secs(10), a.task(tb.id()).wait())
        .await
        .expect("worker-a's waiter hears the task end")
        .unwrap();
    assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        use futures::StreamExt;
        loop {
            if let Some(scheduler::SessionEvent::Completed(c)) = events.next().await {
                break c;
            }
        }
    })
    .await
    .expect("worker-a's event stream has the completion");
    assert_eq!(heard.task, tb.id());
    assert_eq!(heard_b.0.lock().unwrap().get(&tb.id()), Some(&1));
    assert!(
        heard_a.0.lock().unwrap().is_empty(),
        "not worker-a's to deliver"
    );
    assert_eq!(origin.log().len(), 1, "fetched once");
    a.shutdown().await;
    b.shutdown().await;
}

/// The length of [`one_slow_task`]'s download, served at 2 MiB/s.
const SLOW: u64 = 8 << 20;

/// One shared session running one slow download (seeded `seed`).
struct OneSlowTask {
    origin: Origin,
    dir: tempfile::TempDir,
    objects: Arc<dyn ObjectStore>,
    heard: Arc<Heard>,
    session: Session,
    task: scheduler::TaskHandle,
}

async fn one_slow_task(seed: u64) -> OneSlowTask {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    origin.script(
        &format!("/gen/{SLOW}"),
        Script::new().always(Fault::RateLimit(2 << 20)),
    );
    let heard = Arc::new(Heard::default());
    let session = worker(&objects, "worker-a", dir.path(), heard.clone()).await;
    let url = origin.http_url(&format!("/gen/{SLOW}?seed={seed}"));
    let task = session
        .download(&url)
        .unwrap()
        .to("big")
        .enqueue()
        .await
        .unwrap();
    OneSlowTask {
        origin,
        dir,
        objects,
        heard,
        session,
        task,
    }
}

/// A task's claim taken by someone else mid-download: the attempt stops at
/// once (its request ends within a renewal period). The thief then never
/// renews, so after one time to live the session takes the task back and
/// finishes it from its durable offset, with a Range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_stops_the_attempt_and_a_silent_holder_is_taken_over() {
    let t = one_slow_task(5).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The thief writes the lease over (as a process that took it over would).
    let lease = object_store::path::Path::from(format!("ferry/leases/shared.test/{}", t.task.id()));
    let stolen = serde_json::json!({"holder": "thief", "ttl_ms": 900, "beat": 1});
    object_store::ObjectStoreExt::put(
        &*t.objects,
        &lease,
        object_store::PutPayload::from(serde_json::to_vec(&stolen).unwrap()),
    )
    .await
    .unwrap();
    let stolen_at = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(30), t.task.wait())
        .await
        .expect("the task ends")
        .unwrap();
    assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");
    let log = t.origin.log();
    assert!(log.len() >= 2, "{log:?}");
    let first_end = log[0].ended.unwrap();
    assert!(
        first_end < stolen_at + Duration::from_millis(900),
        "the attempt stopped within a renewal period of the theft ({:?} after)",
        first_end.saturating_duration_since(stolen_at)
    );
    assert!(
        log[1].at >= stolen_at + Duration::from_millis(900),
        "taken back only after the thief was silent for a time to live ({:?} after)",
        log[1].at.saturating_duration_since(stolen_at)
    );
    assert!(log[1].range.is_some(), "resumed with a Range");
    assert!(overlapping(&log).is_empty());
    let data = std::fs::read(t.dir.path().join("big")).unwrap();
    assert_eq!(Sha256::digest(&data).as_slice(), body::sha256(5, 0, SLOW));
    assert_eq!(t.heard.0.lock().unwrap().get(&t.task.id()), Some(&1));
    t.session.shutdown().await;
}

/// A cancel written by another process (here `Offline`, as `ferry cancel
/// --store` does) while this session runs the task: the session sees it on
/// its next read of the store, stops the transfer, and delivers the one
/// completion that cancel recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_process_stops_the_running_task() {
    let t = one_slow_task(6).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let elsewhere = scheduler::Offline::new(
        "shared.test",
        Arc::new(S3TaskStore::new(t.objects.clone(), "ferry")),
        Arc::new(FsPayloadStore::new(t.dir.path()).unwrap()),
        SessionConfig::default(),
    )
    .unwrap();
    elsewhere
        .user(
            t.task.id(),
            transfer_core::Event::Cancel {
                keep_resume_data: false,
            },
        )
        .await
        .unwrap();
    let cancelled_at = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(10), t.task.wait())
        .await
        .expect("the task ends")
        .unwrap();
    assert!(matches!(outcome, Outcome::Cancelled { .. }), "{outcome:?}");
    // The request stops soon after (the session reads the store every
    // 100 ms here), long before the 4 s the whole body would take.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = t.origin.log();
    assert_eq!(log.len(), 1, "{log:?}");
    let ended = log[0].ended.expect("the request ended");
    assert!(
        ended < cancelled_at + Duration::from_millis(1000),
        "stopped {:?} after the cancel",
        ended.saturating_duration_since(cancelled_at)
    );
    assert!(log[0].bytes_sent < SLOW);
    tokio::time::timeout(Duration::from_secs(5), async {
        while t.heard.0.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the completion is delivered");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        t.heard.0.lock().unwrap().get(&t.task.id()),
        Some(&1),
        "heard once"
    );
    t.session.shutdown().await;
}

/// In a shared session, a task this process may not run now (it needs
/// charging, and the machine is on battery) waits here without being
/// claimed or written, and the session is idle, as `ferry run --until-idle`
/// needs to see it. Plugged in, the task is claimed and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_session_whose_tasks_wait_on_conditions_is_idle() {
    use transfer_core::{Conditions, NetworkPath, Power};
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let conditions = Arc::new(ScriptedConditions::new(Conditions {
        network: NetworkPath::WIFI,
        power: Power::on_battery(50),
    }));
    let mut config = SessionConfig::default();
    config.policy.constraints.requires_charging = true;
    let heard = Arc::new(Heard::default());
    let s = worker_in(
        &objects,
        "worker-a",
        dir.path(),
        heard.clone(),
        config,
        conditions.clone(),
        FOLLOW,
    )
    .await;
    let url = origin.http_url("/gen/65536?seed=8");
    let t = s
        .download(&url)
        .unwrap()
        .to("small")
        .enqueue()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.wait_idle())
        .await
        .expect("idle while the only task waits for power")
        .unwrap();
    assert!(origin.log().is_empty(), "nothing fetched");
    let leases: Vec<_> = futures::TryStreamExt::try_collect(
        objects.list(Some(&object_store::path::Path::from("ferry/leases"))),
    )
    .await
    .unwrap();
    assert!(leases.is_empty(), "nothing claimed: {leases:?}");

    conditions.set(Conditions {
        network: NetworkPath::WIFI,
        power: Power::MAINS,
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), t.wait())
        .await
        .expect("the task ends once plugged in")
        .unwrap();
    assert!(matches!(outcome, Outcome::Completed { .. }), "{outcome:?}");
    s.shutdown().await;
}

/// An object store that stalls one process the way SIGSTOP would, at the
/// worst moment: as it writes the log entry that records a completion. The
/// entry goes out (late) and its claim's renewals wait as long.
#[derive(Debug)]
struct StalledAtCompletion {
    inner: Arc<dyn ObjectStore>,
    stall: Duration,
    /// Until when the process is stalled, once it has been.
    until: Mutex<Option<tokio::time::Instant>>,
    stalled: tokio::sync::Notify,
}

impl std::fmt::Display for StalledAtCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stalled at completion over {}", self.inner)
    }
}

impl StalledAtCompletion {
    /// Waits out the stall, starting it first if `starts` and none began.
    async fn wait(&self, starts: bool) {
        let until = {
            let mut until = self.until.lock().unwrap();
            if starts && until.is_none() {
                *until = Some(tokio::time::Instant::now() + self.stall);
                self.stalled.notify_one();
            }
            *until
        };
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
    }
}

#[async_trait]
impl ObjectStore for StalledAtCompletion {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        let path = location.as_ref();
        let bytes: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        let completes =
            path.contains("/log/") && bytes.windows(13).any(|w| w == b"\"complete\":[{");
        if completes || path.contains("/leases/") {
            self.wait(completes).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The holder is stopped while it writes the entry that records a task's
/// completion, past its claim's time to live: the other process takes the
/// task over and runs it, and the stopped one's entry lands after that,
/// where every reader ignores it. The stopped process, once it goes on,
/// does not tell that ending (its delegate hears nothing), so the task ends
/// with one completion, the one that counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stopped_while_it_records_a_completion_does_not_tell_it() {
    let origin = Origin::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shared: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let stalled = Arc::new(StalledAtCompletion {
        inner: shared.clone(),
        stall: Duration::from_secs(4),
        until: Mutex::new(None),
        stalled: tokio::sync::Notify::new(),
    });
    let a_objects: Arc<dyn ObjectStore> = stalled.clone();
    let (heard_a, heard_b) = (Arc::new(Heard::default()), Arc::new(Heard::default()));
    let a = worker(&a_objects, "worker-a", dir.path(), heard_a.clone()).await;
    let url = origin.http_url("/gen/65536?seed=11");
    let task = a.download(&url).unwrap().to("f").enqueue().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), stalled.stalled.notified())
        .await
        .expect("the completion is being recorded");
    // The other process starts while the holder is stopped.
    let b = worker(&shared, "worker-b", dir.path(), heard_b.clone()).await;
    tokio::time::timeout(Duration::from_secs(20), async {
        while heard_b.0.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the other process takes the task over and completes it");
    // The stopped one goes on, its late entry written; time to tell it.
    stalled.wait(false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(heard_b.0.lock().unwrap().get(&task.id()), Some(&1));
    assert_eq!(
        heard_a.0.lock().unwrap().get(&task.id()),
        None,
        "the stopped holder told an ending nobody reads"
    );
    assert_eq!(origin.log().len(), 2, "run by each once");
    let data = std::fs::read(dir.path().join("f")).unwrap();
    assert_eq!(Sha256::digest(&data).as_slice(), body::sha256(11, 0, 65536));
    a.shutdown().await;
    b.shutdown().await;
}
