//! Partial payloads as files beside their destinations: created owner-only,
//! cut back to the durable offset on open, `sync_data` at checkpoints, renamed
//! into place with the directory synced, over nothing the task did not write
//! unless it may overwrite (`final_move`). Nothing is written outside the
//! root directory the store was given.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use async_trait::async_trait;
use bytes::Bytes;
use transfer_core::{
    Destination, Partial, PartialLocation, PayloadStore, ResumeData, SessionId, StoreError,
    StoreErrorKind, TaskId,
};

/// A [`PayloadStore`] writing files under one root directory.
#[derive(Clone, Debug)]
pub struct FsPayloadStore {
    root: PathBuf,
    /// Directories partials went into lately, by the path asked for.
    dirs: Arc<Mutex<HashMap<PathBuf, Arc<Dir>>>>,
    /// A destination's directory must be where its path names it, not
    /// reached through a symlink (see [`FsPayloadStore::exact_paths`]).
    exact: bool,
}

/// Directories kept open at most (a download into each of many directories
/// reopens them).
const DIRS_KEPT: usize = 64;

/// A directory inside the root, held open: partials are created, moved into
/// place and synced relative to it, so no path above it is walked again,
/// and no symlink planted on that path after the check can redirect them.
#[derive(Debug)]
struct Dir {
    file: std::fs::File,
    /// Where it is, without symlinks.
    real: PathBuf,
    /// Its device and inode: the path asked for still leads to this
    /// directory while a `stat` of it gives these (the open handle keeps the
    /// inode from being reused).
    id: (u64, u64),
    /// On a filesystem in memory (tmpfs, ramfs), where writes are memory
    /// copies and syncs return at once.
    in_memory: bool,
}

/// Bytes left to write at most for a commit to be done on the calling
/// thread when the directory is in memory (a copy of tens of microseconds).
const IN_MEMORY_INLINE: usize = 256 << 10;

/// `statfs` magic numbers of filesystems held in memory.
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Where one task's partial and destination are.
#[derive(Clone, Debug)]
struct Place {
    dir: Arc<Dir>,
    /// The destination's name in `dir`.
    name: OsString,
    /// The partial's name in `dir`.
    partial: OsString,
}

impl Place {
    fn partial_path(&self) -> PathBuf {
        self.dir.real.join(&self.partial)
    }

    fn destination(&self) -> PathBuf {
        self.dir.real.join(&self.name)
    }
}

