//! Task records and the completion outbox in one redb database, written by
//! one thread that group-commits: every batch waiting when a commit starts
//! rides in the next one, so many concurrent savers share one durable write.
//!
//! A damaged database is refused at open (every page's checksum is read
//! once) with an error that names it and says what to do; an entry that
//! does not decode is set aside by loads, not fatal to the rest
//! ([`Quarantined`]); see `repair.rs` for salvaging a damaged database.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::backends::FileBackend;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use tokio::sync::oneshot;
use transfer_core::{
    Batch, Completion, EntryKind, Quarantined, SessionId, Snapshot, StoreError, StoreErrorKind,
    TaskRecord, TaskStore,
};

use crate::damaged::{damaged, guarded, name_damage};

pub(crate) const RECORDS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("records");
pub(crate) const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT: u64 = 1;

/// How much lower the writer thread's priority is than its process's (a
/// `nice` increment; the kernel stops at 19, the lowest). Saves are batch
/// work that waits for the disk anyway: when the writer shares the cores
/// with the threads moving bytes (and, on one machine, the server sending
/// them), it should take the time they leave rather than preempt them at
/// each wake-up; the batches it then finds are larger, so it also costs
/// less. At the lowest priority it still gets a share of a busy core (about
/// 1.5% against one thread at the default priority), so saves are never
/// starved as under `SCHED_IDLE`, but they do wait on a machine whose cores
/// other work keeps busy.
///
/// Measured on 2 cores (`cargo xtask bench --only 3 --runs 9`, 2,000 files
/// of 64 KiB over TLS HTTP/2 from a local nginx, ferry against curl): 1.02×
/// and 1.06× at +19, against 1.00× and 0.95× at +5; +10 with
/// `SCHED_BATCH`, 1.03× and 0.95×. The cost, with two CPU-bound processes
/// on both cores: `ferry get` of 100 such files took 0.31-0.34 s at +19,
/// 0.14-0.16 s at +10 with `SCHED_BATCH`, 0.04-0.05 s at +5 (`SCHED_IDLE`:
/// 1.7-2.2 s).
const WRITER_NICE: i32 = 19;

/// The database file's name inside the store directory.
pub const DATABASE_FILE: &str = "ferry.redb";

struct Job {
    session: SessionId,
    batch: Batch,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// A [`TaskStore`] on redb: one database file per store directory. Clones
/// share the database; it closes when the last clone drops.
#[derive(Clone)]
pub struct FsTaskStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
    path: PathBuf,
}

/// The writer thread's queue. Dropping it stops the thread and waits for it,
/// so the database file is released when the store is.
struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for FsTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsTaskStore")
            .field("path", &self.path)
            .finish()
    }
}

pub(crate) fn db_error(context: &str, e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    let kind = match &e {
        redb::Error::DatabaseAlreadyOpen => StoreErrorKind::Unavailable,
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableTypeMismatch { .. } => StoreErrorKind::Corrupt,
        redb::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StoreErrorKind::Full
            }
            // redb reports a file that is not a redb database this way,
            // and one cut short before its header ends as the end of file.
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                StoreErrorKind::Corrupt
            }
            _ => StoreErrorKind::Io,
        },
        _ => StoreErrorKind::Io,
    };
    StoreError::new(kind, format!("{context}: {e}"))
}

