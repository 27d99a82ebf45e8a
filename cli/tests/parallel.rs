#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `-j N` keeps its promise: N transfers at once to one server, over N
//! HTTP/1.1 connections (the connection pool's per-host cap is the
//! session's, not a smaller one of its own).

mod common;

use std::collections::HashSet;

use common::{ferry_blocking, stderr};
use testkit::{Fault, Origin, Resource, Script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn j_ten_runs_ten_at_once_on_one_server() {
    let origin = Origin::start().await.unwrap();
    let mut urls = Vec::new();
    for i in 0..10 {
        let path = format!("/j{i}.bin");
        origin.resource(&path, Resource::seeded(50 + i, 1 << 20));
        // About a second each: long enough to overlap.
        origin.script(&path, Script::new().always(Fault::RateLimit(1 << 20)));
        urls.push(origin.http_url(&path));
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let mut args = vec!["get", "-j", "10", "--output-dir", out.to_str().unwrap()];
    args.extend(urls.iter().map(String::as_str));
    let got = ferry_blocking(&home, &args).await;
    assert!(got.status.success(), "{}", stderr(&got));
    let log = origin.log();
    assert_eq!(log.len(), 10);
    let connections: HashSet<u64> = log.iter().map(|e| e.connection).collect();
    assert_eq!(connections.len(), 10, "one connection each: {log:?}");
    // All ten were under way at once: each began before any ended.
    let last_start = log.iter().map(|e| e.at).max().unwrap();
    let first_end = log.iter().filter_map(|e| e.ended).min().unwrap();
    assert!(last_start < first_end, "ten at once: {log:?}");
}