impl FsPayloadStore {
    /// A store that writes only below `root` (created if missing).
    pub fn new(root: impl AsRef<Path>) -> Result<FsPayloadStore, StoreError> {
        let root = root.as_ref();
        std::fs::create_dir_all(root)
            .map_err(|e| StoreError::io(format!("creating {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| StoreError::io(format!("resolving {}", root.display()), e))?;
        Ok(FsPayloadStore {
            root,
            dirs: Arc::default(),
            exact: false,
        })
    }

    /// Refuses a destination whose directory is reached through a symlink
    /// anywhere on its path, even one that stays inside the root: for
    /// destinations named by their real, absolute path when the task was
    /// queued (as `ferry` names them), so a directory swapped for a symlink
    /// afterwards is not written through.
    pub fn exact_paths(mut self) -> FsPayloadStore {
        self.exact = true;
        self
    }

    /// The directory everything is written under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a destination to a path inside the root, creating its parent
    /// directories. Relative paths are taken from the root; `..` components,
    /// and symlinks that lead out of the root, are refused.
    pub fn resolve(&self, destination: &Destination) -> Result<PathBuf, StoreError> {
        let place = self.place(TaskId::from_u64(0), destination, true)?;
        Ok(place.map(|p| p.destination()).unwrap_or_default())
    }

    /// Whether the file at `destination` is the one `task` of `session`
    /// wrote: every file this store commits carries its task's mark (the
    /// `user.ferry.task` extended attribute), which a copy or an edit that
    /// replaces the file does not keep. `Some(false)` when there is no file
    /// there, or another's; `None` when the filesystem keeps no such marks,
    /// so it cannot tell. A caller that finds a task done asks this before
    /// calling its file done.
    pub fn written_by(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
    ) -> Result<Option<bool>, StoreError> {
        let Some(place) = self.place(task, destination, false)? else {
            return Ok(Some(false));
        };
        let tag = crate::final_move::task_tag(session, task);
        Ok(crate::final_move::written_by(
            &place.dir.file,
            &place.name,
            &tag,
        ))
    }

    /// Confines `destination` to the root and finds its directory, creating
    /// it only when `create` (`None` when it is missing and not created: it
    /// holds nothing to find).
    fn place(
        &self,
        task: TaskId,
        destination: &Destination,
        create: bool,
    ) -> Result<Option<Place>, StoreError> {
        let Destination::Path(p) = destination else {
            return Err(StoreError::new(
                StoreErrorKind::Unsupported,
                "store-fs writes files; object keys need an object store",
            ));
        };
        let outside = || {
            StoreError::new(
                StoreErrorKind::OutsideRoot,
                format!("{} is outside {}", p.display(), self.root.display()),
            )
        };
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(outside());
        }
        let joined = if p.is_absolute() {
            p.clone()
        } else {
            self.root.join(p)
        };
        let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
            return Err(outside());
        };
        if !parent.starts_with(&self.root) {
            return Err(outside());
        }
        let Some(dir) = self.dir(parent, create)? else {
            return Ok(None);
        };
        if !dir.real.starts_with(&self.root) {
            return Err(outside());
        }
        if self.exact && dir.real != parent {
            return Err(StoreError::new(
                StoreErrorKind::OutsideRoot,
                format!(
                    "{} leads to {} (a symlink put on the path since the task was queued?): not written through",
                    parent.display(),
                    dir.real.display()
                ),
            ));
        }
        // The destination itself may not be a symlink either.
        if rustix::fs::statat(&dir.file, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
        {
            return Err(outside());
        }
        let mut partial = OsString::from(".");
        partial.push(name);
        partial.push(format!(".{task}.partial"));
        Ok(Some(Place {
            dir,
            name: name.to_owned(),
            partial,
        }))
    }

    /// The directory at `path`, opened (and created if `create`), from the
    /// directories kept open while the path still leads to the same one.
    fn dir(&self, path: &Path, create: bool) -> Result<Option<Arc<Dir>>, StoreError> {
        let kept = self.dirs.lock().ok().and_then(|d| d.get(path).cloned());
        if let Some(dir) = kept
            && std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == dir.id)
        {
            return Ok(Some(dir));
        }
        if create {
            std::fs::create_dir_all(path)
                .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(format!("opening {}", path.display()), e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        // Where the directory opened really is (not where the path, which
        // may change meanwhile, led when resolved separately).
        let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .or_else(|_| path.canonicalize())
            .map_err(|e| StoreError::io(format!("resolving {}", path.display()), e))?;
        let in_memory = rustix::fs::fstatfs(&file)
            .is_ok_and(|fs| matches!(fs.f_type as u64, TMPFS_MAGIC | RAMFS_MAGIC));
        let dir = Arc::new(Dir {
            file,
            real,
            id: (meta.dev(), meta.ino()),
            in_memory,
        });
        if let Ok(mut dirs) = self.dirs.lock() {
            if dirs.len() >= DIRS_KEPT {
                dirs.clear();
            }
            dirs.insert(path.to_owned(), dir.clone());
        }
        Ok(Some(dir))
    }
}

/// Bytes gathered before one write to the file: bodies arrive in frames of
/// a few KiB (TLS records, HTTP/2 DATA frames), and one write per MiB costs
/// far less than one per frame.
const WRITE_BUFFER: usize = 1 << 20;

/// Frames gathered before one write at most (Linux takes up to 1,024 in a
/// vectored write).
const WRITE_FRAMES: usize = 512;

/// A partial file being written: appended frames are held, not copied, and
/// written in one vectored call per [`WRITE_BUFFER`] (or [`WRITE_FRAMES`]),
/// on a blocking thread, at the file's position, which only this partial
/// moves.
///
/// The file is opened (created, cut back to the durable offset) when it is
/// first needed, not when the partial is: an attempt holds no descriptor and
/// leaves no file while it waits for its response, and one that fails before
/// the first byte leaves nothing behind.
#[derive(Debug)]
pub struct FsPartial {
    /// The file, once opened.
    file: Option<Arc<std::fs::File>>,
    /// The offset `open` found: the file, once opened, must hold as much.
    opened_at: u64,
    /// Where it is and where it goes.
    place: Place,
    /// The partial's path, for messages and resume data.
    path: PathBuf,
    /// Bytes already in the file.
    written: u64,
    /// Frames appended and not yet in the file.
    pending: Vec<Bytes>,
    /// Their length.
    pending_len: usize,
    /// Bytes known durable.
    durable: u64,
    /// A `sync_data` started by `sync_behind`, with the offset it covers.
    syncing: Option<tokio::task::JoinHandle<std::io::Result<u64>>>,
    /// A background flush failed: nothing written since may be called
    /// durable, so every later sync fails with this.
    failed: Option<String>,
    /// The session and task it is written for, as the finished file's
    /// mark (see `final_move`).
    tag: String,
}

impl FsPartial {
    /// Writes `frames` at `self.written` on a blocking thread and waits for
    /// it: once this returns no write of this partial is in flight, so a
    /// partial dropped after it cannot land bytes after the next `open` cut
    /// the file. Gives the (emptied) list back for reuse.
    async fn write_out(
        &mut self,
        frames: Vec<Bytes>,
        len: usize,
    ) -> Result<Vec<Bytes>, StoreError> {
        let mut frames = self
            .blocking("writing", move |f| {
                write_all_vectored(f, &frames).map(|()| frames)
            })
            .await?;
        self.written += len as u64;
        frames.clear();
        Ok(frames)
    }

    /// Writes out the frames held, keeping the list's allocation.
    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.pending);
        let len = std::mem::take(&mut self.pending_len);
        self.pending = self.write_out(frames, len).await?;
        Ok(())
    }

    /// Fails when a background flush failed before.
    fn check_failed(&self) -> Result<(), StoreError> {
        match &self.failed {
            Some(e) => Err(StoreError::new(
                StoreErrorKind::Io,
                format!("syncing {}: {e}", self.path.display()),
            )),
            None => Ok(()),
        }
    }

    /// Waits for a `sync_behind`'s flush and takes its result.
    async fn finish_sync(
        &mut self,
        syncing: tokio::task::JoinHandle<std::io::Result<u64>>,
    ) -> Result<(), StoreError> {
        let result = syncing.await;
        self.settle(result).map(|_| ())
    }

    /// Takes a background flush's result: the durable offset moves up (and
    /// `true` says it moved), or the failure is kept so that no later sync
    /// calls anything durable.
    fn settle(
        &mut self,
        result: Result<std::io::Result<u64>, tokio::task::JoinError>,
    ) -> Result<bool, StoreError> {
        let failure = match result {
            Ok(Ok(at)) => {
                let moved = at > self.durable;
                self.durable = self.durable.max(at);
                return Ok(moved);
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("sync task: {e}"),
        };
        self.failed = Some(failure);
        self.check_failed().map(|()| false)
    }

    /// The file, opened now if it was not: created owner-only, cut back to
    /// the offset `open` found. Fails if it holds less by now (changed
    /// under the partial meanwhile): the attempt is tried again.
    async fn file(&mut self) -> Result<Arc<std::fs::File>, StoreError> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let (place, want) = (self.place.clone(), self.opened_at);
        let (file, offset) = if want == 0 {
            // Creating (or emptying) a file is a metadata operation: a
            // blocking thread's round trip would cost more than the work.
            open_partial(&place, 0)?
        } else {
            // Cutting a large partial back may take a while.
            tokio::task::spawn_blocking(move || open_partial(&place, want))
                .await
                .map_err(|e| {
                    StoreError::new(StoreErrorKind::Unavailable, format!("open task: {e}"))
                })??
        };
        if offset != want {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                format!(
                    "{} holds {offset} bytes, not the {want} found when the attempt began",
                    self.path.display()
                ),
            ));
        }
        let file = Arc::new(file);
        self.file = Some(file.clone());
        Ok(file)
    }

    /// Runs `f` on the file on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&std::fs::File) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let file = self.file().await?;
        tokio::task::spawn_blocking(move || f(&file))
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, format!("{what} task: {e}")))?
            .map_err(|e| StoreError::io(format!("{what} {}", self.path.display()), e))
    }
}

