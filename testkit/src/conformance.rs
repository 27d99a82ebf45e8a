//! Conformance suites every store backend runs (object_store's
//! `integration.rs` pattern): plain async functions that panic with a clear
//! message when a backend breaks the semantics of
//! [`TaskStore`](transfer_core::TaskStore) or [`PayloadStore`](transfer_core::PayloadStore).

pub mod transport;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use transfer_core::{
    Batch, Completion, Destination, EventId, Outcome, PayloadStore, RetryPolicy, SessionId, TaskId,
    TaskRecord, TaskSpec, TaskState, TaskStore, Timestamp,
};

/// A record for task `id` in tests, with a recognisable label.
pub fn record(id: u64, label: &str) -> TaskRecord {
    let spec = TaskSpec::download(
        &format!("https://example.com/{id}"),
        Destination::Path(format!("f{id}").into()),
    )
    .label(label)
    .build()
    .unwrap_or_else(|e| panic!("test spec: {e}"));
    TaskRecord {
        id: TaskId::from_u64(id),
        seq: id,
        created_at: Timestamp::from_millis(1_800_000_000_000u64.saturating_add(id)),
        spec,
        state: TaskState::new(RetryPolicy::default(), id),
        epoch: 0,
        request: None,
    }
}

/// A completion event for task `task` in tests.
pub fn completion(event: u64, task: u64, at: u64) -> Completion {
    Completion {
        event: EventId::from_u64(event),
        task: TaskId::from_u64(task),
        label: None,
        at: Timestamp::from_millis(at),
        outcome: Outcome::Completed { bytes: event },
        response: None,
    }
}

fn session(name: &str) -> SessionId {
    SessionId::new(name).unwrap_or_else(|e| panic!("test session: {e}"))
}

async fn load_sorted(store: &dyn TaskStore, s: &SessionId) -> (Vec<TaskRecord>, Vec<Completion>) {
    let snap = store.load(s).await.unwrap_or_else(|e| panic!("load: {e}"));
    let mut records = snap.records;
    records.sort_by_key(|r| r.id);
    (records, snap.outbox)
}

/// Runs the whole [`TaskStore`] suite. `open` opens the same store each time
/// it is called (the suite drops the store and opens it again).
pub async fn task_store<F, Fut, S>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
    S: TaskStore + 'static,
{
    let store = open().await;
    save_load_remove(&store).await;
    batches_apply_whole(&store).await;
    outbox_keeps_order_until_acknowledged(&store).await;
    sessions_are_separate(&store).await;
    deferred_then_durable(&store).await;
    concurrent_savers_all_land(Arc::new(store)).await;
    // Everything above survives closing and opening again.
    let reopened = open().await;
    let (records, _) = load_sorted(&reopened, &session("conf.basic")).await;
    assert_eq!(
        records.iter().map(|r| r.id.as_u64()).collect::<Vec<_>>(),
        [1, 3],
        "records after reopening"
    );
    let (records, _) = load_sorted(&reopened, &session("conf.concurrent")).await;
    assert_eq!(records.len(), 64, "concurrent saves after reopening");
    let (records, _) = load_sorted(&reopened, &session("conf.deferred")).await;
    assert_eq!(
        records,
        vec![record(20, "deferred, then replaced"), record(21, "durable")],
        "a deferrable batch followed by a durable one, after reopening"
    );
}

