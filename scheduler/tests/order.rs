#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Scheduling order and limits through a session: priority first, then
//! enqueue order; the per-host limit; cancelling with resume data.

mod common;

use std::time::Duration;

use common::{Fixture, Proto, wait};
use store_fs::FsPayloadStore;
use testkit::{Fault, Resource, Script};
use transfer_core::{Outcome, Phase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first_then_enqueue_order() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/blocker", Resource::seeded(1, 4 << 20));
    f.origin
        .script("/blocker", Script::new().always(Fault::RateLimit(8 << 20)));
    for p in ["low", "high", "mid", "mid2"] {
        f.origin
            .resource(&format!("/{p}"), Resource::seeded(2, 1000));
    }
    let mut config = common::Fixture::config();
    config.policy.max_concurrent = 1;
    let payloads = std::sync::Arc::new(FsPayloadStore::new(&f.out).unwrap());
    let s = f.session_with(true, payloads, config).await;
    let blocker = f.get(&s, &f.url("/blocker"), "blocker").await;
    // While the blocker holds the only slot:
    let mut handles = Vec::new();
    for (name, priority) in [("low", 0.1), ("high", 0.9), ("mid", 0.5), ("mid2", 0.5)] {
        let t = s
            .download(&f.url(&format!("/{name}")))
            .unwrap()
            .to(name)
            .priority(priority)
            .enqueue()
            .await
            .unwrap();
        handles.push(t);
    }
    assert!(matches!(wait(&blocker).await, Outcome::Completed { .. }));
    for t in &handles {
        assert!(matches!(wait(t).await, Outcome::Completed { .. }));
    }
    let order: Vec<String> = f.origin.log().iter().map(|e| e.path.clone()).collect();
    assert_eq!(order, ["/blocker", "/high", "/mid", "/mid2", "/low"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_the_per_host_limit_run_at_once() {
    let f = Fixture::new(Proto::H2).await;
    let mut config = common::Fixture::config();
    config.policy.max_per_host = 2;
    let payloads = std::sync::Arc::new(FsPayloadStore::new(&f.out).unwrap());
    let s = f.session_with(true, payloads, config).await;
    let mut handles = Vec::new();
    for i in 0..6 {
        let path = format!("/h{i}");
        f.origin.resource(&path, Resource::seeded(i, 2 << 20));
        f.origin
            .script(&path, Script::new().always(Fault::RateLimit(8 << 20)));
        handles.push(f.get(&s, &f.url(&path), &format!("h{i}")).await);
    }
    let mut most = 0;
    loop {
        let tasks = s.tasks().await.unwrap();
        let running = tasks
            .iter()
            .filter(|r| matches!(r.state.phase, Phase::Running { .. }))
            .count();
        most = most.max(running);
        if tasks.iter().all(|r| r.state.is_terminal()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 2, "two at a time, never more");
    for t in &handles {
        assert!(matches!(wait(t).await, Outcome::Completed { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_with_resume_data_keeps_the_partial() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/c", Resource::seeded(3, 64 << 20));
    f.origin
        .script("/c", Script::new().always(Fault::RateLimit(8 << 20)));
    let s = f.session().await;
    let t = f.get(&s, &f.url("/c"), "c").await;
    loop {
        let r = t.snapshot().await.unwrap().unwrap();
        if r.state.resume.durable_offset > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resume = t
        .cancel_producing_resume_data()
        .await
        .unwrap()
        .expect("resume data");
    assert!(resume.durable_offset > 0);
    assert!(resume.validator.is_some(), "the validator to resume with");
    match wait(&t).await {
        Outcome::Cancelled { resume: Some(r) } => {
            assert_eq!(r.durable_offset, resume.durable_offset)
        }
        other => panic!("expected Cancelled with resume data, got {other:?}"),
    }
    let partials: Vec<_> = std::fs::read_dir(&f.out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert_eq!(partials.len(), 1, "the partial is kept");
    assert!(partials[0].metadata().unwrap().len() >= resume.durable_offset);
}