/// How many bytes of `place`'s partial a resume from `durable` can keep, as
/// [`open_partial`] will find them, without opening or creating it: none
/// when it is missing or is also a finished file's name (a hard link left by
/// a commit cut short); never through a symlink.
fn held(place: &Place, durable: u64) -> Result<u64, StoreError> {
    if durable == 0 {
        return Ok(0);
    }
    match rustix::fs::statat(&place.dir.file, &place.partial, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => Err(StoreError::io(
            format!("opening {}", place.partial_path().display()),
            Errno::LOOP.into(),
        )),
        Ok(st) if st.st_nlink > 1 => Ok(0),
        Ok(st) => Ok(u64::try_from(st.st_size).unwrap_or(0).min(durable)),
        Err(Errno::NOENT) => Ok(0),
        Err(e) => Err(StoreError::io(
            format!("reading {}", place.partial_path().display()),
            e.into(),
        )),
    }
}

/// Opens (creating it owner-only, never through a symlink) the partial of
/// `place` and cuts it back to `durable` bytes at most; returns it with the
/// offset where the next write goes.
fn open_partial(place: &Place, durable: u64) -> Result<(std::fs::File, u64), StoreError> {
    let io =
        |what: &str, e| StoreError::io(format!("{what} {}", place.partial_path().display()), e);
    // Never open a partial through a symlink someone planted.
    let open = || {
        rustix::fs::openat(
            &place.dir.file,
            &place.partial,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )
        .map(std::fs::File::from)
        .map_err(|e| io("opening", e.into()))
    };
    let file = open()?;
    let meta = file.metadata().map_err(|e| io("reading", e))?;
    if meta.nlink() > 1 {
        // The partial's name is the destination's file too: a commit by
        // hard link stopped before it dropped this name. That file is
        // finished and stays as it is; the partial starts anew.
        rustix::fs::unlinkat(&place.dir.file, &place.partial, AtFlags::empty())
            .map_err(|e| io("removing", e.into()))?;
        return Ok((open()?, 0));
    }
    let len = meta.len();
    let offset = len.min(durable);
    if len > offset {
        file.set_len(offset).map_err(|e| io("truncating", e))?;
    }
    if offset > 0 {
        std::io::Seek::seek(&mut &file, std::io::SeekFrom::Start(offset))
            .map_err(|e| io("seeking in", e))?;
    }
    Ok((file, offset))
}

