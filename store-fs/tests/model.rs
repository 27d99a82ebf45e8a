#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Model-based tests: random operation sequences run against the real stores
//! and against plain in-memory models, compared after every step.
//!
//! - [`FsTaskStore`]: random batches (saves, removes of present and absent
//!   ids, completions, acknowledgements of known and unknown events) across
//!   three sessions whose names share a prefix, concurrent commits to distinct
//!   sessions (one group commit), the default `save`/`remove`/`acknowledge`,
//!   `sessions()`, and dropping and reopening the database. After every step
//!   each session's `load` equals the model (records by id, the outbox in
//!   order) and, at reopen and `sessions()`, the listed sessions are exactly
//!   those with state.
//! - [`FsPayloadStore`]: random writes, syncs, reopens at the last synced
//!   offset or at any offset, commits and discards of one partial against a
//!   `Vec<u8>`. After every reopen (once the partial is first used) the
//!   partial file holds exactly the model cut at the offset asked (or all of
//!   it, when less is stored); every sync
//!   returns the written length; every commit leaves exactly the model's bytes
//!   at the destination and no partial behind.
//!
//! Where the trait leaves a detail open the model follows `FsTaskStore`, and
//! says so: within one batch all saves apply, then all removes, then all
//! completions, then all acknowledgements; a completion whose event is
//! already in the outbox replaces it; outbox entries with the same time are
//! ordered by event id.
//!
//! The payload test runs twice: once syncing (without recording the offset)
//! before a partial is dropped, and once dropping partials right after their
//! last write, as a failed or cancelled download does: no write may land
//! after the next `open` has cut the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use store_fs::{FsPayloadStore, FsTaskStore};
use testkit::conformance::{completion, record};
use transfer_core::{
    Batch, Completion, Destination, EventId, Partial, PartialLocation, PayloadStore, ResumeData,
    SessionId, TaskId, TaskRecord, TaskStore,
};

// ---------------------------------------------------------------------------
// Task store
// ---------------------------------------------------------------------------

/// Names that prefix one another: a range scan that leaks across sessions shows.
const SESSIONS: [&str; 3] = ["s", "s.a", "s-b"];
const LABELS: [&str; 3] = ["first", "second", "third"];

fn session(i: usize) -> SessionId {
    SessionId::new(SESSIONS[i]).unwrap()
}

/// A batch as generated: ids and events drawn from small sets (so saves,
/// removes, completions and acknowledgements collide), including 0 and
/// `u64::MAX`, the ends of a session's key range.
#[derive(Clone, Debug)]
struct BatchSpec {
    /// (task id, label index)
    save: Vec<(u64, usize)>,
    remove: Vec<u64>,
    /// (event id, task id, at)
    complete: Vec<(u64, u64, u64)>,
    acknowledge: Vec<u64>,
    /// Committed without waiting for durability (a clean reopen keeps it).
    deferrable: bool,
}

impl BatchSpec {
    fn batch(&self) -> Batch {
        Batch {
            save: self
                .save
                .iter()
                .map(|&(id, l)| record(id, LABELS[l]))
                .collect(),
            remove: self.remove.iter().map(|&id| TaskId::from_u64(id)).collect(),
            complete: self
                .complete
                .iter()
                .map(|&(event, task, at)| completion(event, task, at))
                .collect(),
            acknowledge: self
                .acknowledge
                .iter()
                .map(|&e| EventId::from_u64(e))
                .collect(),
            deferrable: self.deferrable,
        }
    }
}

#[derive(Clone, Debug)]
enum TaskOp {
    Commit(usize, BatchSpec),
    /// One batch for each `Some` session, committed concurrently.
    Concurrent(Vec<Option<BatchSpec>>),
    Save(usize, Vec<(u64, usize)>),
    Remove(usize, Vec<u64>),
    Acknowledge(usize, Vec<u64>),
    Reopen,
    Sessions,
}

/// Ids a batch saves and completes; removes and acknowledgements also draw
/// ids that are never saved or completed.
const IDS: [u64; 7] = [0, 1, 2, 3, 4, 5, u64::MAX];
const ABSENT: [u64; 2] = [6, 7];

fn id() -> impl Strategy<Value = u64> {
    prop::sample::select(IDS.to_vec())
}

fn any_id() -> impl Strategy<Value = u64> {
    prop::sample::select([IDS.as_slice(), ABSENT.as_slice()].concat())
}

