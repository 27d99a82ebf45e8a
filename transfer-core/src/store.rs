//! Persistence: the [`TaskStore`] for records and the completion outbox, and
//! the [`PayloadStore`] for partial payloads.
//!
//! Backends (store-fs on redb and files, store-s3 on object_store) share these
//! semantics and prove them with one conformance suite in testkit.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{ErrorKind, TransferError};
use crate::id::{EventId, SessionId, TaskId};
use crate::record::{Completion, TaskRecord};
use crate::resume::{PartialLocation, ResumeData};
use crate::spec::Destination;

/// What kind of store failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// An I/O error.
    Io,
    /// Out of space or over a quota.
    Full,
    /// Stored data is damaged or not this store's format.
    Corrupt,
    /// A conditional write lost a race (another writer changed the data).
    Conflict,
    /// A path would leave the directory the store may write in.
    OutsideRoot,
    /// Something expected is missing (e.g. a partial whose file vanished).
    NotFound,
    /// The store is locked by another process or closed.
    Unavailable,
    /// The store cannot hold this kind of destination (e.g. an object key in a file store).
    Unsupported,
    /// A remote store did not answer, or answered with a server error, after
    /// its own retries: the same operation may work later.
    Transient,
    /// Something is already at a destination that may not be replaced (a
    /// commit without overwrite); it is left as it was.
    Exists,
    /// The process or the system ran out of file descriptors (`EMFILE`,
    /// `ENFILE`): the same operation works once others are closed.
    Descriptors,
}

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) has no
/// file descriptor left: a shortage that passes, not a fault of the file.
pub fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
    )
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A new error.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// An I/O error, classified: out-of-space becomes [`StoreErrorKind::Full`].
    pub fn io(message: impl Into<String>, e: std::io::Error) -> Self {
        if is_out_of_descriptors(&e) {
            return StoreError::new(StoreErrorKind::Descriptors, message).with_source(e);
        }
        let kind = match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StoreErrorKind::Full
            }
            std::io::ErrorKind::NotFound => StoreErrorKind::NotFound,
            _ => StoreErrorKind::Io,
        };
        StoreError::new(kind, message).with_source(e)
    }

    /// What kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether the store is full.
    pub fn is_full(&self) -> bool {
        self.kind == StoreErrorKind::Full
    }

    /// Whether the process or the system ran out of file descriptors.
    pub fn is_out_of_descriptors(&self) -> bool {
        self.kind == StoreErrorKind::Descriptors
    }

    /// Whether a conditional write lost a race.
    pub fn is_conflict(&self) -> bool {
        self.kind == StoreErrorKind::Conflict
    }

    /// Whether a commit found its destination taken (see [`StoreErrorKind::Exists`]).
    pub fn is_exists(&self) -> bool {
        self.kind == StoreErrorKind::Exists
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl From<StoreError> for TransferError {
    fn from(e: StoreError) -> TransferError {
        let kind = match e.kind() {
            StoreErrorKind::Full => ErrorKind::StorageFull,
            StoreErrorKind::Transient => ErrorKind::StorageUnavailable,
            StoreErrorKind::Exists => ErrorKind::DestinationExists,
            StoreErrorKind::Descriptors => ErrorKind::TooManyOpenFiles,
            _ => ErrorKind::Storage,
        };
        TransferError::new(kind, e.to_string())
    }
}

/// A session's persisted state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every task record, in no particular order.
    pub records: Vec<TaskRecord>,
    /// Completions recorded but not yet acknowledged, oldest first.
    pub outbox: Vec<Completion>,
}

/// Which kind of stored entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A task record.
    Record,
    /// A completion in the outbox.
    Completion,
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::Record => "task record",
            EntryKind::Completion => "completion",
        })
    }
}

/// A stored entry that does not decode (written by a newer version, or
/// damaged), set aside by loads instead of failing them: the rest of the
/// session loads without it, and it stays stored as it is until a repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// A task record or a completion.
    pub kind: EntryKind,
    /// The task or event id it is stored under.
    pub id: u64,
    /// Why it does not decode.
    pub reason: String,
}

impl fmt::Display for Quarantined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:016x}: {}", self.kind, self.id, self.reason)
    }
}