#[async_trait]
impl PayloadStore for FsPayloadStore {
    async fn open(
        &self,
        session: &SessionId,
        task: TaskId,
        destination: &Destination,
        resume: &ResumeData,
    ) -> Result<Box<dyn Partial>, StoreError> {
        let place = self
            .place(task, destination, true)?
            .ok_or_else(|| StoreError::new(StoreErrorKind::Io, "no directory to write in"))?;
        let path = place.partial_path();
        let offset = held(&place, resume.durable_offset)?;
        Ok(Box::new(FsPartial {
            file: None,
            opened_at: offset,
            place,
            path,
            written: offset,
            pending: Vec::new(),
            pending_len: 0,
            durable: offset,
            syncing: None,
            failed: None,
            tag: crate::final_move::task_tag(session, task),
        }))
    }

    async fn discard(
        &self,
        _session: &SessionId,
        task: TaskId,
        destination: &Destination,
        _partial: Option<&PartialLocation>,
    ) -> Result<(), StoreError> {
        let Some(place) = self.place(task, destination, false)? else {
            return Ok(());
        };
        remove_partial(place).await
    }
}

#[async_trait]
impl Partial for FsPartial {
    fn offset(&self) -> u64 {
        self.written + self.pending_len as u64
    }

    fn room(&self) -> Option<u64> {
        // Blocks for a moment, as a stat does; asked once per response.
        // The directory's filesystem is the partial's.
        let stats = rustix::fs::fstatvfs(&self.place.dir.file).ok()?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        // Bytes gathered for the next write are counted in the offset
        // already, and take room once written.
        Some(free.saturating_sub(self.pending_len as u64))
    }