fn saves() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((id(), 0..LABELS.len()), 0..5)
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (
        saves(),
        prop::collection::vec(any_id(), 0..4),
        // Few distinct times, so the outbox order has ties.
        prop::collection::vec((id(), id(), 0..4u64), 0..4),
        prop::collection::vec(any_id(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(save, remove, complete, acknowledge, deferrable)| BatchSpec {
                save,
                remove,
                complete,
                acknowledge,
                deferrable,
            },
        )
}

fn task_op() -> impl Strategy<Value = TaskOp> {
    let s = 0..SESSIONS.len();
    prop_oneof![
        6 => (s.clone(), batch_spec()).prop_map(|(s, b)| TaskOp::Commit(s, b)),
        2 => prop::collection::vec(prop::option::of(batch_spec()), SESSIONS.len())
            .prop_map(TaskOp::Concurrent),
        1 => (s.clone(), saves()).prop_map(|(s, r)| TaskOp::Save(s, r)),
        1 => (s.clone(), prop::collection::vec(any_id(), 0..4))
            .prop_map(|(s, ids)| TaskOp::Remove(s, ids)),
        1 => (s, prop::collection::vec(any_id(), 0..4))
            .prop_map(|(s, ids)| TaskOp::Acknowledge(s, ids)),
        1 => Just(TaskOp::Reopen),
        1 => Just(TaskOp::Sessions),
    ]
}

/// One session's state in the model.
#[derive(Default)]
struct SessionModel {
    records: BTreeMap<TaskId, TaskRecord>,
    outbox: BTreeMap<EventId, Completion>,
}

impl SessionModel {
    /// Applies a batch the way `FsTaskStore` does: saves, then removes, then
    /// completions, then acknowledgements (the trait leaves the order inside
    /// a batch open). Removing an absent id and acknowledging an unknown
    /// event change nothing; a completion replaces one with the same event.
    fn apply(&mut self, batch: &Batch) {
        for r in &batch.save {
            self.records.insert(r.id, r.clone());
        }
        for id in &batch.remove {
            self.records.remove(id);
        }
        for c in &batch.complete {
            self.outbox.insert(c.event, c.clone());
        }
        for e in &batch.acknowledge {
            self.outbox.remove(e);
        }
    }

    /// "Oldest first"; ties by event id, as `FsTaskStore` orders them.
    fn outbox(&self) -> Vec<Completion> {
        let mut v: Vec<Completion> = self.outbox.values().cloned().collect();
        v.sort_by_key(|c| (c.at, c.event));
        v
    }

    fn has_state(&self) -> bool {
        !self.records.is_empty() || !self.outbox.is_empty()
    }
}

fn store_err(what: &str, e: transfer_core::StoreError) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

/// Every session's `load` equals the model.
async fn check_loads(
    store: &FsTaskStore,
    model: &[SessionModel],
    when: &str,
) -> Result<(), TestCaseError> {
    for (i, m) in model.iter().enumerate() {
        let name = SESSIONS[i];
        let snap = store
            .load(&session(i))
            .await
            .map_err(|e| store_err("load", e))?;
        let mut records = snap.records;
        records.sort_by_key(|r| r.id);
        let ids: Vec<TaskId> = records.iter().map(|r| r.id).collect();
        let want_ids: Vec<TaskId> = m.records.keys().copied().collect();
        prop_assert_eq!(ids, want_ids, "record ids of {} after {}", name, when);
        let want: Vec<TaskRecord> = m.records.values().cloned().collect();
        prop_assert!(records == want, "records of {name} after {when}");
        let events: Vec<(EventId, u64)> = snap
            .outbox
            .iter()
            .map(|c| (c.event, c.task.as_u64()))
            .collect();
        let want_outbox = m.outbox();
        let want_events: Vec<(EventId, u64)> = want_outbox
            .iter()
            .map(|c| (c.event, c.task.as_u64()))
            .collect();
        prop_assert_eq!(
            events,
            want_events,
            "outbox (event, task) of {} after {}",
            name,
            when
        );
        prop_assert!(snap.outbox == want_outbox, "outbox of {name} after {when}");
    }
    Ok(())
}

/// `sessions()` lists exactly the sessions with records or completions, once each.
async fn check_sessions(
    store: &FsTaskStore,
    model: &[SessionModel],
    when: &str,
) -> Result<(), TestCaseError> {
    let listed = store
        .sessions()
        .await
        .map_err(|e| store_err("sessions", e))?;
    let mut got: Vec<String> = listed.iter().map(|s| s.as_str().to_owned()).collect();
    got.sort();
    let want: Vec<String> = model
        .iter()
        .enumerate()
        .filter(|(_, m)| m.has_state())
        .map(|(i, _)| SESSIONS[i].to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    prop_assert_eq!(got, want, "sessions() after {}", when);
    Ok(())
}

async fn run_task_ops(ops: Vec<TaskOp>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let open = |p: &Path| FsTaskStore::open(p).map_err(|e| store_err("open", e));
    let mut store = open(&path)?;
    let mut model: Vec<SessionModel> = SESSIONS.iter().map(|_| SessionModel::default()).collect();
    let commit_err = |e| store_err("commit", e);
    for (step, op) in ops.into_iter().enumerate() {
        let when = format!("step {step}");
        match op {
            TaskOp::Commit(s, spec) => {
                let batch = spec.batch();
                model[s].apply(&batch);
                store.commit(&session(s), batch).await.map_err(commit_err)?;
            }
            TaskOp::Concurrent(specs) => {
                let mut commits = Vec::new();
                for (s, spec) in specs.iter().enumerate() {
                    if let Some(spec) = spec {
                        let batch = spec.batch();
                        model[s].apply(&batch);
                        let store = store.clone();
                        commits.push(tokio::spawn(async move {
                            store.commit(&session(s), batch).await
                        }));
                    }
                }
                for c in futures::future::join_all(commits).await {
                    c.unwrap().map_err(commit_err)?;
                }
            }
            TaskOp::Save(s, saves) => {
                let batch = BatchSpec {
                    save: saves,
                    remove: vec![],
                    complete: vec![],
                    acknowledge: vec![],
                    deferrable: false,
                }
                .batch();
                model[s].apply(&batch);
                store
                    .save(&session(s), batch.save)
                    .await
                    .map_err(commit_err)?;
            }
            TaskOp::Remove(s, ids) => {
                let ids: Vec<TaskId> = ids.into_iter().map(TaskId::from_u64).collect();
                model[s].apply(&Batch {
                    remove: ids.clone(),
                    ..Batch::default()
                });
                store.remove(&session(s), ids).await.map_err(commit_err)?;
            }
            TaskOp::Acknowledge(s, events) => {
                let events: Vec<EventId> = events.into_iter().map(EventId::from_u64).collect();
                model[s].apply(&Batch {
                    acknowledge: events.clone(),
                    ..Batch::default()
                });
                store
                    .acknowledge(&session(s), events)
                    .await
                    .map_err(commit_err)?;
            }
            TaskOp::Reopen => {
                // Dropping the last handle stops the writer and closes the
                // database; opening it again must find everything committed.
                drop(store);
                store = open(&path)?;
                check_sessions(&store, &model, &when).await?;
            }
            TaskOp::Sessions => check_sessions(&store, &model, &when).await?,
        }
        check_loads(&store, &model, &when).await?;
    }
    drop(store);
    let store = open(&path)?;
    check_sessions(&store, &model, "the final reopen").await?;
    check_loads(&store, &model, "the final reopen").await
}

/// 64 cases (about a second per test), or `PROPTEST_CASES` for a longer run.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn task_store_matches_model(ops in prop::collection::vec(task_op(), 1..40)) {
        runtime().block_on(run_task_ops(ops))?;
    }
}

