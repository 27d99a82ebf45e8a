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

/// `follow` gives what the other writer saved since the last `follow`, in
/// order, even a save that this writer's own later save replaced in the
/// records (as a user's cancel would be, under the running process's next
/// checkpoint), and across a checkpoint that folded the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_gives_the_other_writers_saves_even_when_replaced() {
    one_provider();
    let moto = testkit::Moto::start(&["ferry-follow"]).unwrap();
    let objects: Arc<dyn ObjectStore> = Arc::new(bucket(&moto, "ferry-follow"));
    let session = SessionId::new("shared").unwrap();
    let mine = S3TaskStore::new(objects.clone(), "ferry").compact_every(4);
    let other = S3TaskStore::new(objects, "ferry").compact_every(4);
    let record = testkit::conformance::record;
    mine.save(&session, vec![record(1, "mine")]).await.unwrap();
    let (_, foreign) = mine.follow(&session).await.unwrap();
    assert!(foreign.is_empty(), "nothing from others yet");

    other
        .save(&session, vec![record(1, "theirs")])
        .await
        .unwrap();
    other
        .save(&session, vec![record(2, "theirs too")])
        .await
        .unwrap();
    // This writer saves task 1 again: in the records, its save wins.
    mine.save(&session, vec![record(1, "mine again")])
        .await
        .unwrap();
    let (snap, foreign) = mine.follow(&session).await.unwrap();
    let labels: Vec<_> = foreign.iter().map(|r| r.spec.label.clone()).collect();
    assert_eq!(
        labels,
        [Some("theirs".to_owned()), Some("theirs too".to_owned())]
    );
    let one = snap.records.iter().find(|r| r.id.as_u64() == 1).unwrap();
    assert_eq!(one.spec.label.as_deref(), Some("mine again"));
    let (_, foreign) = mine.follow(&session).await.unwrap();
    assert!(foreign.is_empty(), "each save is given once");

    // Many saves from the other writer: folded into checkpoints before
    // this one reads them; each record they changed still comes back.
    for i in 10..30 {
        other
            .save(&session, vec![record(i, "later")])
            .await
            .unwrap();
    }
    let (_, foreign) = mine.follow(&session).await.unwrap();
    let mut ids: Vec<u64> = foreign.iter().map(|r| r.id.as_u64()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (10..30).collect::<Vec<_>>());
}