/// Changes committed together, atomically (and durably, unless
/// [`deferrable`](Self::deferrable)). Every store applies
/// them in this order: saves, then removes, then completions (one with an
/// event already in the outbox replaces it), then acknowledgements; removing
/// an absent record or acknowledging an unknown event does nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Records to insert or replace.
    pub save: Vec<TaskRecord>,
    /// Records to delete.
    pub remove: Vec<TaskId>,
    /// Completions to append to the outbox.
    pub complete: Vec<Completion>,
    /// Completions acknowledged by the delegate (removed from the outbox).
    pub acknowledge: Vec<EventId>,
    /// The caller does not need this batch durable when `commit` returns: the
    /// store may answer once the batch is applied (later loads in this
    /// process see it) and make it durable with the next batch that is not
    /// deferrable. A crash before then loses the batch whole, as if it had
    /// never been committed; never a part of it, and never a later batch
    /// without it. Stores without a cheaper path treat it as durable.
    pub deferrable: bool,
}

impl Batch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.save.is_empty()
            && self.remove.is_empty()
            && self.complete.is_empty()
            && self.acknowledge.is_empty()
    }

    /// Adds everything in `other` to each list. The lists are applied in
    /// the order above, so a save in `other` does not undo a remove here.
    pub fn extend(&mut self, other: Batch) {
        self.save.extend(other.save);
        self.remove.extend(other.remove);
        self.complete.extend(other.complete);
        self.acknowledge.extend(other.acknowledge);
        self.deferrable &= other.deferrable;
    }
}

/// Stores task records and the completion outbox of sessions.
///
/// `commit` is atomic (all of a batch or none) and durable when it returns.
/// Implementations group-commit: concurrent `commit` calls share one durable
/// write, and each returns only once its own changes are durable.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Loads a session's records and unacknowledged completions (empty for a new session).
    async fn load(&self, session: &SessionId) -> Result<Snapshot, StoreError>;

    /// Commits a batch atomically and durably.
    async fn commit(&self, session: &SessionId, batch: Batch) -> Result<(), StoreError>;

    /// Lists the sessions that have state.
    async fn sessions(&self) -> Result<Vec<SessionId>, StoreError>;

    /// For a session that other processes write too: what [`load`](Self::load)
    /// gives, and every record that another writer saved since this
    /// store's previous `follow` (since the first `follow`, for the first),
    /// in the order they were committed, even those a later save replaced.
    /// A process learns from them what others did to a task it runs (a
    /// user's cancel) although its own later save may have replaced it.
    /// Stores that only this process writes return no records from others.
    async fn follow(&self, session: &SessionId) -> Result<(Snapshot, Vec<TaskRecord>), StoreError> {
        Ok((self.load(session).await?, Vec::new()))
    }

    /// One task's record as the store has it now, and its unacknowledged
    /// completion: what [`load`](Self::load) says of it, without copying
    /// the rest of the session where the store can avoid it.
    async fn load_task(
        &self,
        session: &SessionId,
        task: TaskId,
    ) -> Result<(Option<TaskRecord>, Option<Completion>), StoreError> {
        let snap = self.load(session).await?;
        Ok((
            snap.records.into_iter().find(|r| r.id == task),
            snap.outbox.into_iter().find(|c| c.task == task),
        ))
    }

    /// The entries of a session that [`load`](Self::load) sets aside
    /// because they do not decode (see [`Quarantined`]). Stores that never
    /// set any aside return none.
    async fn quarantined(&self, session: &SessionId) -> Result<Vec<Quarantined>, StoreError> {
        let _ = session;
        Ok(Vec::new())
    }

    /// Saves records (a batch of saves).
    async fn save(&self, session: &SessionId, records: Vec<TaskRecord>) -> Result<(), StoreError> {
        self.commit(
            session,
            Batch {
                save: records,
                ..Batch::default()
            },
        )
        .await
    }

    /// Removes records.
    async fn remove(&self, session: &SessionId, ids: Vec<TaskId>) -> Result<(), StoreError> {
        self.commit(
            session,
            Batch {
                remove: ids,
                ..Batch::default()
            },
        )
        .await
    }

    /// Acknowledges delivered completions, deferrably: an acknowledgement
    /// lost in a crash delivers its completion again (completions are
    /// delivered at least once).
    async fn acknowledge(
        &self,
        session: &SessionId,
        events: Vec<EventId>,
    ) -> Result<(), StoreError> {
        self.commit(
            session,
            Batch {
                acknowledge: events,
                deferrable: true,
                ..Batch::default()
            },
        )
        .await
    }
}

