#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! 10,000 small downloads through one session: every one completes intact,
//! every completion is delivered, and memory stays bounded.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use std::sync::Arc;

use async_trait::async_trait;
use common::{Fixture, Proto};
use store_fs::FsPayloadStore;
use testkit::body;
use tokio::sync::mpsc;
use transfer_core::{Completion, Delegate};

/// Hands every completion to the test; the delegate is the reliable path
/// (the event stream may skip events for a slow reader).
struct Collect(mpsc::UnboundedSender<Completion>);

#[async_trait]
impl Delegate for Collect {
    async fn completed(&self, c: &Completion) {
        let _ = self.0.send(c.clone());
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_small_downloads_all_complete_and_are_delivered() {
    const N: u64 = 10_000;
    const LEN: u64 = 2048;
    let f = Fixture::new(Proto::H2).await;
    let (tx, mut completions) = mpsc::unbounded_channel();
    let payloads = Arc::new(FsPayloadStore::new(&f.out).unwrap());
    let s = f
        .session_full(true, payloads, Fixture::config(), Arc::new(Collect(tx)))
        .await;
    let started = Instant::now();
    let mut ids = HashSet::new();
    for i in 0..N {
        let t = s
            .download(&f.url(&format!("/gen/{LEN}?seed={i}")))
            .unwrap()
            .to(format!("f{i}"))
            .enqueue()
            .await
            .unwrap();
        ids.insert(t.id());
    }
    let enqueued = started.elapsed();
    eprintln!("enqueued {N} in {enqueued:?}");
    let mut done = HashSet::new();
    while done.len() < ids.len() {
        let c = tokio::time::timeout(Duration::from_secs(120), completions.recv())
            .await
            .expect("completions keep coming")
            .expect("the session is running");
        assert!(ids.contains(&c.task));
        assert!(c.outcome.is_completed(), "{:?}", c.outcome);
        assert!(done.insert(c.task), "delivered twice: {}", c.task);
    }
    let all = started.elapsed();
    for i in (0..N).step_by(997) {
        let got = f.file(&format!("f{i}")).unwrap();
        assert_eq!(got, body::bytes(i, 0, 0..LEN), "file {i}");
    }
    let peak = rss_kib();
    eprintln!(
        "{N} downloads: enqueued in {enqueued:?}, all delivered in {all:?}, peak RSS {} MiB",
        peak / 1024
    );
    // Not a speed check: a leak of a few KiB per task would show here.
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB");
}

/// Counts the store's commits, durable and deferrable; the store itself is
/// the real one on disk (the count is what this test is about).
struct Counting {
    inner: store_fs::FsTaskStore,
    durable: std::sync::atomic::AtomicU64,
    /// Durable commits that record no ending.
    durable_without_ending: std::sync::atomic::AtomicU64,
    deferrable: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl transfer_core::TaskStore for Counting {
    async fn load(
        &self,
        session: &transfer_core::SessionId,
    ) -> Result<transfer_core::Snapshot, transfer_core::StoreError> {
        self.inner.load(session).await
    }

    async fn commit(
        &self,
        session: &transfer_core::SessionId,
        batch: transfer_core::Batch,
    ) -> Result<(), transfer_core::StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        if batch.deferrable {
            self.deferrable.fetch_add(1, Relaxed);
        } else {
            self.durable.fetch_add(1, Relaxed);
            if batch.complete.is_empty() {
                self.durable_without_ending.fetch_add(1, Relaxed);
            }
        }
        self.inner.commit(session, batch).await
    }

    async fn sessions(&self) -> Result<Vec<transfer_core::SessionId>, transfer_core::StoreError> {
        self.inner.sessions().await
    }
}

/// Starting a download is not worth a sync of its own: of the changes of
/// 200 small downloads, only enqueues, endings and checkpoints are waited
/// on, so durable commits stay within one per task (the endings, grouped)
/// plus the enqueue; and after a shutdown every ending and acknowledgement
/// is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_ride_on_durable_commits_and_shutdown_leaves_everything_on_disk() {
    use std::sync::atomic::Ordering::Relaxed;
    use transfer_core::{Phase, TaskStore};
    const N: u64 = 200;
    let f = Fixture::new(Proto::H1).await;
    let store = Arc::new(Counting {
        inner: store_fs::FsTaskStore::open(&f.state).unwrap(),
        durable: 0.into(),
        durable_without_ending: 0.into(),
        deferrable: 0.into(),
    });
    let (tx, mut completions) = mpsc::unbounded_channel();
    let http = transport_http::HttpConfig::default()
        .roots(transport_http::Roots::Webpki)
        .add_root(f.origin.root_cert_der());
    let mut config = Fixture::config();
    config.checkpoint_interval = Duration::from_secs(3600);
    let s = scheduler::Session::builder("test.commits")
        .unwrap()
        .store(store.clone())
        .payloads(Arc::new(FsPayloadStore::new(&f.out).unwrap()))
        .transport(Arc::new(transport_http::HttpTransport::new(http).unwrap()))
        .config(config)
        .delegate(Arc::new(Collect(tx)))
        .build()
        .await
        .unwrap();
    let specs = (0..N)
        .map(|i| {
            transfer_core::TaskSpec::download(
                &f.url(&format!("/gen/4096?seed={i}")),
                transfer_core::Destination::Path(format!("c{i}").into()),
            )
            .label(format!("c{i}"))
            .build()
            .unwrap()
        })
        .collect();
    s.enqueue_many(specs, true).await.unwrap();
    for _ in 0..N {
        let c = tokio::time::timeout(Duration::from_secs(60), completions.recv())
            .await
            .expect("completions keep coming")
            .expect("the session is running");
        assert!(c.outcome.is_completed(), "{:?}", c.outcome);
    }
    s.shutdown().await;
    let durable = store.durable.load(Relaxed);
    let other = store.durable_without_ending.load(Relaxed);
    let deferrable = store.deferrable.load(Relaxed);
    eprintln!(
        "{N} downloads: {durable} durable commits ({other} without an ending), {deferrable} deferrable"
    );
    // Durable commits without an ending: the enqueue (in a few commits if
    // the engine wakes while it arrives), the last commit at shutdown and
    // the last acknowledgements. A start that did not meet another commit
    // used to take one of its own.
    assert!(other <= 10, "{other} durable commits without an ending");
    assert!(
        durable <= N + 10,
        "{durable} durable commits for {N} downloads"
    );
    drop(s);
    drop(store);
    let snapshot = store_fs::FsTaskStore::open(&f.state)
        .unwrap()
        .load(&transfer_core::SessionId::new("test.commits").unwrap())
        .await
        .unwrap();
    assert_eq!(snapshot.records.len(), N as usize);
    assert!(
        snapshot
            .records
            .iter()
            .all(|r| r.state.phase == Phase::Completed),
        "every ending is on disk"
    );
    assert!(
        snapshot.outbox.is_empty(),
        "every acknowledgement is on disk"
    );
}