    async fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        self.flush().await?;
        let want = buf
            .len()
            .min(usize::try_from(self.written.saturating_sub(at)).unwrap_or(usize::MAX));
        let mut chunk = vec![0u8; want];
        let (n, chunk) = self
            .blocking("reading", move |f| {
                let n = f.read_at(&mut chunk, at)?;
                Ok((n, chunk))
            })
            .await?;
        buf[..n].copy_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        self.pending_len += data.len();
        self.pending.push(data);
        if self.pending_len >= WRITE_BUFFER || self.pending.len() >= WRITE_FRAMES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(u64, PartialLocation), StoreError> {
        self.check_failed()?;
        self.flush().await?;
        if let Some(syncing) = self.syncing.take() {
            self.finish_sync(syncing).await?;
        }
        if !self.place.dir.in_memory {
            self.blocking("syncing", |f| f.sync_data()).await?;
        }
        self.durable = self.written;
        Ok((self.durable, PartialLocation::File(self.path.clone())))
    }

    async fn sync_behind(&mut self) -> Result<(u64, PartialLocation), StoreError> {
        self.check_failed()?;
        self.flush().await?;
        // The flush started last time is waited for if the storage has not
        // finished it yet, so the durable offset trails by one flush at most.
        if let Some(syncing) = self.syncing.take() {
            self.finish_sync(syncing).await?;
        }
        if self.written > self.durable && self.place.dir.in_memory {
            // Memory holds what was written as well as it ever will: a
            // sync there returns at once, so there is none to wait for.
            self.durable = self.written;
        } else if self.written > self.durable {
            let (file, at) = (self.file().await?, self.written);
            self.syncing = Some(tokio::task::spawn_blocking(move || {
                file.sync_data().map(|()| at)
            }));
        }
        Ok((self.durable, PartialLocation::File(self.path.clone())))
    }

    fn durable_update(&mut self) -> Option<(u64, PartialLocation)> {
        use std::future::Future;
        let syncing = self.syncing.as_mut()?;
        if !syncing.is_finished() {
            return None;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let std::task::Poll::Ready(result) = std::pin::Pin::new(syncing).poll(&mut cx) else {
            return None;
        };
        self.syncing = None;
        // A failure is kept by `settle` and reported by the next sync.
        match self.settle(result) {
            Ok(true) => Some((self.durable, PartialLocation::File(self.path.clone()))),
            _ => None,
        }
    }

    async fn commit(mut self: Box<Self>, overwrite: bool) -> Result<(), StoreError> {
        self.check_failed()?;
        let file = self.file().await?;
        let rest = std::mem::take(&mut self.pending);
        let inline = self.place.dir.in_memory && self.pending_len <= IN_MEMORY_INLINE;
        let finish = Finish {
            from: std::mem::take(&mut self.path),
            place: self.place.clone(),
            tag: std::mem::take(&mut self.tag),
            overwrite,
        };
        if inline {
            // A memory copy and a rename, syncs that return at once: less
            // work than a blocking thread's round trip.
            return move_into_place(&file, &rest, &finish);
        }
        // The rest of the bytes, written on the same blocking thread: a small
        // file costs one handoff in all.
        tokio::task::spawn_blocking(move || move_into_place(&file, &rest, &finish))
            .await
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("commit task failed: {e}"),
                )
            })?
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        let place = self.place.clone();
        drop(self);
        remove_partial(place).await
    }
}

