//! # store-s3
//!
//! Ferry's [`TaskStore`] and [`PayloadStore`](transfer_core::PayloadStore)
//! over any [`ObjectStore`]: S3 and S3-compatible servers (`object_store`'s
//! `AmazonS3`), and also its in-memory and local-filesystem stores.
//! [`S3PayloadStore`] writes downloads into multipart uploads a part at a
//! time (see its module); the rest of this page is the task store.
//!
//! A session is a **log of batches**. Each committed [`Batch`] is one
//! object, `{prefix}/sessions/{session}/log/{seq:020}`, written with
//! [`PutMode::Create`]:
//! - a batch is atomic, because one object is written whole or not at all;
//! - a lost update is impossible, because two writers cannot both create
//!   the same sequence number. The one that loses reads what the other
//!   wrote and puts its batch after it.
//!
//! Every so often the log is folded into a **checkpoint**,
//! `{prefix}/sessions/{session}/checkpoint`. It is written with
//! [`PutMode::Create`] the first time and with [`PutMode::Update`] on the
//! version it replaces afterwards, so two writers cannot overwrite each
//! other's checkpoint. The entries it covers are then overwritten with a
//! few bytes that say so, never deleted: a writer that has not seen the
//! checkpoint yet must find their places taken, not write a batch where no
//! reader looks any more. Readers list the log from where they are
//! (`list_with_offset`), so old places cost nothing to read.
//!
//! Loading reads the checkpoint, then the entries after it. Every process
//! sharing a session therefore sees every batch, in one order.
//!
//! Deferrable batches are written durably like the others: an object store
//! has no cheaper path.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use object_store::memory::InMemory;
//! use store_s3::S3TaskStore;
//! use transfer_core::{SessionId, TaskStore};
//!
//! let store = S3TaskStore::new(Arc::new(InMemory::new()), "ferry");
//! let session = SessionId::new("com.example.sync")?;
//! assert!(store.load(&session).await?.records.is_empty());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod lease;
mod payload;

pub use lease::{Lease, Leases, S3Claims};
pub use payload::{MIN_PART, S3PayloadStore};

/// A client builder for `bucket`, from the usual `AWS_*` variables. With an
/// `endpoint` (an S3-compatible server), requests are path-style and a
/// plain `http://` endpoint is allowed. The region is `us-east-1` unless
/// the environment names one.
pub fn s3_builder(bucket: &str, endpoint: Option<&str>) -> object_store::aws::AmazonS3Builder {
    let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(e) = endpoint {
        b = b
            .with_allow_http(e.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_endpoint(e);
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        b = b.with_region("us-east-1");
    }
    b
}

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use transfer_core::{
    Batch, Completion, EventId, SessionId, Snapshot, StoreError, StoreErrorKind, TaskId,
    TaskRecord, TaskStore,
};

/// Log entries between checkpoints (default).
const COMPACT_EVERY: u64 = 256;

/// What a log entry folded into a checkpoint is overwritten with. It is
/// not deleted: a writer that has not seen the checkpoint yet must find
/// the place taken (its conditional create fails) rather than write a
/// batch where no reader will look.
const FOLDED: &[u8] = b"folded";

/// One committed batch, as stored.
#[derive(Serialize, Deserialize)]
struct Entry {
    save: Vec<TaskRecord>,
    remove: Vec<TaskId>,
    complete: Vec<Completion>,
    acknowledge: Vec<EventId>,
}

/// The state as of a point in the log, as stored.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    /// The first log entry the checkpoint does not include.
    through: u64,
    records: Vec<TaskRecord>,
    outbox: Vec<Completion>,
}

/// What this process knows of one session.
#[derive(Default)]
struct Replica {
    records: BTreeMap<TaskId, TaskRecord>,
    outbox: Vec<Completion>,
    /// The next log entry to read (and the one to create next).
    next: u64,
    /// The checkpoint this replica started from: its `through` and version.
    checkpoint: Option<(u64, UpdateVersion)>,
    /// Records other writers saved since the last `follow` (kept once a
    /// `follow` has asked).
    foreign: Option<Vec<TaskRecord>>,
}

