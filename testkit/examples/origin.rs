//! Runs the test origin until killed, for trying clients by hand and for
//! side-by-side measurements: prints its URLs and writes its root
//! certificate to the path given as the first argument (default
//! `origin-root.pem`).
//!
//! `cargo run --release -p testkit --example origin -- /tmp/root.pem`, then
//! fetch `{http}/gen/1073741824?seed=1` with any client.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[tokio::main]
async fn main() {
    let pem = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "origin-root.pem".into());
    let origin = testkit::Origin::start().await.expect("origin");
    std::fs::write(&pem, origin.root_cert_pem()).expect("writing the root certificate");
    println!("http {}", origin.http_url(""));
    println!("https {}", origin.https_url(""));
    println!("root {pem}");
    tokio::signal::ctrl_c().await.ok();
}
