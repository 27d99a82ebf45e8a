#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A task store that fails its commits (a full state disk): nothing a
//! failed commit covers is acted on. A task whose record was not written
//! never starts, and its enqueue fails in words; an ending that was not
//! written is not delivered until a retry writes it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{Fixture, Proto};
use futures::StreamExt;
use scheduler::{Session, SessionError, SessionEvent};
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::Resource;
use transfer_core::{Batch, Outcome, SessionId, Snapshot, StoreError, StoreErrorKind, TaskStore};
use transport_http::{HttpConfig, Roots};

/// Fails the commits `fails` picks, as a full disk does, while `full` is set.
struct Full {
    inner: FsTaskStore,
    full: AtomicBool,
    /// Fail only commits that record an ending.
    endings_only: bool,
}

#[async_trait]
impl TaskStore for Full {
    async fn load(&self, session: &SessionId) -> Result<Snapshot, StoreError> {
        self.inner.load(session).await
    }

    async fn commit(&self, session: &SessionId, batch: Batch) -> Result<(), StoreError> {
        let picked = !self.endings_only || !batch.complete.is_empty();
        if self.full.load(Ordering::SeqCst) && picked && !batch.is_empty() {
            return Err(StoreError::new(
                StoreErrorKind::Full,
                "No space left on device (os error 28)",
            ));
        }
        self.inner.commit(session, batch).await
    }

    async fn sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        self.inner.sessions().await
    }
}

async fn session(f: &Fixture, store: Arc<Full>) -> Session {
    let http = HttpConfig::default()
        .roots(Roots::Webpki)
        .add_root(f.origin.root_cert_der());
    Session::builder("test.full")
        .unwrap()
        .store(store)
        .payloads(Arc::new(FsPayloadStore::new(&f.out).unwrap()))
        .transport(f.transport(http))
        .config(Fixture::config())
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_enqueued_while_the_state_disk_is_full_never_starts() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/f", Resource::seeded(1, 200_000));
    let store = Arc::new(Full {
        inner: FsTaskStore::open(&f.state).unwrap(),
        full: AtomicBool::new(true),
        endings_only: false,
    });
    let s = session(&f, store.clone()).await;
    let mut events = Box::pin(s.events());
    let err = s
        .download(&f.url("/f"))
        .unwrap()
        .to("f")
        .enqueue()
        .await
        .expect_err("enqueued though its record was not written");
    assert!(
        matches!(&err, SessionError::Store(e) if e.kind() == StoreErrorKind::Full),
        "{err}"
    );
    let told = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = events.next().await {
            if let SessionEvent::StoreFailed { kind, .. } = e {
                return kind;
            }
        }
        StoreErrorKind::Io
    })
    .await
    .unwrap();
    assert_eq!(told, StoreErrorKind::Full);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        f.origin.log().is_empty(),
        "the origin was asked: {:?}",
        f.origin.log()
    );
    let left: Vec<_> = std::fs::read_dir(&f.out).unwrap().collect();
    assert!(left.is_empty(), "files left: {left:?}");
    assert!(s.tasks().await.unwrap().is_empty());
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ending_is_not_delivered_until_a_retry_has_written_it() {
    let f = Fixture::new(Proto::H1).await;
    f.origin.resource("/f", Resource::seeded(2, 100_000));
    let store = Arc::new(Full {
        inner: FsTaskStore::open(&f.state).unwrap(),
        full: AtomicBool::new(true),
        endings_only: true,
    });
    let s = session(&f, store.clone()).await;
    let mut events = Box::pin(s.events());
    let task = f.get(&s, &f.url("/f"), "f").await;
    // The download ends; its ending cannot be written.
    common::eventually("the file is in place", Duration::from_secs(10), || {
        f.file("f").map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        task.outcome().await.unwrap().is_none(),
        "told the task ended though its ending is not on disk"
    );
    let stored = store.inner.load(s.id()).await.unwrap();
    assert!(stored.outbox.is_empty());
    assert!(!stored.records[0].state.is_terminal());
    store.full.store(false, Ordering::SeqCst);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if let SessionEvent::Completed(c) = e {
                return c;
            }
        }
        panic!("no completion");
    })
    .await
    .unwrap();
    assert!(matches!(ended.outcome, Outcome::Completed { .. }));
    let stored = store.inner.load(s.id()).await.unwrap();
    assert!(stored.records[0].state.is_terminal());
    s.shutdown().await;
}
