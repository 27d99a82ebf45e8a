//! Salvaging a damaged state database ([`FsTaskStore::repair`]): every
//! entry that still reads and decodes goes into a fresh database, the
//! damaged file is kept aside byte for byte, and a report says what was
//! kept and what was lost.
//!
//! The damaged file itself is never opened by redb (an open may write, to
//! recover): a copy of it is, read-only where redb allows, which also
//! skips the allocator state a damaged file may hold malformed. Reading
//! stops at the first row of a table that does not read; a panic in redb
//! ends that table's reading as well, keeping what was read before it.
//!
//! At every moment the database's name holds either the damaged file or
//! the whole fresh one: the fresh database is written under a scratch
//! name, the damaged file gets its aside name as a second link (a copy
//! where the filesystem has no hard links), and a rename puts the fresh
//! one in place.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use rustix::fs::FlockOperation;
use rustix::io::Errno;
use transfer_core::{Completion, EntryKind, SessionId, StoreError, StoreErrorKind, TaskRecord};

use crate::damaged::catch;
use crate::owner_only::FILE_MODE;
use crate::tasks::{CACHE_BYTES, OUTBOX, RECORDS, db_error};
use crate::{DATABASE_FILE, FsTaskStore};

/// What a repair kept and lost.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// The database, fresh.
    pub database: PathBuf,
    /// Where the database as it was before the repair is kept, byte for
    /// byte (`ferry.redb.damaged-<UTC time>`); `None` when there was none.
    pub set_aside: Option<PathBuf>,
    /// Whether it passed its checksums. When it did not, the entries kept
    /// are those that still read and decode, and the damage may have
    /// changed one without breaking it: look them over.
    pub was_sound: bool,
    /// Task records kept.
    pub records: usize,
    /// Completions kept.
    pub completions: usize,
    /// The sessions they belong to.
    pub sessions: Vec<SessionId>,
    /// What could not be kept, and why.
    pub lost: Vec<Lost>,
}

/// An entry, or a run of entries, a repair could not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lost {
    /// Task records or completions; `None` when the whole database was
    /// unreadable.
    pub kind: Option<EntryKind>,
    /// The session and the task or event id it was stored under, when its
    /// key still read.
    pub key: Option<(String, u64)>,
    /// Why it was not kept.
    pub reason: String,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.key) {
            (Some(kind), Some((session, id))) => {
                write!(f, "{kind} {id:016x} of {session}: {}", self.reason)
            }
            (Some(kind), None) => write!(f, "{kind}s: {}", self.reason),
            (None, _) => f.write_str(&self.reason),
        }
    }
}

impl fmt::Display for RepairReport {
    /// A summary for people: what was kept, where the old file is, and
    /// each loss on a line of its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(aside) = &self.set_aside else {
            return write!(
                f,
                "no database at {}: nothing to repair",
                self.database.display()
            );
        };
        write!(
            f,
            "kept {} task records and {} completions of {} sessions in a fresh {}; \
             the database as it was is kept as {}",
            self.records,
            self.completions,
            self.sessions.len(),
            self.database.display(),
            aside.display(),
        )?;
        if !self.was_sound {
            f.write_str(
                "\nit failed its checksums: what was kept reads and decodes, but may have been \
                 changed by the damage; look it over",
            )?;
        }
        if self.lost.is_empty() {
            return f.write_str("\nnothing was lost");
        }
        write!(f, "\nlost {}:", self.lost.len())?;
        for l in &self.lost {
            write!(f, "\n  {l}")?;
        }
        Ok(())
    }
}

/// An entry read back, to be kept as it is.
struct Entry {
    kind: EntryKind,
    session: String,
    id: u64,
    bytes: Vec<u8>,
}

