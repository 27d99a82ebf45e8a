//! The throttle on the real clock: 16 MiB from the testkit origin over
//! loopback HTTP/1.1 with the session limited to 8 MiB/s, and again with the
//! task limited to 8 MiB/s, and a 16 MiB upload to the origin's sink under
//! the session limit. Criterion's throughput line is the rate the transfer
//! achieved; read it against the limit (8 MiB/s). The paused-clock unit
//! test in `scheduler/src/throttle.rs` shows the same within 5% without
//! noise.
//!
//! `cargo bench -p xtask --bench rate_limit`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixture;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use testkit::Resource;

const LEN: u64 = 16 << 20;
const LIMIT: u64 = 8 << 20;

fn bench_rate_limit(c: &mut Criterion) {
    let rt = fixture::runtime();
    let dir = tempfile::tempdir().unwrap();
    let (origin, session) = fixture::origin_and_session(
        &rt,
        dir.path(),
        "bench.rate",
        "/paced",
        Resource::seeded(9, LEN),
    );
    let url = origin.http_url("/paced");
    let n = AtomicU64::new(0);
    let mut g = c.benchmark_group("rate_limit_8MiBps");
    g.throughput(Throughput::Bytes(LEN));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(25));
    for per_task in [false, true] {
        session
            .set_rate_limit((!per_task).then_some(LIMIT))
            .unwrap();
        let name = if per_task {
            "task_limit"
        } else {
            "session_limit"
        };
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let i = n.fetch_add(1, Ordering::Relaxed);
                let file = format!("paced{i}");
                let mut download = session.download(&url).unwrap().to(file.clone());
                if per_task {
                    download = download.max_rate(LIMIT);
                }
                let task = download.enqueue().await.unwrap();
                assert!(task.wait().await.unwrap().is_completed());
                std::fs::remove_file(dir.path().join("out").join(file)).unwrap();
            });
        });
    }
    session.set_rate_limit(Some(LIMIT)).unwrap();
    let source = dir.path().join("upload-source");
    std::fs::write(&source, testkit::body::bytes(9, 0, 0..LEN)).unwrap();
    let sink = origin.http_url("/upload/paced");
    g.bench_function("upload_session_limit", |b| {
        b.to_async(&rt).iter(|| async {
            let task = session.upload(&source).to(&sink).enqueue().await.unwrap();
            assert!(task.wait().await.unwrap().is_completed());
        });
    });
    g.finish();
    rt.block_on(session.shutdown());
}

criterion_group!(benches, bench_rate_limit);
criterion_main!(benches);
