//! The token bucket every chunk of a paced transfer passes through: what a
//! `take` costs when unlimited, and when limited with tokens to spare (the
//! sleep of a real limit is the point of a limit, not a cost, so it is not
//! measured here).
//!
//! `cargo bench -p scheduler --bench throttle`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use scheduler::throttle::Bucket;

fn bench_take(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let mut g = c.benchmark_group("bucket_take");
    g.throughput(Throughput::Elements(1));
    let unlimited = Bucket::new(None);
    g.bench_function("unlimited", |b| {
        b.to_async(&rt).iter(|| unlimited.take(16 << 10));
    });
    // 1 TB/s: a 16 KiB chunk never waits, so this is the bookkeeping alone.
    let limited = Bucket::new(Some(1 << 40));
    g.bench_function("limited_with_tokens", |b| {
        b.to_async(&rt).iter(|| limited.take(16 << 10));
    });
    // Two transfers sharing the session's bucket take turns on its lock.
    let shared = std::sync::Arc::new(Bucket::new(Some(1 << 40)));
    g.bench_function("shared_by_two_tasks", |b| {
        b.to_async(&rt).iter(|| {
            let shared = shared.clone();
            async move {
                let (a, b) = (shared.clone(), shared);
                futures::join!(a.take(16 << 10), b.take(16 << 10));
            }
        });
    });
    g.finish();
}

criterion_group!(benches, bench_take);
criterion_main!(benches);