/// How a commit ends: which partial goes where, for which task, and
/// whether it may replace what is there.
struct Finish {
    from: PathBuf,
    place: Place,
    tag: String,
    overwrite: bool,
}

/// Writes `rest`, syncs, gives the file its final mode and its task's
/// mark, moves it into place (over what is there only when allowed, see
/// `final_move`) and syncs the directory.
fn move_into_place(
    file: &std::fs::File,
    rest: &[Bytes],
    finish: &Finish,
) -> Result<(), StoreError> {
    let Finish {
        from,
        place,
        tag,
        overwrite,
    } = finish;
    write_all_vectored(file, rest)
        .map_err(|e| StoreError::io(format!("writing {}", from.display()), e))?;
    // In memory (tmpfs, ramfs) the syncs return at once: two system calls
    // per file saved.
    let dir = &place.dir;
    if !dir.in_memory {
        file.sync_data()
            .map_err(|e| StoreError::io(format!("syncing {}", from.display()), e))?;
    }
    // The partial was owner-only while incomplete; the finished file gets
    // the mode any new file of this process would have.
    use std::os::unix::fs::PermissionsExt;
    let set_mode = |mode| {
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| StoreError::io(format!("setting the mode of {}", from.display()), e))
    };
    set_mode(0o666 & !process_umask())?;
    crate::final_move::mark(file, tag);
    let (partial, name) = (&place.partial, &place.name);
    let moved = if *overwrite {
        rustix::fs::renameat(&dir.file, partial, &dir.file, name)
    } else {
        match crate::final_move::rename_no_replace(&dir.file, partial, name) {
            // This task's own earlier commit, which a crash kept from being
            // recorded: this one takes its place.
            Err(Errno::EXIST)
                if crate::final_move::written_by(&dir.file, name, tag) == Some(true) =>
            {
                rustix::fs::renameat(&dir.file, partial, &dir.file, name)
            }
            other => other,
        }
    };
    match moved {
        Ok(()) => {}
        Err(e @ (Errno::EXIST | Errno::ISDIR | Errno::NOTEMPTY)) => {
            // The partial stays, owner-only again: its bytes are the task's
            // resume data, kept for a retry that may overwrite.
            set_mode(0o600)?;
            let what = crate::final_move::what_is_at(&dir.file, name);
            let why = if e == Errno::EXIST && !overwrite {
                "this download did not write it and may not overwrite it"
            } else {
                "only a file is ever replaced"
            };
            return Err(StoreError::new(
                StoreErrorKind::Exists,
                format!(
                    "{} exists; not replaced ({what}: {why})",
                    place.destination().display()
                ),
            ));
        }
        Err(e) => {
            let to = place.destination();
            return Err(StoreError::io(
                format!("moving {} into place", to.display()),
                e.into(),
            ));
        }
    }
    if dir.in_memory {
        return Ok(());
    }
    dir.file
        .sync_all()
        .map_err(|e| StoreError::io(format!("syncing {}", dir.real.display()), e))
}

/// Removes a partial (on a blocking thread); one already gone is fine.
async fn remove_partial(place: Place) -> Result<(), StoreError> {
    tokio::task::spawn_blocking(move || {
        match rustix::fs::unlinkat(&place.dir.file, &place.partial, AtFlags::empty()) {
            Err(rustix::io::Errno::NOENT) => Ok(()),
            r => r.map_err(|e| {
                StoreError::io(
                    format!("removing {}", place.partial_path().display()),
                    e.into(),
                )
            }),
        }
    })
    .await
    .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, format!("remove task: {e}")))?
}

/// Writes every frame at the file's position, in as few calls as the
/// kernel allows.
fn write_all_vectored(mut file: &std::fs::File, frames: &[Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The process's umask, read from `/proc/self/status` (Linux 4.7 and
/// later) once per process; owner-only (0o077) when it cannot be read, the
/// safe side.
fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(read_umask)
}

fn read_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o077)
}