impl FsTaskStore {
    /// Opens (or creates) the store in `dir`, creating the directory owner-only
    /// (one that exists open to other users is reported with a warning).
    /// The database file is owner-only whatever the directory's mode, and
    /// never opened through a symlink.
    ///
    /// Every page's checksum is checked as it opens (about 1.5 ms per 1,000
    /// records): a database damaged since it was written (bytes changed,
    /// cut short) is refused with [`StoreErrorKind::Corrupt`], in words
    /// that name the file and say to repair it ([`FsTaskStore::repair`]),
    /// where reading it could panic or hand back wrong records. So is a
    /// file that is not a Ferry database. A database another process holds
    /// open is refused with [`StoreErrorKind::Unavailable`].
    pub fn open(dir: impl AsRef<Path>) -> Result<FsTaskStore, StoreError> {
        let dir = dir.as_ref();
        crate::owner_only::create_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let file = crate::owner_only::open_file(&path)?;
        let db = guarded(&path, "opening", || open_checked(file, &path))
            .map_err(|e| name_damage(&path, e))?;
        // An existing store of this format opens with a read: no write
        // transaction, no sync, on every open.
        let current = guarded(&path, "reading the format", || {
            Ok(db
                .begin_read()
                .ok()
                .and_then(|r| r.open_table(META).ok())
                .and_then(|t| t.get("format").ok().flatten().map(|v| v.value())))
        })?;
        if current != Some(FORMAT) {
            guarded(&path, "checking the format", || {
                Self::initialise(&db, &path)
            })?;
        }
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer_path = path.clone();
        let thread = thread::Builder::new()
            .name("ferry-store-writer".into())
            .spawn(move || {
                // This thread only, on Linux. A failure leaves it as it was.
                let _ = rustix::process::nice(WRITER_NICE);
                writer(&writer_db, &writer_path, &rx)
            })
            .map_err(|e| StoreError::io("starting the store writer", e))?;
        let writer = Arc::new(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        });
        Ok(FsTaskStore { db, writer, path })
    }

    /// Writes the format and creates the tables of a new store, or refuses
    /// a file of another format.
    pub(crate) fn initialise(db: &Database, path: &Path) -> Result<(), StoreError> {
        let txn = db
            .begin_write()
            .map_err(|e| db_error("checking the format", e))?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| db_error("checking the format", e))?;
            let found = meta
                .get("format")
                .map_err(|e| db_error("checking the format", e))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", FORMAT)
                        .map_err(|e| db_error("writing the format", e))?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Corrupt,
                        format!(
                            "{} has store format {other}; this build reads {FORMAT}",
                            path.display()
                        ),
                    ));
                }
            }
            txn.open_table(RECORDS)
                .map_err(|e| db_error("opening records", e))?;
            txn.open_table(OUTBOX)
                .map_err(|e| db_error("opening the outbox", e))?;
        }
        txn.commit()
            .map_err(|e| db_error("checking the format", e))?;
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the database in `file` (at `path`) and checks every page's
/// checksum: a file changed or cut short since redb wrote it is refused
/// here, where a plain open trusts it (and may panic on it later).
fn open_checked(file: std::fs::File, path: &Path) -> Result<Database, StoreError> {
    let opening = |e| db_error("opening", e);
    // redb's page cache is resident memory: at its 1 GiB default, a
    // session's first load keeps every page it read, about a kilobyte per
    // task. Records are read once at attach, so a small cache costs nothing.
    let mut db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(FileBackend::new(file).map_err(opening)?)
        .map_err(opening)?;
    // No write and no sync when the file is sound.
    match db.check_integrity() {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            database = %path.display(),
            "the database was not sound and redb repaired it: the last commits may be lost"
        ),
        Err(e) => return Err(db_error("checking every page", e)),
    }
    Ok(db)
}

/// redb's page cache.
pub(crate) const CACHE_BYTES: usize = 16 << 20;

/// The shortest time between two syncs while jobs come from several
/// callers at once: a job that needs one sooner waits for the rest of it,
/// gathering the jobs that come meanwhile into the same commit. A sync costs
/// the same for one record or a hundred; under a steady stream of
/// completions this makes one out of many, for at most this much more
/// latency. A lone caller (the last group was one job) never waits: nothing
/// would come to share its sync.
const SYNC_INTERVAL: Duration = Duration::from_millis(2);