impl FsTaskStore {
    /// Salvages the database in `dir` (where [`FsTaskStore::open`] keeps
    /// it): every task record and completion that still reads and decodes,
    /// under its own id and a valid session name, goes into a fresh
    /// database that takes the old one's place; the old one is kept beside
    /// it as `ferry.redb.damaged-<UTC time>`, as it was. Works on a sound
    /// database too (it then keeps everything that decodes).
    ///
    /// The store must not be open, here or in another process: that is
    /// refused with [`StoreErrorKind::Unavailable`]. Fails only when the
    /// repair cannot be done (disk full, no permission); what the damage
    /// took is in the report.
    pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport, StoreError> {
        let dir = dir.as_ref();
        crate::owner_only::create_private_dir(dir)?;
        let path = dir.join(DATABASE_FILE);
        let mut report = RepairReport {
            database: path.clone(),
            set_aside: None,
            was_sound: true,
            records: 0,
            completions: 0,
            sessions: Vec::new(),
            lost: Vec::new(),
        };
        let original = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
        };
        // The file kept aside keeps this inode: owner-only, like every
        // state file, even if an older version left it open.
        let mode = original
            .metadata()
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        crate::owner_only::tighten(
            &original,
            std::os::unix::fs::MetadataExt::mode(&mode),
            &path,
        )?;
        // redb holds this lock while a store is open: none may be, here or
        // elsewhere, while the file is replaced under it.
        match rustix::fs::flock(&original, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "{} is open in another process (a running `ferry`?): stop it, then repair",
                        path.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(StoreError::io(
                    format!("locking {}", path.display()),
                    e.into(),
                ));
            }
        }

        let scratch = dir.join(format!("{DATABASE_FILE}.salvaging"));
        copy_to(&original, &scratch)?;
        let entries = salvage(&scratch, &mut report);
        let _ = std::fs::remove_file(&scratch);

        let fresh = dir.join(format!("{DATABASE_FILE}.fresh"));
        write_fresh(&fresh, &entries)?;
        count(&entries, &mut report);

        let aside = keep_aside(dir, &original)?;
        std::fs::rename(&fresh, &path).map_err(|e| {
            StoreError::io(
                format!("moving the fresh database to {}", path.display()),
                e,
            )
        })?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))?;
        report.set_aside = Some(aside);
        for l in &report.lost {
            tracing::warn!(database = %path.display(), "lost in the repair: {l}");
        }
        Ok(report)
    }
}

/// Copies `from` to a new owner-only file at `to` (one left by an earlier
/// repair that stopped is replaced), synced.
fn copy_to(mut from: &File, to: &Path) -> Result<(), StoreError> {
    let io = |e| StoreError::io(format!("copying the database to {}", to.display()), e);
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(to)
        .map_err(io)?;
    std::io::Seek::rewind(&mut from).map_err(io)?;
    std::io::copy(&mut from, &mut out).map_err(io)?;
    out.sync_all().map_err(io)
}

/// Reads every entry of the database at `scratch` (a copy, which redb may
/// write to) that decodes, noting what it cannot read in `report`.
fn salvage(scratch: &Path, report: &mut RepairReport) -> Vec<Entry> {
    let mut entries = Vec::new();
    // Read-only first: a file that needs recovery is refused that way.
    match open_scratch(scratch, false).or_else(|_| open_scratch(scratch, true)) {
        Ok(db) => read_tables(&*db, &mut entries, report),
        Err(e) => report.lost.push(Lost {
            kind: None,
            key: None,
            reason: format!("the database does not open: {e}"),
        }),
    }
    // Checked after reading: the check may rewrite the copy.
    report.was_sound = matches!(
        catch(|| {
            let file = scratch_file(scratch)?;
            let mut db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(FileBackend::new(file).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            db.check_integrity().map_err(|e| e.to_string())
        }),
        Ok(Ok(true))
    );
    entries
}

fn scratch_file(scratch: &Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(scratch)
        .map_err(|e| e.to_string())
}

/// The copy at `scratch`, opened read-only (no recovery, no allocator
/// state read), or for writing (with recovery) when `writable`.
fn open_scratch(scratch: &Path, writable: bool) -> Result<Box<dyn ReadableDatabase>, String> {
    catch(|| -> Result<Box<dyn ReadableDatabase>, String> {
        let file = scratch_file(scratch)?;
        let backend = FileBackend::new(file).map_err(|e| e.to_string())?;
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        Ok(if writable {
            Box::new(
                builder
                    .create_with_backend(backend)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            Box::new(
                builder
                    .open_read_only_with_backend(backend)
                    .map_err(|e| e.to_string())?,
            )
        })
    })?
}

/// Reads both tables of `db` into `entries`, each entry that decodes.
fn read_tables(db: &dyn ReadableDatabase, entries: &mut Vec<Entry>, report: &mut RepairReport) {
    for kind in [EntryKind::Record, EntryKind::Completion] {
        let table = table_of(kind);
        let mut rows: Vec<(String, u64, Vec<u8>)> = Vec::new();
        let read = catch(|| -> Result<(), String> {
            let txn = db.begin_read().map_err(|e| e.to_string())?;
            let t = txn.open_table(table).map_err(|e| e.to_string())?;
            for row in t.iter().map_err(|e| e.to_string())? {
                let (k, v) = row.map_err(|e| e.to_string())?;
                let (session, id) = k.value();
                rows.push((session.to_owned(), id, v.value().to_vec()));
            }
            Ok(())
        });
        if let Err(e) | Ok(Err(e)) = read {
            let after = rows
                .last()
                .map(|(s, id, _)| format!(" after {id:016x} of {s}"))
                .unwrap_or_default();
            report.lost.push(Lost {
                kind: Some(kind),
                key: None,
                reason: format!("those{after} do not read: {e}"),
            });
        }
        for (session, id, bytes) in rows {
            let checked = SessionId::new(&session)
                .map_err(|e| e.to_string())
                .and_then(|_| decoded_id(kind, &bytes));
            let reason = match checked {
                Ok(own) if own == id => {
                    entries.push(Entry {
                        kind,
                        session,
                        id,
                        bytes,
                    });
                    continue;
                }
                Ok(own) => format!("it is {own:016x}, stored under another id"),
                Err(e) => e,
            };
            report.lost.push(Lost {
                kind: Some(kind),
                key: Some((session, id)),
                reason,
            });
        }
    }
}

/// The id an entry of `kind` names itself by, if it decodes.
fn decoded_id(kind: EntryKind, bytes: &[u8]) -> Result<u64, String> {
    match kind {
        EntryKind::Record => TaskRecord::decode(bytes).map(|r| r.id.as_u64()),
        EntryKind::Completion => Completion::decode(bytes).map(|c| c.event.as_u64()),
    }
    .map_err(|e| e.to_string())
}

/// The table entries of `kind` are kept in.
fn table_of(kind: EntryKind) -> TableDefinition<'static, (&'static str, u64), &'static [u8]> {
    match kind {
        EntryKind::Record => RECORDS,
        EntryKind::Completion => OUTBOX,
    }
}