// ---------------------------------------------------------------------------
// Payload store
// ---------------------------------------------------------------------------

const TASK: TaskId = TaskId::from_u64(0x7a5c);
const DEST: &str = "sub/out.bin";

#[derive(Clone, Debug)]
enum PayloadOp {
    /// Appends `len` bytes derived from `seed` (every write distinguishable).
    Write {
        seed: u8,
        len: usize,
    },
    Sync,
    /// `Partial::sync_behind`: the offset it reports may trail.
    SyncBehind,
    /// `Partial::durable_update`, after a moment for a flush to finish.
    DurableUpdate,
    /// Drops the partial and opens it again at the last synced offset.
    ReopenSynced,
    /// Drops the partial and opens it again at `permille`/1000 of the bytes
    /// written (above 1000: more than is stored).
    ReopenAt {
        permille: u64,
    },
    Commit,
    /// `Partial::discard`.
    Discard,
    /// Drops the partial, then `PayloadStore::discard` (twice: idempotent).
    StoreDiscard,
}

fn payload_op() -> impl Strategy<Value = PayloadOp> {
    prop_oneof![
        8 => (any::<u8>(), prop_oneof![Just(0usize), 1..20_000usize])
            .prop_map(|(seed, len)| PayloadOp::Write { seed, len }),
        // Past the store's 1 MiB write buffer, alone and on top of a small write.
        1 => (any::<u8>(), (1usize << 20) - 10_000..(3 << 19))
            .prop_map(|(seed, len)| PayloadOp::Write { seed, len }),
        3 => Just(PayloadOp::Sync),
        2 => Just(PayloadOp::SyncBehind),
        1 => Just(PayloadOp::DurableUpdate),
        3 => Just(PayloadOp::ReopenSynced),
        2 => (0..1_300u64).prop_map(|permille| PayloadOp::ReopenAt { permille }),
        1 => Just(PayloadOp::Commit),
        1 => Just(PayloadOp::Discard),
        1 => Just(PayloadOp::StoreDiscard),
    ]
}