/// A deferrable batch is seen by loads at once, and a durable batch after
/// it makes both durable (checked after reopening).
async fn deferred_then_durable(store: &dyn TaskStore) {
    let s = session("conf.deferred");
    for (id, label) in [(20, "deferred"), (22, "deferred, then removed")] {
        store
            .commit(
                &s,
                Batch {
                    save: vec![record(id, label)],
                    deferrable: true,
                    ..Batch::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (records, _) = load_sorted(store, &s).await;
    assert_eq!(
        records,
        vec![record(20, "deferred"), record(22, "deferred, then removed")],
        "deferrable batches are visible at once"
    );
    store
        .commit(
            &s,
            Batch {
                save: vec![record(20, "deferred, then replaced")],
                remove: vec![TaskId::from_u64(22)],
                deferrable: true,
                ..Batch::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .save(&s, vec![record(21, "durable")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn save_load_remove(store: &dyn TaskStore) {
    let s = session("conf.basic");
    assert!(
        store
            .load(&s)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .records
            .is_empty(),
        "a new session is empty"
    );
    store
        .save(&s, vec![record(1, "a"), record(2, "b"), record(3, "c")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (records, _) = load_sorted(store, &s).await;
    assert_eq!(
        records,
        vec![record(1, "a"), record(2, "b"), record(3, "c")],
        "saved records load back equal"
    );
    store
        .save(&s, vec![record(3, "c2")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .remove(&s, vec![TaskId::from_u64(2)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (records, _) = load_sorted(store, &s).await;
    assert_eq!(
        records,
        vec![record(1, "a"), record(3, "c2")],
        "a save replaces, a remove deletes"
    );
    store
        .save(&s, vec![record(3, "c")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn batches_apply_whole(store: &dyn TaskStore) {
    let s = session("conf.batch");
    store
        .save(&s, vec![record(10, "old")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .commit(
            &s,
            Batch {
                complete: vec![completion(100, 10, 5)],
                ..Batch::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let batch = Batch {
        save: vec![record(11, "new")],
        remove: vec![TaskId::from_u64(10)],
        complete: vec![completion(101, 11, 6)],
        acknowledge: vec![EventId::from_u64(100)],
        deferrable: false,
    };
    store
        .commit(&s, batch)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (records, outbox) = load_sorted(store, &s).await;
    assert_eq!(records, vec![record(11, "new")]);
    assert_eq!(
        outbox,
        vec![completion(101, 11, 6)],
        "the batch's outbox changes landed with its records"
    );
    // One task at a time says the same.
    let one = store
        .load_task(&s, TaskId::from_u64(11))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one, (Some(record(11, "new")), Some(completion(101, 11, 6))));
    let gone = store
        .load_task(&s, TaskId::from_u64(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        gone,
        (None, None),
        "a removed task, its completion acknowledged"
    );
    store
        .commit(&s, Batch::default())
        .await
        .unwrap_or_else(|e| panic!("an empty batch: {e}"));
}

async fn outbox_keeps_order_until_acknowledged(store: &dyn TaskStore) {
    let s = session("conf.outbox");
    let events = vec![
        completion(7, 1, 300),
        completion(9, 2, 100),
        completion(8, 3, 200),
    ];
    store
        .commit(
            &s,
            Batch {
                complete: events,
                ..Batch::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, outbox) = load_sorted(store, &s).await;
    let ids: Vec<u64> = outbox.iter().map(|c| c.event.as_u64()).collect();
    assert_eq!(ids, [9, 8, 7], "unacknowledged completions, oldest first");
    store
        .acknowledge(&s, vec![EventId::from_u64(8)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .acknowledge(&s, vec![EventId::from_u64(8)])
        .await
        .unwrap_or_else(|e| panic!("acknowledging twice: {e}"));
    let (_, outbox) = load_sorted(store, &s).await;
    assert_eq!(
        outbox.iter().map(|c| c.event.as_u64()).collect::<Vec<_>>(),
        [9, 7]
    );
}

async fn sessions_are_separate(store: &dyn TaskStore) {
    let (a, b) = (session("conf.a"), session("conf.b"));
    store
        .save(&a, vec![record(1, "in a")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .save(&b, vec![record(1, "in b")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        load_sorted(store, &a).await.0,
        vec![record(1, "in a")],
        "same task id, other session"
    );
    let all = store.sessions().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        all.contains(&a) && all.contains(&b),
        "sessions() lists {all:?}"
    );
}

async fn concurrent_savers_all_land(store: Arc<dyn TaskStore>) {
    let s = session("conf.concurrent");
    let saves = (0..64u64).map(|i| {
        let store = store.clone();
        let s = s.clone();
        async move { store.save(&s, vec![record(i, "c")]).await }
    });
    for result in futures::future::join_all(saves).await {
        result.unwrap_or_else(|e| panic!("concurrent save: {e}"));
    }
    assert_eq!(
        load_sorted(store.as_ref(), &s).await.0.len(),
        64,
        "every concurrent save landed"
    );
}

/// Runs the whole [`PayloadStore`] suite on destinations below `root`.
pub async fn payload_store(store: &dyn PayloadStore, root: &Path) {
    let s = session("conf.payload");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let resume_at = |offset| transfer_core::ResumeData {
        durable_offset: offset,
        ..Default::default()
    };

    // Write, sync, commit: the destination holds exactly the bytes.
    let dest = Destination::Path(root.join("one/whole.bin"));
    let mut p = store
        .open(&s, TaskId::from_u64(1), &dest, &resume_at(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.offset(), 0);
    p.write(Bytes::copy_from_slice(&data[..4000]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.write(Bytes::copy_from_slice(&data[4000..]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (durable, _) = p.sync().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(durable, 10_000);
    p.commit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&root.join("one/whole.bin")), data, "committed payload");

    // A partial reopened at its durable offset drops what was written past it.
    let dest = Destination::Path(root.join("two.bin"));
    let mut p = store
        .open(&s, TaskId::from_u64(2), &dest, &resume_at(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.write(Bytes::copy_from_slice(&data[..6000]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.sync().await.unwrap_or_else(|e| panic!("{e}"));
    p.write(Bytes::from(vec![0xEE; 3000]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.sync().await.unwrap_or_else(|e| panic!("{e}"));
    drop(p);
    let mut p = store
        .open(&s, TaskId::from_u64(2), &dest, &resume_at(6000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.offset(), 6000, "reopened at the durable offset");
    p.write(Bytes::copy_from_slice(&data[6000..]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.commit(false).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read(&root.join("two.bin")),
        data,
        "no byte from past the durable offset survives"
    );

    // Asking for more than is stored gives what is stored, never invented bytes.
    let dest = Destination::Path(root.join("three.bin"));
    let mut p = store
        .open(&s, TaskId::from_u64(3), &dest, &resume_at(0))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.write(Bytes::copy_from_slice(&data[..100]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.sync().await.unwrap_or_else(|e| panic!("{e}"));
    drop(p);
    let p = store
        .open(&s, TaskId::from_u64(3), &dest, &resume_at(5000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        p.offset() <= 100,
        "offset {} beyond the stored bytes",
        p.offset()
    );

    // Discard leaves neither a partial nor a destination.
    p.discard().await.unwrap_or_else(|e| panic!("{e}"));
    store
        .discard(&s, TaskId::from_u64(3), &dest, None)
        .await
        .unwrap_or_else(|e| panic!("discard is idempotent: {e}"));
    assert!(!root.join("three.bin").exists());
    let p = store
        .open(&s, TaskId::from_u64(3), &dest, &resume_at(100))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.offset(), 0, "a discarded partial starts from zero");
}

/// Runs the [`PayloadStore`] suite of commits onto destinations that are
/// taken: a commit replaces nothing it did not write unless it may
/// overwrite; it does replace the same task's own earlier commit (a rerun
/// after a crash kept that commit from being recorded, resuming from what
/// was recorded before it, or from nothing); of commits racing for one free destination,
/// exactly one lands, whole. `dest(name)` makes a destination, `plant`
/// puts bytes there as another writer would, `read` gives what is there.
/// Payloads are a few KiB.
pub async fn payload_commits_never_replace<D, P, R>(
    store: &dyn PayloadStore,
    dest: D,
    plant: P,
    read: R,
) where
    D: Fn(&str) -> Destination,
    P: AsyncFn(&Destination, &[u8]),
    R: AsyncFn(&Destination) -> Option<Vec<u8>>,
{
    let s = session("conf.replace");
    let fresh = transfer_core::ResumeData::default();
    let commit = async |task: u64, d: &Destination, body: &[u8], overwrite: bool| {
        let mut p = store.open(&s, TaskId::from_u64(task), d, &fresh).await?;
        p.write(Bytes::copy_from_slice(body)).await?;
        p.commit(overwrite).await
    };

    // Someone else's payload at the destination stays, and the error says so.
    let taken = dest("taken.bin");
    plant(&taken, b"theirs").await;
    let refused = commit(21, &taken, b"ours", false).await.err();
    let refused = refused.unwrap_or_else(|| panic!("a commit replaced what it did not write"));
    assert_eq!(
        refused.kind(),
        transfer_core::StoreErrorKind::Exists,
        "{refused}"
    );
    assert!(
        refused.to_string().contains("exists; not replaced"),
        "the error says what happened: {refused}"
    );
    assert_eq!(read(&taken).await.as_deref(), Some(&b"theirs"[..]));

    // Asked to overwrite, it replaces.
    commit(22, &taken, b"mine now", true)
        .await
        .unwrap_or_else(|e| panic!("a commit that may overwrite: {e}"));
    assert_eq!(read(&taken).await.as_deref(), Some(&b"mine now"[..]));

    // A task's own earlier commit, which a crash kept from being recorded:
    // the rerun opens from its last recorded checkpoint and commits again.
    let again = dest("again.bin");
    let mut p = store
        .open(&s, TaskId::from_u64(23), &again, &fresh)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.write(Bytes::from_static(b"first run"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (durable, location) = p.sync().await.unwrap_or_else(|e| panic!("{e}"));
    p.commit(false).await.unwrap_or_else(|e| panic!("{e}"));
    let recorded = transfer_core::ResumeData {
        durable_offset: durable,
        total_length: Some(b"first run".len() as u64),
        partial: Some(location),
        ..Default::default()
    };
    let mut p = store
        .open(&s, TaskId::from_u64(23), &again, &recorded)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if p.offset() < durable {
        // The store starts the payload again: the rerun downloads it again.
        let at = p.offset() as usize;
        p.write(Bytes::copy_from_slice(&b"first run"[at..]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    p.commit(false)
        .await
        .unwrap_or_else(|e| panic!("the same task's earlier commit is its own: {e}"));
    assert_eq!(read(&again).await.as_deref(), Some(&b"first run"[..]));
    // The same when nothing of it was recorded (no checkpoint before the
    // commit): the rerun starts from nothing.
    commit(23, &again, b"second run", false)
        .await
        .unwrap_or_else(|e| panic!("an unrecorded earlier commit of the same task: {e}"));
    assert_eq!(read(&again).await.as_deref(), Some(&b"second run"[..]));

    // Commits racing for one free destination: one lands, whole; the
    // others are refused.
    let raced = dest("raced.bin");
    let bodies: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 4096]).collect();
    let results = futures::future::join_all(
        bodies
            .iter()
            .enumerate()
            .map(|(i, b)| commit(30 + i as u64, &raced, b, false)),
    )
    .await;
    let landed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(landed, 1, "racing commits: {results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.kind(), transfer_core::StoreErrorKind::Exists, "{r}");
    }
    let there = read(&raced).await.unwrap_or_default();
    assert!(
        bodies.contains(&there),
        "the destination holds one payload whole"
    );
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
