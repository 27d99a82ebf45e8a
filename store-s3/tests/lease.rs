#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Leases on moto (an S3-protocol server from PyPI): one holder at a time,
//! renewals keep it, a holder that stops renewing loses it to a waiting
//! contender after one time to live (measured by the contender), the old
//! holder's next renewal fails, and a released lease is taken at once.

mod common;

use common::{bucket, one_provider};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use store_s3::Leases;
use transfer_core::StoreErrorKind;

fn leases(moto: &testkit::Moto) -> Leases {
    one_provider();
    let s3: Arc<dyn ObjectStore> = Arc::new(bucket(moto, "ferry-leases"));
    Leases::new(s3, "ferry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_holder_renewals_keep_it_and_silence_loses_it() {
    let moto = testkit::Moto::start(&["ferry-leases"]).unwrap();
    let (a, b) = (leases(&moto), leases(&moto));
    let ttl = Duration::from_millis(600);
    let mut held = a
        .try_acquire("session-x", "worker-a", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.try_acquire("session-x", "worker-b", ttl)
            .await
            .unwrap()
            .is_none(),
        "a held lease is not taken"
    );

    // B waits; A renews at a third of the time to live for 2 s, so B must
    // still be waiting; then A falls silent and B takes over.
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let lease = b.acquire("session-x", "worker-b", ttl).await.unwrap();
        (lease, started.elapsed())
    });
    let renewing = Instant::now();
    while renewing.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(ttl / 3).await;
        held.renew().await.unwrap();
        assert!(!waiting.is_finished(), "taken while renewed");
    }
    let silent = Instant::now();
    let (taken, _) = waiting.await.unwrap();
    assert_eq!(taken.holder(), "worker-b");
    // Each new holder fences off the last: its epoch is one more.
    assert_eq!(taken.epoch(), held.epoch() + 1);
    assert!(
        silent.elapsed() >= ttl,
        "taken over only after a whole time to live without renewal"
    );
    let lost = held.renew().await.unwrap_err();
    assert_eq!(lost.kind(), StoreErrorKind::Conflict, "{lost}");

    // Released, it is free at once.
    taken.release().await.unwrap();
    let again = a.try_acquire("session-x", "worker-a", ttl).await.unwrap();
    assert_eq!(
        again.map(|l| l.epoch()),
        Some(held.epoch() + 2),
        "a released lease is free, under a newer epoch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_contenders_for_an_expired_lease_one_wins() {
    let moto = testkit::Moto::start(&["ferry-leases"]).unwrap();
    let ttl = Duration::from_millis(300);
    let dead = leases(&moto)
        .try_acquire("task-7", "dead-worker", ttl)
        .await
        .unwrap()
        .unwrap();
    drop(dead); // never renewed again
    // Each contender that gets it keeps renewing until the end: exactly
    // one may hold it, the others wait to the end.
    let end = Instant::now() + Duration::from_secs(3);
    let contenders: Vec<_> = (0..4)
        .map(|i| {
            let l = leases(&moto);
            tokio::spawn(async move {
                let name = format!("worker-{i}");
                let got = tokio::time::timeout_at(end.into(), l.acquire("task-7", &name, ttl));
                let Ok(Ok(mut lease)) = got.await else {
                    return false;
                };
                while Instant::now() < end {
                    tokio::time::sleep(ttl / 3).await;
                    lease.renew().await.unwrap();
                }
                true
            })
        })
        .collect();
    let mut winners = 0;
    for c in contenders {
        winners += usize::from(c.await.unwrap());
    }
    assert_eq!(
        winners, 1,
        "one contender took the expired lease and kept it"
    );
}