impl Replica {
    /// Applies an entry another writer committed.
    fn apply_foreign(&mut self, e: Entry) {
        let kept = self.apply(e);
        if let Some(foreign) = &mut self.foreign {
            foreign.extend(kept);
        }
    }

    /// Applies an entry, in log order; returns the records it kept. A
    /// record saved under an older claim epoch than the one stored is not
    /// kept, nor is its task's completion in the same entry: its writer's
    /// claim was taken over (fencing; see [`TaskRecord::epoch`]). A
    /// request changes only the stored record's request
    /// ([`transfer_core::merge_saved`]).
    fn apply(&mut self, e: Entry) -> Vec<TaskRecord> {
        let mut fenced = Vec::new();
        let mut kept = Vec::with_capacity(e.save.len());
        for r in e.save {
            let (id, epoch) = (r.id, r.epoch);
            let Some(r) = transfer_core::merge_saved(self.records.get(&id), r) else {
                tracing::warn!(task = %id, epoch, "a write from a claim taken over, or a request to a task that ended, is ignored");
                fenced.push(id);
                continue;
            };
            self.records.insert(id, r.clone());
            kept.push(r);
        }
        for id in e.remove {
            self.records.remove(&id);
        }
        for c in e.complete {
            if fenced.contains(&c.task) {
                continue;
            }
            self.outbox.retain(|o| o.event != c.event);
            self.outbox.push(c);
        }
        self.outbox.sort_by_key(|c| (c.at, c.event));
        self.outbox.retain(|c| !e.acknowledge.contains(&c.event));
        kept
    }
}