/// A partial payload being written.
#[async_trait]
pub trait Partial: Send {
    /// Bytes written so far (durable or not).
    fn offset(&self) -> u64;

    /// Appends bytes.
    async fn write(&mut self, data: Bytes) -> Result<(), StoreError>;

    /// Makes what was written durable and returns the durable offset (which may
    /// trail [`offset`](Self::offset) for stores that persist whole parts) and
    /// the partial's location to record.
    async fn sync(&mut self) -> Result<(u64, PartialLocation), StoreError>;

    /// Like [`sync`](Self::sync), without waiting for the storage: starts
    /// making what was written durable and returns the offset that is
    /// durable already, which may trail by what the last call started. A
    /// transfer checkpoints with this at full speed so it need not stop for
    /// each flush; the default waits, as `sync` does.
    async fn sync_behind(&mut self) -> Result<(u64, PartialLocation), StoreError> {
        self.sync().await
    }

    /// A durable offset newer than the last one returned, and the location
    /// to record with it, when the storage made more durable since (a flush
    /// that [`sync_behind`](Self::sync_behind) started has finished, a part
    /// was stored); never waits. A transfer asks between chunks, so what the
    /// storage made durable is recorded at once and not only at the next
    /// checkpoint.
    fn durable_update(&mut self) -> Option<(u64, PartialLocation)> {
        None
    }

    /// How many more bytes the storage under this partial can take, when
    /// it can tell (a filesystem's free space for unprivileged writers);
    /// `None` when it cannot (an object store). A download compares it with
    /// the length the server announces and fails early, in words, when the
    /// body cannot fit.
    fn room(&self) -> Option<u64> {
        None
    }

    /// Reads back bytes of the partial starting at `at` (below
    /// [`offset`](Self::offset)) into `buf`, returning how many were read
    /// (0 at the end). Used to seed a checksum when a download resumes.
    /// Stores that cannot read back answer [`StoreErrorKind::Unsupported`].
    async fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let _ = (at, buf);
        Err(StoreError::new(
            StoreErrorKind::Unsupported,
            "this payload store cannot read a partial back",
        ))
    }

    /// Makes what was written durable and moves the complete payload into
    /// its destination atomically (callers need not `sync` first).
    ///
    /// Unless `overwrite`, nothing already at the destination is replaced
    /// except what this same task put there (an earlier commit of it that
    /// was not recorded before a crash): the commit fails with
    /// [`StoreErrorKind::Exists`] naming the destination, leaves it as it
    /// was, and keeps the partial (its bytes are the task's resume data).
    /// With `overwrite` a file is replaced, never written through a symlink.
    async fn commit(self: Box<Self>, overwrite: bool) -> Result<(), StoreError>;

    /// Deletes the partial.
    async fn discard(self: Box<Self>) -> Result<(), StoreError>;
}

/// Stores partial payloads and commits them to their destinations.
#[async_trait]
pub trait PayloadStore: Send + Sync {
    /// Opens the partial for `task`'s `destination` at `resume`'s durable
    /// offset, cutting away anything written past it, or a new empty partial.
    /// The returned partial's offset is lower than asked only when stored bytes
    /// were lost; the caller then restarts the download from that offset's
    /// representation or from zero.
    async fn open(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        resume: &ResumeData,
    ) -> Result<Box<dyn Partial>, StoreError>;

    /// Deletes a task's partial, if any (idempotent).
    async fn discard(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        partial: Option<&PartialLocation>,
    ) -> Result<(), StoreError>;
}

/// Who runs each task when several processes share one session (each with
/// its own [`TaskStore`] over the same storage): a process runs a task, and
/// writes its record, only while it holds the task's claim.
///
/// A claim lives for [`ttl`](Self::ttl) without a renewal. A process that
/// dies loses its claims to the others once they have seen no renewal for
/// that long, measured on their own clocks: no clock is compared across
/// machines.
#[async_trait]
pub trait Claims: Send + Sync {
    /// Claims `task` of `session` for this process: `Ok(None)` while another
    /// process holds the claim and renews it. A claim released, or not
    /// renewed for a whole time to live since this process first saw it,
    /// is taken.
    async fn try_claim(
        &self,
        session: &SessionId,
        task: TaskId,
    ) -> Result<Option<Box<dyn Claim>>, StoreError>;