fn bytes_of(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// The partial and destination as the caller sees them.
#[derive(Default)]
struct PayloadModel {
    /// Every byte written to the partial (synced or not).
    written: Vec<u8>,
    /// What the last sync returned: the offset a caller records.
    synced: u64,
    /// The destination's contents after the last commit.
    destination: Option<Vec<u8>>,
}

impl PayloadModel {
    /// Opening at `offset` cuts the partial there, or keeps all of it when
    /// less is stored; returns the offset the partial must report.
    fn open_at(&mut self, offset: u64) -> u64 {
        let at = offset.min(self.written.len() as u64);
        self.written.truncate(at as usize);
        self.synced = self.synced.min(at);
        at
    }

    fn finish(&mut self) {
        self.written.clear();
        self.synced = 0;
    }
}

/// Partial files under `root` (hidden, ending in `.partial`).
fn partials(root: &Path) -> Vec<PathBuf> {
    let dir = root.join("sub");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    found.sort();
    found
}

/// The partial file holds exactly `want`.
fn check_partial_file(root: &Path, want: &[u8], when: &str) -> Result<(), TestCaseError> {
    let found = partials(root);
    prop_assert_eq!(found.len(), 1, "one partial file at {}", when);
    let got = std::fs::read(&found[0]).unwrap();
    prop_assert_eq!(got.len(), want.len(), "partial length at {}", when);
    prop_assert!(got == want, "partial contents at {when}");
    Ok(())
}

fn check_destination(root: &Path, model: &PayloadModel, when: &str) -> Result<(), TestCaseError> {
    let got = std::fs::read(root.join(DEST)).ok();
    prop_assert_eq!(
        got.as_ref().map(Vec::len),
        model.destination.as_ref().map(Vec::len),
        "destination length at {}",
        when
    );
    prop_assert!(got == model.destination, "destination contents at {when}");
    Ok(())
}

async fn run_payload_ops(ops: Vec<PayloadOp>, sync_before_drop: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = FsPayloadStore::new(dir.path()).unwrap();
    let root = store.root().to_owned();
    let s = SessionId::new("payload").unwrap();
    let dest = Destination::Path(DEST.into());
    let mut model = PayloadModel::default();
    let mut partial: Option<Box<dyn Partial>> = None;

    // Opens at `offset` and checks the cut against the model.
    let open = async |model: &mut PayloadModel, offset: u64, when: &str| {
        let resume = ResumeData {
            durable_offset: offset,
            ..ResumeData::default()
        };
        let mut p = store
            .open(&s, TASK, &dest, &resume)
            .await
            .map_err(|e| store_err("open", e))?;
        let want = model.open_at(offset);
        prop_assert_eq!(p.offset(), want, "offset opening at {} at {}", offset, when);
        // The file is opened, and cut, when first used (an empty read here).
        p.read_at(0, &mut [])
            .await
            .map_err(|e| store_err("read", e))?;
        check_partial_file(&root, &model.written, when)?;
        Ok::<_, TestCaseError>(p)
    };
    // Drops a partial; first makes its writes land, without recording the
    // offset, unless the test is about dropping unsynced writes: those may
    // be lost (the store buffers them), but what stays on disk is a prefix of
    // what was written, holding at least what was synced.
    let close = async |model: &mut PayloadModel, p: Option<Box<dyn Partial>>| {
        let Some(mut p) = p else {
            return Ok::<_, TestCaseError>(());
        };
        if sync_before_drop {
            p.sync().await.map_err(|e| store_err("sync", e))?;
            return Ok(());
        }
        drop(p);
        let kept = partials(&root)
            .pop()
            .map(|f| std::fs::read(f).unwrap())
            .unwrap_or_default();
        prop_assert!(
            kept.len() as u64 >= model.synced && model.written.starts_with(&kept),
            "a dropped partial keeps a prefix of what was written ({} of {} bytes, {} synced)",
            kept.len(),
            model.written.len(),
            model.synced
        );
        model.written = kept;
        Ok(())
    };

    for (step, op) in ops.into_iter().enumerate() {
        let when = &format!("step {step}");
        // Any operation on the partial opens it (at the recorded offset) first.
        let needs_partial = !matches!(
            op,
            PayloadOp::ReopenSynced | PayloadOp::ReopenAt { .. } | PayloadOp::StoreDiscard
        );
        if needs_partial && partial.is_none() {
            let at = model.synced;
            partial = Some(open(&mut model, at, when).await?);
        }
        match op {
            PayloadOp::Write { seed, len } => {
                let data = bytes_of(seed, len);
                let p = partial.as_mut().unwrap();
                p.write(Bytes::from(data.clone()))
                    .await
                    .map_err(|e| store_err("write", e))?;
                model.written.extend_from_slice(&data);
                prop_assert_eq!(p.offset(), model.written.len() as u64, "offset after write");
            }
            PayloadOp::Sync => {
                let p = partial.as_mut().unwrap();
                let (durable, location) = p.sync().await.map_err(|e| store_err("sync", e))?;
                model.synced = model.written.len() as u64;
                prop_assert_eq!(durable, model.synced, "durable offset at {}", when);
                prop_assert_eq!(p.offset(), model.synced);
                prop_assert_eq!(
                    Some(location),
                    partials(&root).pop().map(PartialLocation::File),
                    "sync names the partial file"
                );
                check_partial_file(&root, &model.written, when)?;
            }
            PayloadOp::SyncBehind => {
                let p = partial.as_mut().unwrap();
                let (durable, location) =
                    p.sync_behind().await.map_err(|e| store_err("sync", e))?;
                prop_assert!(
                    durable >= model.synced && durable <= model.written.len() as u64,
                    "sync_behind's offset {} outside [{}, {}] at {}",
                    durable,
                    model.synced,
                    model.written.len(),
                    when
                );
                model.synced = durable;
                prop_assert_eq!(
                    Some(location),
                    partials(&root).pop().map(PartialLocation::File),
                    "sync_behind names the partial file"
                );
            }
            PayloadOp::DurableUpdate => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                let p = partial.as_mut().unwrap();
                if let Some((durable, _)) = p.durable_update() {
                    prop_assert!(
                        durable > model.synced && durable <= model.written.len() as u64,
                        "durable_update's offset {} outside ({}, {}] at {}",
                        durable,
                        model.synced,
                        model.written.len(),
                        when
                    );
                    model.synced = durable;
                }
            }
            PayloadOp::ReopenSynced => {
                close(&mut model, partial.take()).await?;
                let at = model.synced;
                partial = Some(open(&mut model, at, when).await?);
            }
            PayloadOp::ReopenAt { permille } => {
                close(&mut model, partial.take()).await?;
                let offset = model.written.len() as u64 * permille / 1000;
                partial = Some(open(&mut model, offset, when).await?);
            }
            PayloadOp::Commit => {
                let p = partial.take().unwrap();
                p.commit(false).await.map_err(|e| store_err("commit", e))?;
                model.destination = Some(std::mem::take(&mut model.written));
                model.finish();
                prop_assert!(partials(&root).is_empty(), "a partial after commit");
            }
            PayloadOp::Discard => {
                let p = partial.take().unwrap();
                p.discard().await.map_err(|e| store_err("discard", e))?;
                model.finish();
                prop_assert!(partials(&root).is_empty(), "a partial after discard");
            }
            PayloadOp::StoreDiscard => {
                close(&mut model, partial.take()).await?;
                for _ in 0..2 {
                    store
                        .discard(&s, TASK, &dest, None)
                        .await
                        .map_err(|e| store_err("store discard", e))?;
                }
                model.finish();
                prop_assert!(partials(&root).is_empty(), "a partial after store discard");
            }
        }
        check_destination(&root, &model, when)?;
    }
    // Whatever is left commits to exactly the model's bytes.
    let p = match partial.take() {
        Some(p) => p,
        None => {
            let at = model.synced;
            open(&mut model, at, "the final open").await?
        }
    };
    p.commit(false)
        .await
        .map_err(|e| store_err("final commit", e))?;
    model.destination = Some(std::mem::take(&mut model.written));
    check_destination(&root, &model, "the final commit")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn payload_store_matches_model(ops in prop::collection::vec(payload_op(), 1..40)) {
        runtime().block_on(run_payload_ops(ops, true))?;
    }

    /// The same, but partials are dropped right after their last write, as a
    /// caller does when a download fails or is cancelled mid-stream: unsynced
    /// bytes may be lost, never reordered.
    #[test]
    fn payload_store_matches_model_dropping_unsynced_partials(
        ops in prop::collection::vec(payload_op(), 1..40)
    ) {
        runtime().block_on(run_payload_ops(ops, false))?;
    }
}
