#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A task's outcome is never reported before its ending is durable, even
//! when the question arrives in the same batch as the ending.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{Fixture, Proto};
use scheduler::Session;
use store_fs::{FsPayloadStore, FsTaskStore};
use tokio::sync::watch;
use transfer_core::{Batch, SessionId, Snapshot, StoreError, TaskStore};
use transport_http::{HttpConfig, HttpTransport, Roots};

/// The real store on disk, with a gate the test closes to hold durable
/// commits back (so the engine stops between batches while events queue up)
/// and a flag set once a completion has been committed.
struct Gated {
    inner: FsTaskStore,
    open: watch::Receiver<bool>,
    ending_durable: AtomicBool,
}

#[async_trait]
impl TaskStore for Gated {
    async fn load(&self, session: &SessionId) -> Result<Snapshot, StoreError> {
        self.inner.load(session).await
    }

    async fn commit(&self, session: &SessionId, batch: Batch) -> Result<(), StoreError> {
        if !batch.deferrable {
            let _ = self.open.clone().wait_for(|o| *o).await;
        }
        let ending = !batch.complete.is_empty();
        self.inner.commit(session, batch).await?;
        if ending {
            self.ending_durable.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        self.inner.sessions().await
    }
}

/// A session `id` on the fixture's state, its commits held while `open` is
/// false.
async fn gated_session(
    f: &Fixture,
    id: &str,
    open: watch::Receiver<bool>,
) -> (Session, Arc<Gated>) {
    let store = Arc::new(Gated {
        inner: FsTaskStore::open(&f.state).unwrap(),
        open,
        ending_durable: AtomicBool::new(false),
    });
    let s = Session::builder(id)
        .unwrap()
        .store(store.clone())
        .payloads(Arc::new(FsPayloadStore::new(&f.out).unwrap()))
        .transport(Arc::new(
            HttpTransport::new(HttpConfig::default().roots(Roots::Webpki)).unwrap(),
        ))
        .config(Fixture::config())
        .build()
        .await
        .unwrap();
    (s, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_asked_with_the_ending_waits_for_its_commit() {
    let f = Fixture::new(Proto::H1).await;
    let (gate, open) = watch::channel(true);
    let (s, store) = gated_session(&f, "test.ended", open).await;
    // A small download runs while the engine is held in a commit: the
    // commit of a second, suspended task's enqueue, behind the closed gate.
    let t = s
        .download(&f.url("/gen/1000?seed=1"))
        .unwrap()
        .to("small")
        .enqueue()
        .await
        .unwrap();
    gate.send_replace(false);
    let held = {
        let s = s.clone();
        let url = f.url("/gen/10?seed=2");
        tokio::spawn(async move {
            s.download(&url)
                .unwrap()
                .to("other")
                .suspended()
                .enqueue()
                .await
        })
    };
    // The download's bytes land and its runner reports the ending, which
    // waits behind the held commit.
    let landed = f.out.join("small");
    common::eventually("the small download lands", Duration::from_secs(30), || {
        landed.exists().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The question queues behind the ending; then the gate opens and both
    // are handled in one batch.
    let asked = {
        let t = t.clone();
        tokio::spawn(async move { t.outcome().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!store.ending_durable.load(Ordering::SeqCst));
    gate.send_replace(true);
    let outcome = asked.await.unwrap().unwrap();
    assert!(
        outcome.as_ref().is_some_and(|o| o.is_completed()),
        "{outcome:?}"
    );
    assert!(
        store.ending_durable.load(Ordering::SeqCst),
        "the outcome was reported before the ending was durable"
    );
    held.await.unwrap().unwrap();
    s.shutdown().await;
}

/// A task starts only once its record is durable: while the commit that
/// creates it is held back, nothing is asked of the origin, although the
/// engine meanwhile starts what it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_does_not_start_before_its_creation_is_durable() {
    let f = Fixture::new(Proto::H1).await;
    let (gate, open) = watch::channel(false);
    let (s, _) = gated_session(&f, "test.created", open).await;
    let path = "/created";
    f.origin.resource(path, testkit::Resource::seeded(3, 1000));
    let enqueued = {
        let s = s.clone();
        let url = f.url(path);
        tokio::spawn(async move { s.download(&url).unwrap().to("created").enqueue().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !enqueued.is_finished(),
        "enqueue answered before its commit"
    );
    assert!(
        f.ranges(path).is_empty(),
        "the origin was asked before the task's record was durable"
    );
    assert!(f.file("created").is_none());
    gate.send_replace(true);
    let t = enqueued.await.unwrap().unwrap();
    let outcome = common::wait(&t).await;
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(f.ranges(path).len(), 1);
    s.shutdown().await;
}

/// Work that begins and ends while a commit is held back still makes the
/// session busy, then idle again: the idle event comes once more, after the
/// task's completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_done_during_a_commit_is_followed_by_an_idle_event() {
    use futures::StreamExt;
    let f = Fixture::new(Proto::H1).await;
    f.origin
        .resource("/quick", testkit::Resource::seeded(4, 1000));
    let (gate, open) = watch::channel(true);
    let (s, _) = gated_session(&f, "test.idle", open).await;
    let quick = s
        .download(&f.url("/quick"))
        .unwrap()
        .to("quick")
        .suspended()
        .enqueue()
        .await
        .unwrap();
    let other = s
        .download(&f.url("/quick"))
        .unwrap()
        .to("other")
        .suspended()
        .enqueue()
        .await
        .unwrap();
    s.wait_idle().await.unwrap();
    let mut events = Box::pin(s.events());
    // A cancel's commit is held; meanwhile the quick task is resumed, runs
    // and ends.
    gate.send_replace(false);
    let cancelled = tokio::spawn(async move { other.cancel().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resumed = {
        let quick = quick.clone();
        tokio::spawn(async move { quick.resume().await })
    };
    common::eventually(
        "the quick download lands while the commit is held",
        Duration::from_secs(30),
        || f.file("quick"),
    )
    .await;
    gate.send_replace(true);
    let mut completed = false;
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(e) = events.next().await {
            match e {
                scheduler::SessionEvent::Completed(c) if c.task == quick.id() => completed = true,
                scheduler::SessionEvent::Idle if completed => return,
                _ => {}
            }
        }
    })
    .await
    .expect("an idle event after the quick task's completion");
    cancelled.await.unwrap().unwrap();
    resumed.await.unwrap().unwrap();
    s.shutdown().await;
}

/// A cancelled task's partial is deleted once the cancel is durable, even
/// when, while that commit was under way, a new task took the cancelled
/// one's key (and so its place in the session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_partial_goes_even_when_its_key_is_taken_meanwhile() {
    let f = Fixture::new(Proto::H1).await;
    let (gate, open) = watch::channel(true);
    let (s, _) = gated_session(&f, "test.replaced", open).await;
    let path = "/replaced";
    f.origin
        .resource(path, testkit::Resource::seeded(4, 8 << 20));
    f.origin.script(
        path,
        testkit::Script::new().always(testkit::Fault::RateLimit(1 << 20)),
    );
    let old = s
        .download(&f.url(path))
        .unwrap()
        .to("big")
        .key("the-big-one")
        .enqueue()
        .await
        .unwrap();
    // Its partial, once bytes are in it.
    let partial = common::eventually("the download begins", Duration::from_secs(30), || {
        std::fs::read_dir(&f.out).unwrap().flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with(".big.")
                && name.ends_with(".partial")
                && e.metadata().is_ok_and(|m| m.len() > 0))
            .then(|| e.path())
        })
    })
    .await;
    gate.send_replace(false);
    let cancelled = {
        let old = old.clone();
        tokio::spawn(async move { old.cancel().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replaced = {
        let s = s.clone();
        let url = f.url(path);
        tokio::spawn(async move {
            s.download(&url)
                .unwrap()
                .to("big")
                .key("the-big-one")
                .suspended()
                .enqueue()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        partial.exists(),
        "nothing is deleted before the cancel is durable"
    );
    gate.send_replace(true);
    cancelled.await.unwrap().unwrap();
    let new = replaced.await.unwrap().unwrap();
    assert_ne!(new.id(), old.id(), "the key went to a new task");
    common::eventually(
        "the cancelled task's partial is deleted",
        Duration::from_secs(5),
        || (!partial.exists()).then_some(()),
    )
    .await;
    s.shutdown().await;
}