    /// How long a claim lives without a renewal; holders renew at a third
    /// of it.
    fn ttl(&self) -> std::time::Duration;
}

/// A claim this process holds (see [`Claims`]).
#[async_trait]
pub trait Claim: Send + Sync {
    /// Renews the claim. [`StoreErrorKind::Conflict`] means another process
    /// took it over: whatever it guarded must stop at once.
    async fn renew(&mut self) -> Result<(), StoreError>;

    /// The claim's fencing epoch: it grows with every takeover, so what
    /// a holder writes under it can be told from what a later holder
    /// writes (stores keep the newer). 0 for claims without epochs.
    fn epoch(&self) -> u64 {
        0
    }

    /// Hands the claim back, so another process may take it at once.
    async fn release(self: Box<Self>) -> Result<(), StoreError>;
}

/// A [`TaskStore`] in memory: for sessions that need not outlive the
/// process, and for tests that run on a paused clock (nothing here waits on
/// another thread). Same semantics as every store; nothing is durable.
#[derive(Debug, Default)]
pub struct MemoryTaskStore {
    sessions: std::sync::Mutex<std::collections::BTreeMap<SessionId, SessionState>>,
}

/// One session's records and outbox in a [`MemoryTaskStore`].
type SessionState = (
    std::collections::BTreeMap<TaskId, TaskRecord>,
    Vec<Completion>,
);

impl MemoryTaskStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryTaskStore::default()
    }
}

#[async_trait]
impl TaskStore for MemoryTaskStore {
    async fn load(&self, session: &SessionId) -> Result<Snapshot, StoreError> {
        let all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match all.get(session) {
            Some((records, outbox)) => Snapshot {
                records: records.values().cloned().collect(),
                outbox: outbox.clone(),
            },
            None => Snapshot::default(),
        })
    }

    async fn commit(&self, session: &SessionId, batch: Batch) -> Result<(), StoreError> {
        let mut all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let (records, outbox) = all.entry(session.clone()).or_default();
        let mut fenced = Vec::new();
        for r in batch.save {
            let id = r.id;
            match crate::merge_saved(records.get(&id), r) {
                Some(kept) => {
                    records.insert(id, kept);
                }
                None => fenced.push(id),
            }
        }
        for id in batch.remove {
            records.remove(&id);
        }
        for c in batch.complete {
            if fenced.contains(&c.task) {
                continue;
            }
            outbox.retain(|o| o.event != c.event);
            outbox.push(c);
        }
        outbox.sort_by_key(|c| (c.at, c.event));
        outbox.retain(|c| !batch.acknowledge.contains(&c.event));
        if records.is_empty() && outbox.is_empty() {
            all.remove(session);
        }
        Ok(())
    }

    async fn sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        let all = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all.keys().cloned().collect())
    }
}

/// A shared store is a store.
#[async_trait]
impl<T: TaskStore + ?Sized> TaskStore for std::sync::Arc<T> {
    async fn load(&self, session: &SessionId) -> Result<Snapshot, StoreError> {
        (**self).load(session).await
    }

    async fn commit(&self, session: &SessionId, batch: Batch) -> Result<(), StoreError> {
        (**self).commit(session, batch).await
    }

    async fn sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        (**self).sessions().await
    }

    async fn follow(&self, session: &SessionId) -> Result<(Snapshot, Vec<TaskRecord>), StoreError> {
        (**self).follow(session).await
    }

    async fn load_task(
        &self,
        session: &SessionId,
        task: TaskId,
    ) -> Result<(Option<TaskRecord>, Option<Completion>), StoreError> {
        (**self).load_task(session, task).await
    }

    async fn quarantined(&self, session: &SessionId) -> Result<Vec<Quarantined>, StoreError> {
        (**self).quarantined(session).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorClass, ErrorKind};

    #[test]
    fn running_out_of_descriptors_is_a_shortage_that_passes() {
        for errno in [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE] {
            let e = StoreError::io(
                "opening",
                std::io::Error::from_raw_os_error(errno.raw_os_error()),
            );
            assert!(e.is_out_of_descriptors(), "{e}");
            let t = TransferError::from(e);
            assert_eq!(t.kind(), ErrorKind::TooManyOpenFiles);
            assert_eq!(t.kind().class(), ErrorClass::Transient);
        }
        let other = StoreError::io("opening", std::io::Error::from_raw_os_error(13));
        assert!(!other.is_out_of_descriptors());
    }
}
