//! MB/s of a 1 GiB download from the testkit origin into a sink, Ferry's
//! transport beside `curl` fetching the same URL in the same run: plain
//! HTTP/1.1, and TLS HTTP/2 (with hyper's default HTTP/2 windows and with
//! the windows transport-http uses, which is how those were chosen).
//!
//! `cargo bench -p transport-http --bench throughput`. curl is skipped with
//! a message when it is not on PATH.

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use testkit::Origin;
use transport_http::{HttpConfig, HttpTransport, Roots};

const LEN: u64 = 1 << 30;

async fn ferry_get(t: &HttpTransport, url: &str) {
    assert_eq!(testkit::drain(t, url).await.unwrap(), LEN);
}

fn curl(args: &[&str], url: &str) -> Duration {
    let start = Instant::now();
    let status = Command::new("curl")
        .args(["-sS", "--fail", "-o", "/dev/null"])
        .args(args)
        .arg(url)
        .status()
        .unwrap();
    assert!(status.success(), "curl {args:?} {url}: {status}");
    start.elapsed()
}

fn downloads(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let origin = rt.block_on(Origin::start()).unwrap();
    let path = format!("/gen/{LEN}?seed=3");
    let (plain, tls) = (origin.http_url(&path), origin.https_url(&path));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("root.pem");
    std::fs::write(&ca, origin.root_cert_pem()).unwrap();
    let ca = ca.to_str().unwrap().to_owned();
    let have_curl = Command::new("curl").arg("--version").output().is_ok();
    if !have_curl {
        eprintln!("curl not found on PATH: skipping the curl rows");
    }

    let config = || {
        HttpConfig::default()
            .roots(Roots::None)
            .add_root(origin.root_cert_der())
    };
    let ours = HttpTransport::new(config()).unwrap();
    // hyper's own HTTP/2 defaults: 2 MiB stream / 5 MiB connection window, 16 KiB frames.
    let hyper_windows = HttpTransport::new(
        config()
            .http2_windows(2 << 20, 5 << 20)
            .http2_max_frame(16 << 10),
    )
    .unwrap();

    let mut g = c.benchmark_group("download_1GiB");
    g.throughput(Throughput::Bytes(LEN))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.bench_function("ferry_http1_plain", |b| {
        b.to_async(&rt).iter(|| ferry_get(&ours, &plain))
    });
    if have_curl {
        g.bench_function("curl_http1_plain", |b| {
            b.iter_custom(|n| (0..n).map(|_| curl(&["--http1.1"], &plain)).sum())
        });
    }
    g.bench_function("ferry_http2_tls", |b| {
        b.to_async(&rt).iter(|| ferry_get(&ours, &tls))
    });
    g.bench_function("ferry_http2_tls_hyper_default_windows", |b| {
        b.to_async(&rt).iter(|| ferry_get(&hyper_windows, &tls))
    });
    if have_curl {
        g.bench_function("curl_http2_tls", |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| curl(&["--http2", "--cacert", &ca], &tls))
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, downloads);
criterion_main!(benches);
