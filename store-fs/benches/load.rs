//! Loading one session of 100,000 task records, and opening the store that
//! holds them: what a process pays at start-up to resume a large session.
//! Also `sessions()`, which today scans every record of every session, and
//! decoding the same records from memory: how much of `load` is decoding.

// Bench code: a failed unwrap is a failed run; the database size is printed once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use store_fs::FsTaskStore;
use transfer_core::{SessionId, TaskRecord, TaskStore};

const RECORDS: u64 = 100_000;
const PER_COMMIT: u64 = 5_000;

fn load(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // On disk (the working directory unless FERRY_BENCH_DIR says otherwise), not tmpfs.
    let dir = tempfile::tempdir_in(std::env::var("FERRY_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    let session = SessionId::new("com.example.bench").unwrap();
    let record = |i: u64| testkit::conformance::record(i, &format!("photos/2026/IMG_{i:06}.jpg"));
    {
        let store = FsTaskStore::open(dir.path()).unwrap();
        rt.block_on(async {
            for first in (0..RECORDS).step_by(PER_COMMIT as usize) {
                let records = (first..first + PER_COMMIT).map(record).collect();
                store.save(&session, records).await.unwrap();
            }
            let loaded = store.load(&session).await.unwrap();
            assert_eq!(loaded.records.len() as u64, RECORDS);
        });
        println!(
            "database: {} records, {} bytes",
            RECORDS,
            std::fs::metadata(store.path()).unwrap().len()
        );
    }
    let encoded: Vec<Vec<u8>> = (0..RECORDS).map(|i| record(i).encode()).collect();
    println!(
        "encoded record: {} bytes on average",
        encoded.iter().map(Vec::len).sum::<usize>() as u64 / RECORDS
    );

    let mut g = c.benchmark_group("store_fs_100k");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));

    let store = FsTaskStore::open(dir.path()).unwrap();
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("load_session", |b| {
        b.to_async(&rt).iter(|| async {
            let snapshot = store.load(&session).await.unwrap();
            assert_eq!(snapshot.records.len() as u64, RECORDS);
            snapshot
        })
    });
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            encoded
                .iter()
                .map(|e| TaskRecord::decode(e).unwrap())
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("sessions", |b| {
        b.to_async(&rt)
            .iter(|| async { store.sessions().await.unwrap() })
    });
    drop(store);

    // Opening needs the previous handle closed; time the open alone.
    g.throughput(Throughput::Elements(1));
    g.bench_function("open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let store = FsTaskStore::open(dir.path()).unwrap();
                total += start.elapsed();
                drop(store);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
