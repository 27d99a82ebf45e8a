//! Durable saves per second with 1, 16 and 256 concurrent savers: group
//! commit should make many savers far cheaper per record than one.

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use store_fs::FsTaskStore;
use transfer_core::{SessionId, TaskStore};

fn saves(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir_in(std::env::var("FERRY_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let store = Arc::new(FsTaskStore::open(dir.path()).unwrap());
    let session = SessionId::new("bench").unwrap();
    let mut g = c.benchmark_group("durable_saves");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for savers in [1u64, 16, 256] {
        g.throughput(Throughput::Elements(savers));
        g.bench_function(format!("{savers}_concurrent"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for it in 0..iters {
                        let all = (0..savers).map(|i| {
                            let store = store.clone();
                            let session = session.clone();
                            let record = testkit::conformance::record(it * 1000 + i, "bench");
                            tokio::spawn(async move { store.save(&session, vec![record]).await })
                        });
                        for h in futures::future::join_all(all).await {
                            h.unwrap().unwrap();
                        }
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, saves);
criterion_main!(benches);
