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
