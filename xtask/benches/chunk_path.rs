//! The runner's per-chunk path end to end: a 64 MiB download from the
//! testkit origin over loopback HTTP/1.1 through a session (transport
//! frames, the stop and throttle checks, the partial's write buffer,
//! progress, checkpoints) into a file on tmpfs when there is one. Reported
//! as bytes per second; the origin runs in the same process, so the figure
//! is the client's and the server's work together.
//!
//! `cargo bench -p xtask --bench chunk_path`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fixture;

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use testkit::Resource;

const LEN: u64 = 64 << 20;

fn bench_download(c: &mut Criterion) {
    let rt = fixture::runtime();
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let (origin, session) = fixture::origin_and_session(
        &rt,
        dir.path(),
        "bench.chunks",
        "/big",
        Resource::seeded(7, LEN),
    );
    let url = origin.http_url("/big");
    let n = AtomicU64::new(0);
    let mut g = c.benchmark_group("chunk_path");
    g.throughput(Throughput::Bytes(LEN));
    g.sample_size(10);
    g.bench_function("download_64MiB_h1", |b| {
        b.to_async(&rt).iter(|| async {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let name = format!("big{i}");
            let task = session
                .download(&url)
                .unwrap()
                .to(name.clone())
                .enqueue()
                .await
                .unwrap();
            assert!(task.wait().await.unwrap().is_completed());
            std::fs::remove_file(dir.path().join("out").join(name)).unwrap();
        });
    });
    g.finish();
    rt.block_on(session.shutdown());
}

criterion_group!(benches, bench_download);
criterion_main!(benches);