/// Writes `entries` into a new database at `fresh`, durably.
fn write_fresh(fresh: &Path, entries: &[Entry]) -> Result<(), StoreError> {
    match std::fs::remove_file(fresh) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(StoreError::io(format!("removing {}", fresh.display()), e));
        }
        _ => {}
    }
    let file = crate::owner_only::open_file(fresh)?;
    let creating = |e| db_error(&format!("creating {}", fresh.display()), e);
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(FileBackend::new(file).map_err(creating)?)
        .map_err(creating)?;
    FsTaskStore::initialise(&db, fresh)?;
    let txn = db.begin_write().map_err(|e| db_error("writing", e))?;
    for e in entries {
        txn.open_table(table_of(e.kind))
            .map_err(|e| db_error("writing", e))?
            .insert((e.session.as_str(), e.id), e.bytes.as_slice())
            .map_err(|e| db_error("writing", e))?;
    }
    txn.commit().map_err(|e| db_error("committing", e))
}

fn count(entries: &[Entry], report: &mut RepairReport) {
    let mut sessions = std::collections::BTreeSet::new();
    for e in entries {
        match e.kind {
            EntryKind::Record => report.records += 1,
            EntryKind::Completion => report.completions += 1,
        }
        sessions.insert(e.session.as_str());
    }
    report.sessions = sessions
        .into_iter()
        .filter_map(|s| SessionId::new(s).ok())
        .collect();
}

/// Gives the database as it is (`original`, open) a second name beside it,
/// `ferry.redb.damaged-<UTC time>` (a hard link; a copy where there are
/// none), and returns that name.
fn keep_aside(dir: &Path, original: &File) -> Result<PathBuf, StoreError> {
    let stamp = utc_stamp(SystemTime::now());
    for n in 1u32.. {
        let name = match n {
            1 => format!("{DATABASE_FILE}.damaged-{stamp}"),
            _ => format!("{DATABASE_FILE}.damaged-{stamp}-{n}"),
        };
        let aside = dir.join(&name);
        let linked = rustix::fs::linkat(
            rustix::fs::CWD,
            dir.join(DATABASE_FILE).as_path(),
            rustix::fs::CWD,
            aside.as_path(),
            rustix::fs::AtFlags::empty(),
        );
        match linked {
            Ok(()) => return Ok(aside),
            Err(Errno::EXIST) => continue,
            Err(Errno::PERM | Errno::OPNOTSUPP | Errno::NOSYS) => {
                if aside.exists() {
                    continue;
                }
                copy_to(original, &aside)?;
                return Ok(aside);
            }
            Err(e) => {
                return Err(StoreError::io(
                    format!("keeping the database aside as {}", aside.display()),
                    e.into(),
                ));
            }
        }
    }
    Err(StoreError::new(
        StoreErrorKind::Io,
        "no name left to keep the database aside",
    ))
}

/// `t` in UTC as `YYYYMMDDTHHMMSSZ`.
fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_are_utc_calendar_times() {
        let at = |s| utc_stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_796_659_261), "20261207T160101Z");
    }
}
