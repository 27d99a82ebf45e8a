#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fencing in the session log: a record written under an older claim
//! epoch than the one the log holds is ignored by every reader, and so is
//! the completion that came with it; the writer's own view agrees.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::memory::InMemory;
use store_s3::S3TaskStore;
use transfer_core::{Batch, Phase, SessionId, TaskStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_an_older_epoch_counts_for_no_reader() {
    let objects: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let session = SessionId::new("s").unwrap();
    let (stale, taker) = (
        S3TaskStore::new(objects.clone(), "ferry"),
        S3TaskStore::new(objects.clone(), "ferry"),
    );
    let mut r = testkit::conformance::record(1, "x");
    r.epoch = 1;
    stale.save(&session, vec![r.clone()]).await.unwrap();
    // Another process takes the task over (epoch 2) and completes it.
    taker.load(&session).await.unwrap();
    let mut theirs = r.clone();
    theirs.epoch = 2;
    theirs.state.phase = Phase::Completed;
    let done = testkit::conformance::completion(20, 1, 5);
    taker
        .commit(
            &session,
            Batch {
                save: vec![theirs.clone()],
                complete: vec![done.clone()],
                ..Batch::default()
            },
        )
        .await
        .unwrap();
    // The old holder wakes up and writes its own ending under epoch 1.
    let mut mine = r.clone();
    mine.state.phase = Phase::Failed(transfer_core::TransferError::new(
        transfer_core::ErrorKind::ConnectionLost,
        "late",
    ));
    stale
        .commit(
            &session,
            Batch {
                save: vec![mine],
                complete: vec![testkit::conformance::completion(21, 1, 6)],
                ..Batch::default()
            },
        )
        .await
        .unwrap();
    for (who, store) in [
        ("the stale writer", &stale),
        ("the taker", &taker),
        ("a new reader", &S3TaskStore::new(objects.clone(), "ferry")),
    ] {
        let snap = store.load(&session).await.unwrap();
        assert_eq!(snap.records, vec![theirs.clone()], "{who}");
        assert_eq!(snap.outbox, vec![done.clone()], "{who}");
    }
}
