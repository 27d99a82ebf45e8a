//! A session holding 100,000 queued tasks: how long enqueueing them durably
//! takes, how long a new session takes to attach to them, and the resident
//! memory per queued task. One run each (they take seconds, not
//! microseconds); the state directory is on disk (`FERRY_BENCH_DIR`, else
//! the current directory).
//!
//! `cargo bench -p xtask --bench queue` (`FERRY_BENCH_TASKS` sets the count)

// Bench code: a failed unwrap is a failed run; results go to stdout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod fixture;

use std::time::Instant;

use transfer_core::{Destination, TaskSpec};

/// Tasks queued: `FERRY_BENCH_TASKS`, else 100,000.
fn tasks() -> usize {
    std::env::var("FERRY_BENCH_TASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes benches this way
    }
    let base = std::env::var("FERRY_BENCH_DIR").unwrap_or_else(|_| ".".into());
    let dir = tempfile::tempdir_in(base).unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let n = tasks();
    let specs: Vec<TaskSpec> = (0..n)
        .map(|i| {
            TaskSpec::download(
                &format!("https://example.com/photos/2026/IMG_{i:06}.jpg"),
                Destination::Path(format!("IMG_{i:06}.jpg").into()),
            )
            .label(format!("IMG_{i:06}.jpg"))
            .build()
            .unwrap()
        })
        .collect();

    let s = fixture::session(dir.path(), "bench.queue").await;
    let before = rss_kib();
    let t = Instant::now();
    let handles = s.enqueue_many(specs, false).await.unwrap();
    let enqueue = t.elapsed();
    let held = rss_kib().saturating_sub(before);
    assert_eq!(handles.len(), n);
    drop(handles);
    s.shutdown().await;
    drop(s);

    let before_attach = rss_kib();
    let t = Instant::now();
    let s = fixture::session(dir.path(), "bench.queue").await;
    let built = t.elapsed();
    let tasks = s.tasks().await.unwrap();
    let attach = t.elapsed();
    assert_eq!(tasks.len(), n);
    drop(tasks);
    let attached = rss_kib().saturating_sub(before_attach);
    println!(
        "resident memory gained by attaching to {n} tasks: {} MiB ({} bytes per task)",
        attached / 1024,
        attached * 1024 / n as u64
    );
    println!(
        "enqueue {n} tasks durably: {:.2} s ({:.0} tasks/s)",
        enqueue.as_secs_f64(),
        n as f64 / enqueue.as_secs_f64()
    );
    println!(
        "attach to a session of {n} tasks: {:.2} s (built in {:.2} s, then listed)",
        attach.as_secs_f64(),
        built.as_secs_f64()
    );
    println!(
        "resident memory held by {n} queued tasks: {} MiB ({} bytes per task)",
        held / 1024,
        held * 1024 / n as u64
    );
    // For `cargo xtask bench`.
    println!(
        "json: {{\"tasks\": {n}, \"enqueue_s\": {:.4}, \"attach_s\": {:.4}, \"rss_per_task_bytes\": {}}}",
        enqueue.as_secs_f64(),
        attach.as_secs_f64(),
        held * 1024 / n as u64
    );
}
