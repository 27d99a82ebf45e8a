//! MB/s of a 256 MiB HTTP/3 download from the testkit origin into a sink,
//! with the receive windows (per stream / per connection) transport-quic
//! could use: quinn's defaults (1.25 MiB / 15.6 MiB as of 0.11), 4/8 MiB,
//! and 16/32 MiB. This is how the defaults of `QuicConfig` were chosen.
//!
//! `cargo bench -p transport-quic --bench windows`

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use testkit::Origin;
use transport_http::{HttpConfig, Roots};
use transport_quic::{QuicConfig, QuicTransport};

const LEN: u64 = 256 << 20;

async fn get(t: &QuicTransport, url: &str) {
    assert_eq!(testkit::drain(t, url).await.unwrap(), LEN);
}

fn windows(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let origin = rt.block_on(Origin::start()).unwrap();
    let url = origin.https_url(&format!("/gen/{LEN}?seed=5"));
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(origin.root_cert_der());
    let mut g = c.benchmark_group("http3_256MiB");
    g.throughput(Throughput::Bytes(LEN));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(10));
    for (name, stream, conn) in [
        ("windows_1.25M_15.6M", 1_250_000, 15_625_000),
        ("windows_4M_8M", 4 << 20, 8 << 20),
        ("windows_16M_32M", 16 << 20, 32 << 20),
    ] {
        let config = QuicConfig::default()
            .http(http.clone())
            .windows(stream, conn);
        let t = QuicTransport::new(config).unwrap();
        g.bench_function(name, |b| b.to_async(&rt).iter(|| get(&t, &url)));
    }
    g.finish();
}

criterion_group!(benches, windows);
criterion_main!(benches);