/// The writer thread: takes every job that is waiting, commits them in one
/// durable transaction, answers them all. Ends when the last store handle drops.
fn writer(db: &Database, path: &Path, rx: &mpsc::Receiver<Job>) {
    let commit = |jobs: &[Job]| {
        guarded(path, "committing", || commit(db, jobs)).map_err(|e| name_damage(path, e))
    };
    let mut last_sync: Option<Instant> = None;
    let mut last_group = 0;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        group.extend(rx.try_iter());
        // Jobs gathered while waiting change nothing: only a durable group
        // waits, and only when others are about.
        let durable = group.iter().any(|j| !j.batch.deferrable);
        if let Some(at) = last_sync
            && durable
            && (group.len() > 1 || last_group > 1)
        {
            let due = at + SYNC_INTERVAL;
            while let Some(left) = due.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        last_group = group.len();
        match commit(&group) {
            Ok(()) => {
                for job in group {
                    let _ = job.reply.send(Ok(()));
                }
            }
            // One bad batch must not fail its neighbours: retry each alone.
            Err(_) if group.len() > 1 => {
                for job in group {
                    let result = commit(std::slice::from_ref(&job));
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in group {
                    let _ = job
                        .reply
                        .send(Err(StoreError::new(e.kind(), e.to_string())));
                }
            }
        }
        if durable {
            last_sync = Some(Instant::now());
        }
    }
}

fn commit(db: &Database, jobs: &[Job]) -> Result<(), StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| db_error("starting a commit", e))?;
    // No fsync when no one in the group needs one: redb makes such a commit
    // durable with the next immediate one, and a crash before that rolls
    // back to the last immediate commit.
    if jobs.iter().all(|j| j.batch.deferrable) {
        txn.set_durability(Durability::None)
            .map_err(|e| db_error("deferring a commit", e))?;
    }
    {
        let mut records = txn
            .open_table(RECORDS)
            .map_err(|e| db_error("opening records", e))?;
        let mut outbox = txn
            .open_table(OUTBOX)
            .map_err(|e| db_error("opening the outbox", e))?;
        for job in jobs {
            let s = job.session.as_str();
            for r in &job.batch.save {
                records
                    .insert((s, r.id.as_u64()), r.encode().as_slice())
                    .map_err(|e| db_error("saving a record", e))?;
            }
            for id in &job.batch.remove {
                records
                    .remove((s, id.as_u64()))
                    .map_err(|e| db_error("removing a record", e))?;
            }
            for c in &job.batch.complete {
                outbox
                    .insert((s, c.event.as_u64()), c.encode().as_slice())
                    .map_err(|e| db_error("recording a completion", e))?;
            }
            for id in &job.batch.acknowledge {
                outbox
                    .remove((s, id.as_u64()))
                    .map_err(|e| db_error("acknowledging a completion", e))?;
            }
        }
    }
    txn.commit().map_err(|e| db_error("committing", e))
}

/// Decodes every value of `session` in `table`, setting aside (into
/// `aside`) each that does not decode or is not stored under its own id.
fn read_session<T>(
    txn: &redb::ReadTransaction,
    path: &Path,
    (table, kind): (TableDefinition<(&str, u64), &[u8]>, EntryKind),
    session: &str,
    decode: impl Fn(&[u8]) -> Result<(T, u64), transfer_core::DecodeError>,
    aside: &mut Vec<Quarantined>,
) -> Result<Vec<T>, StoreError> {
    let name = table.to_string();
    let broken =
        |doing: &str, e: redb::Error| damaged(path, db_error(&format!("{doing} {name}"), e));
    let t = txn
        .open_table(table)
        .map_err(|e| broken("opening", e.into()))?;
    let rows = t
        .range((session, 0)..=(session, u64::MAX))
        .map_err(|e| broken("reading", e.into()))?;
    // Every session's entries: a bound, exact when the store holds one
    // session (the common case), that spares growing by doubling.
    let all = t.len().map_err(|e| broken("counting", e.into()))?;
    let mut out = Vec::with_capacity(usize::try_from(all).unwrap_or(0));
    for row in rows {
        let (k, v) = row.map_err(|e| broken("reading", e.into()))?;
        let id = k.value().1;
        let reason = match decode(v.value()) {
            Ok((item, own)) if own == id => {
                out.push(item);
                continue;
            }
            Ok((_, own)) => format!("it is {own:016x}, stored under another id"),
            Err(e) => e.to_string(),
        };
        aside.push(Quarantined { kind, id, reason });
    }
    Ok(out)
}

/// A session's records and outbox, without the entries set aside (into
/// `aside`).
fn load(
    db: &Database,
    path: &Path,
    session: &SessionId,
    aside: &mut Vec<Quarantined>,
) -> Result<Snapshot, StoreError> {
    let txn = db
        .begin_read()
        .map_err(|e| damaged(path, db_error("starting a read", e)))?;
    let s = session.as_str();
    let records = read_session(
        &txn,
        path,
        (RECORDS, EntryKind::Record),
        s,
        |b| {
            TaskRecord::decode(b).map(|r| {
                let id = r.id.as_u64();
                (r, id)
            })
        },
        aside,
    )?;
    let mut outbox = read_session(
        &txn,
        path,
        (OUTBOX, EntryKind::Completion),
        s,
        |b| {
            Completion::decode(b).map(|c| {
                let id = c.event.as_u64();
                (c, id)
            })
        },
        aside,
    )?;
    outbox.sort_by_key(|c| (c.at, c.event));
    Ok(Snapshot { records, outbox })
}