/// A [`TaskStore`] over an [`ObjectStore`]; see the crate documentation.
pub struct S3TaskStore {
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    replicas: tokio::sync::Mutex<HashMap<SessionId, Replica>>,
    compact_every: u64,
    /// Objects written (log entries, checkpoints, folded markers): what the
    /// store costs in billed requests.
    writes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for S3TaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TaskStore")
            .field("objects", &self.objects.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

pub(crate) fn io(doing: &str, e: object_store::Error) -> StoreError {
    let kind = match &e {
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StoreErrorKind::Conflict
        }
        object_store::Error::NotFound { .. } => StoreErrorKind::NotFound,
        // The client's own errors after its retries: server errors and
        // connections that failed. Others (permissions, bad keys) stay put.
        object_store::Error::Generic { .. } => StoreErrorKind::Transient,
        _ => StoreErrorKind::Io,
    };
    StoreError::new(kind, format!("{doing}: {e}")).with_source(e)
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::new(StoreErrorKind::Corrupt, format!("{what}: {e}")).with_source(e)
}

impl S3TaskStore {
    /// Sessions under `prefix` in `objects`.
    pub fn new(objects: Arc<dyn ObjectStore>, prefix: &str) -> S3TaskStore {
        S3TaskStore {
            objects,
            prefix: Path::from(prefix),
            replicas: tokio::sync::Mutex::new(HashMap::new()),
            compact_every: COMPACT_EVERY,
            writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Folds the log into a checkpoint every `entries` batches (default 256;
    /// at least 1).
    pub fn compact_every(mut self, entries: u64) -> S3TaskStore {
        self.compact_every = entries.max(1);
        self
    }

    /// Objects this store has written so far (log entries, checkpoints and
    /// folded markers; a conditional create that lost a race counts too).
    pub fn writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn wrote(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn sessions_dir(&self) -> Path {
        self.prefix.clone().join("sessions")
    }

    fn session_dir(&self, session: &SessionId) -> Path {
        self.sessions_dir().join(session.as_str())
    }

    fn log_dir(&self, session: &SessionId) -> Path {
        self.session_dir(session).join("log")
    }

    fn entry_path(&self, session: &SessionId, seq: u64) -> Path {
        self.log_dir(session).join(format!("{seq:020}"))
    }

    fn checkpoint_path(&self, session: &SessionId) -> Path {
        self.session_dir(session).join("checkpoint")
    }

    /// Starts a replica from the session's checkpoint, if it has one.
    async fn replica_at_checkpoint(&self, session: &SessionId) -> Result<Replica, StoreError> {
        let got = match self.objects.get(&self.checkpoint_path(session)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(Replica::default()),
            Err(e) => return Err(io("reading the checkpoint", e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| io("reading the checkpoint", e))?;
        let c: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|e| corrupt("the checkpoint", e))?;
        Ok(Replica {
            records: c.records.into_iter().map(|r| (r.id, r)).collect(),
            outbox: c.outbox,
            next: c.through,
            checkpoint: Some((c.through, version)),
            foreign: None,
        })
    }

    /// Reads the log entries the replica has not seen, in order. When a
    /// checkpoint has since swallowed the entries it needs, it starts again
    /// from that checkpoint.
    async fn catch_up(&self, session: &SessionId, replica: &mut Replica) -> Result<(), StoreError> {
        loop {
            let dir = self.log_dir(session);
            let listing = match replica.next.checked_sub(1) {
                Some(last) => self
                    .objects
                    .list_with_offset(Some(&dir), &self.entry_path(session, last)),
                None => self.objects.list(Some(&dir)),
            };
            let mut seqs: Vec<u64> = listing
                .map_ok(|meta| meta.location)
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| io("listing the log", e))?
                .iter()
                .filter_map(|p| p.filename().and_then(|f| f.parse::<u64>().ok()))
                .filter(|seq| *seq >= replica.next)
                .collect();
            seqs.sort_unstable();
            let mut folded = seqs.first().is_some_and(|first| *first > replica.next);
            for seq in seqs {
                if folded || seq != replica.next {
                    break; // a gap: written after our listing began; next time
                }
                let path = self.entry_path(session, seq);
                let bytes = match self.objects.get(&path).await {
                    Ok(got) => got.bytes().await.map_err(|e| io("reading the log", e))?,
                    Err(e) => return Err(io("reading the log", e)),
                };
                if &bytes[..] == FOLDED {
                    folded = true;
                    break;
                }
                let entry: Entry =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt("a log entry", e))?;
                replica.apply_foreign(entry);
                replica.next += 1;
            }
            if !folded {
                return Ok(());
            }
            // What we have not read was folded into a newer checkpoint.
            let mut fresh = self.replica_at_checkpoint(session).await?;
            if let Some(mut foreign) = replica.foreign.take() {
                // What others saved in between is in it, not as entries:
                // each record that changed counts as theirs.
                foreign.extend(
                    fresh
                        .records
                        .values()
                        .filter(|r| replica.records.get(&r.id) != Some(*r))
                        .cloned(),
                );
                fresh.foreign = Some(foreign);
            }
            if fresh.next <= replica.next {
                return Err(StoreError::new(
                    StoreErrorKind::Corrupt,
                    format!(
                        "session {session}: log entry {} is folded but no checkpoint covers it",
                        replica.next
                    ),
                ));
            }
            *replica = fresh;
        }
    }

    /// This process's replica of `session`, started from its checkpoint the
    /// first time.
    async fn replica<'a>(
        &self,
        replicas: &'a mut HashMap<SessionId, Replica>,
        session: &SessionId,
    ) -> Result<&'a mut Replica, StoreError> {
        if !replicas.contains_key(session) {
            let fresh = self.replica_at_checkpoint(session).await?;
            replicas.insert(session.clone(), fresh);
        }
        replicas
            .get_mut(session)
            .ok_or_else(|| StoreError::new(StoreErrorKind::Io, "replica vanished"))
    }

    /// Writes a checkpoint of `replica` and folds the entries it covers
    /// (best effort: another writer may have done it first).
    async fn compact(&self, session: &SessionId, replica: &mut Replica) {
        let through = replica.next;
        let c = Checkpoint {
            through,
            records: replica.records.values().cloned().collect(),
            outbox: replica.outbox.clone(),
        };
        let Ok(bytes) = serde_json::to_vec(&c) else {
            return;
        };
        let mode = match &replica.checkpoint {
            Some((_, v)) => PutMode::Update(v.clone()),
            None => PutMode::Create,
        };
        let old = replica.checkpoint.as_ref().map_or(0, |(t, _)| *t);
        self.wrote();
        match self
            .objects
            .put_opts(
                &self.checkpoint_path(session),
                PutPayload::from(bytes),
                PutOptions::from(mode),
            )
            .await
        {
            Ok(put) => {
                replica.checkpoint = Some((
                    through,
                    UpdateVersion {
                        e_tag: put.e_tag,
                        version: put.version,
                    },
                ));
                for seq in old..through {
                    let path = self.entry_path(session, seq);
                    let _ = self
                        .objects
                        .put(&path, PutPayload::from_static(FOLDED))
                        .await;
                }
            }
            Err(e) => {
                // Another writer checkpointed first; ours is not needed.
                tracing::debug!(%session, error = %e, "checkpoint not written");
                if let Ok(fresh) = self.replica_at_checkpoint(session).await {
                    replica.checkpoint = fresh.checkpoint;
                }
            }
        }
    }
}

#[async_trait]
impl TaskStore for S3TaskStore {
    async fn load(&self, session: &SessionId) -> Result<Snapshot, StoreError> {
        let mut replicas = self.replicas.lock().await;
        let replica = self.replica(&mut replicas, session).await?;
        self.catch_up(session, replica).await?;
        Ok(Snapshot {
            records: replica.records.values().cloned().collect(),
            outbox: replica.outbox.clone(),
        })
    }

