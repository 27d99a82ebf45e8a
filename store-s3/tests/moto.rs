#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The TaskStore conformance suite against a real S3-protocol server no one
//! here wrote: moto (PyPI `moto[server]` 5.2.1) on 127.0.0.1, through
//! object_store's `AmazonS3` client. Two stores on one session (two
//! processes, as far as the store can tell) write at once and lose nothing.

mod common;

use common::{bucket, one_provider};
use std::sync::Arc;

use object_store::ObjectStore;
use store_s3::S3TaskStore;

use transfer_core::{SessionId, TaskStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_against_moto() {
    one_provider();
    let moto = testkit::Moto::start(&["ferry-conformance"]).unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(bucket(&moto, "ferry-conformance"));
    testkit::conformance::task_store(|| {
        let objects = objects.clone();
        async move { S3TaskStore::new(objects, "ferry").compact_every(8) }
    })
    .await;
}

/// Two stores on one session commit 40 batches each, interleaved: every
/// batch lands, and both read the same records afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_session_lose_nothing() {
    one_provider();
    let moto = testkit::Moto::start(&["ferry-writers"]).unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(bucket(&moto, "ferry-writers"));
    let session = SessionId::new("shared").unwrap();
    let a = Arc::new(S3TaskStore::new(objects.clone(), "ferry").compact_every(16));
    let b = Arc::new(S3TaskStore::new(objects, "ferry").compact_every(16));
    let writer = |store: Arc<S3TaskStore>, base: u64| {
        let session = session.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let r = testkit::conformance::record(base + i, "shared");
                store.save(&session, vec![r]).await.unwrap();
            }
        })
    };
    let (x, y) = (writer(a.clone(), 0), writer(b.clone(), 1000));
    x.await.unwrap();
    y.await.unwrap();
    let ids = |store: Arc<S3TaskStore>| {
        let session = session.clone();
        async move {
            let mut ids: Vec<u64> = store
                .load(&session)
                .await
                .unwrap()
                .records
                .iter()
                .map(|r| r.id.as_u64())
                .collect();
            ids.sort_unstable();
            ids
        }
    };
    let (seen_a, seen_b) = (ids(a).await, ids(b).await);
    assert_eq!(seen_a.len(), 80, "every batch of both writers landed");
    assert_eq!(seen_a, seen_b, "both see the same session");
}