/// Every session with an entry in the database. A key whose session name
/// is not a valid one (only damage writes such a key) is left out.
fn sessions(db: &Database, path: &Path) -> Result<Vec<SessionId>, StoreError> {
    let txn = db
        .begin_read()
        .map_err(|e| damaged(path, db_error("starting a read", e)))?;
    let mut names = std::collections::BTreeSet::new();
    for table in [RECORDS, OUTBOX] {
        let t = txn
            .open_table(table)
            .map_err(|e| damaged(path, db_error("opening a table", e)))?;
        for item in t
            .iter()
            .map_err(|e| damaged(path, db_error("listing sessions", e)))?
        {
            let (k, _) = item.map_err(|e| damaged(path, db_error("listing sessions", e)))?;
            names.insert(k.value().0.to_owned());
        }
    }
    Ok(names
        .into_iter()
        .filter_map(|n| match SessionId::new(&n) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(database = %path.display(), "a key with {e}; left out");
                None
            }
        })
        .collect())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        StoreError::new(
            StoreErrorKind::Unavailable,
            format!("store task failed: {e}"),
        )
    })?
}

#[async_trait]
impl TaskStore for FsTaskStore {
    /// The session's records and completions; an entry that does not
    /// decode is left out (and logged), not fatal to the others: see
    /// [`quarantined`](TaskStore::quarantined).
    async fn load(&self, session: &SessionId) -> Result<Snapshot, StoreError> {
        let (db, path) = (self.db.clone(), self.path.clone());
        let session = session.clone();
        blocking(move || {
            let mut aside = Vec::new();
            let snapshot = guarded(&path, "reading", || load(&db, &path, &session, &mut aside))?;
            for q in aside {
                tracing::warn!(
                    database = %path.display(),
                    session = %session,
                    "{q}; set aside (`ferry repair` drops it for good)"
                );
            }
            Ok(snapshot)
        })
        .await
    }

    async fn quarantined(&self, session: &SessionId) -> Result<Vec<Quarantined>, StoreError> {
        let (db, path) = (self.db.clone(), self.path.clone());
        let session = session.clone();
        blocking(move || {
            let mut aside = Vec::new();
            guarded(&path, "reading", || load(&db, &path, &session, &mut aside))?;
            Ok(aside)
        })
        .await
    }

    async fn commit(&self, session: &SessionId, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::new(StoreErrorKind::Unavailable, "the store writer stopped");
        let jobs = self.writer.jobs.as_ref().ok_or_else(closed)?;
        jobs.send(Job {
            session: session.clone(),
            batch,
            reply,
        })
        .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn sessions(&self) -> Result<Vec<SessionId>, StoreError> {
        let (db, path) = (self.db.clone(), self.path.clone());
        blocking(move || guarded(&path, "listing sessions", || sessions(&db, &path))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of this process's thread named `name` (from
    /// `/proc/self/task/*/stat`, whose 19th field is the nice value).
    fn nice_of_thread(name: &str) -> Option<i32> {
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // After the command name in parentheses: state is field 3.
            let rest = &stat[stat.rfind(')')? + 2..];
            return rest.split(' ').nth(16)?.parse().ok();
        }
        None
    }

    #[test]
    fn the_writer_runs_at_the_lowest_priority_relative_to_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsTaskStore::open(dir.path()).unwrap();
        let ours = rustix::process::getpriority_process(None).unwrap();
        // 19 is the lowest nice value; a process below 0 keeps its distance.
        let expected = (ours + 19).min(19);
        // The thread lowers itself as it starts.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = None;
        while Instant::now() < deadline {
            seen = nice_of_thread("ferry-store-wri");
            if seen == Some(expected) {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(seen, Some(expected), "the store writer's nice value");
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap(),
            ours,
            "the opening thread keeps its priority"
        );
        drop(store);
    }
}