    async fn commit(&self, session: &SessionId, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut replicas = self.replicas.lock().await;
        let replica = self.replica(&mut replicas, session).await?;
        // No listing first: the create below fails if another writer took
        // this place, and only then is the log read.
        let entry = Entry {
            save: batch.save,
            remove: batch.remove,
            complete: batch.complete,
            acknowledge: batch.acknowledge,
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| corrupt("encoding a batch", e))?;
        loop {
            let path = self.entry_path(session, replica.next);
            self.wrote();
            let put = self
                .objects
                .put_opts(
                    &path,
                    PutPayload::from(bytes.clone()),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => break,
                // Another writer took this place in the log: read what it
                // wrote, and go after it.
                Err(object_store::Error::AlreadyExists { .. }) => {
                    self.catch_up(session, replica).await?;
                }
                Err(e) => return Err(io("writing a batch", e)),
            }
        }
        // What this process wrote under a claim taken over meanwhile is
        // ignored here as by every reader.
        let _ = replica.apply(entry);
        replica.next += 1;
        let since = replica.next - replica.checkpoint.as_ref().map_or(0, |(t, _)| *t);
        if since >= self.compact_every {
            self.compact(session, replica).await;
        }
        Ok(())
    }

    async fn follow(&self, session: &SessionId) -> Result<(Snapshot, Vec<TaskRecord>), StoreError> {
        let mut replicas = self.replicas.lock().await;
        let replica = self.replica(&mut replicas, session).await?;
        if replica.foreign.is_none() {
            replica.foreign = Some(Vec::new());
        }
        self.catch_up(session, replica).await?;
        let foreign = replica.foreign.replace(Vec::new()).unwrap_or_default();
        Ok((
            Snapshot {
                records: replica.records.values().cloned().collect(),
                outbox: replica.outbox.clone(),
            },
            foreign,
        ))
    }

    async fn load_task(
        &self,
        session: &SessionId,
        task: TaskId,
    ) -> Result<(Option<TaskRecord>, Option<Completion>), StoreError> {
        let mut replicas = self.replicas.lock().await;
        let replica = self.replica(&mut replicas, session).await?;
        self.catch_up(session, replica).await?;
        Ok((
            replica.records.get(&task).cloned(),
            replica.outbox.iter().find(|c| c.task == task).cloned(),
        ))
    }

    async fn sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        let listed = self
            .objects
            .list_with_delimiter(Some(&self.sessions_dir()))
            .await
            .map_err(|e| io("listing sessions", e))?;
        let mut out: Vec<SessionId> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .filter_map(|name| SessionId::new(name).ok())
            .collect();
        out.sort();
        Ok(out)
    }
}
