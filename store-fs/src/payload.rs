//! Partial payloads as files beside their destinations: created owner-only,
//! cut back to the durable offset on open, `sync_data` at checkpoints, renamed
//! into place with the directory synced. Nothing is written outside the root
//! directory the store was given.

use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use transfer_core::{
    Destination, Partial, PartialLocation, PayloadStore, ResumeData, SessionId, StoreError,
    StoreErrorKind, TaskId,
};

pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))
}

/// A [`PayloadStore`] writing files under one root directory.
#[derive(Clone, Debug)]
pub struct FsPayloadStore {
    root: PathBuf,
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
        Ok(FsPayloadStore { root })
    }

    /// The directory everything is written under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a destination to a path inside the root, creating its parent
    /// directories. Relative paths are taken from the root; `..` components,
    /// and symlinks that lead out of the root, are refused.
    pub fn resolve(&self, destination: &Destination) -> Result<PathBuf, StoreError> {
        self.locate(destination, true)
    }

    /// Confines `destination` to the root; creates its parent directories
    /// only when `create` (a missing parent then holds nothing to find).
    fn locate(&self, destination: &Destination, create: bool) -> Result<PathBuf, StoreError> {
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
        if create {
            std::fs::create_dir_all(parent)
                .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))?;
        } else if !parent.exists() {
            return Ok(joined);
        }
        let real_parent = parent
            .canonicalize()
            .map_err(|e| StoreError::io(format!("resolving {}", parent.display()), e))?;
        if !real_parent.starts_with(&self.root) {
            return Err(outside());
        }
        let path = real_parent.join(name);
        if path.is_symlink() {
            return Err(outside());
        }
        Ok(path)
    }

    fn partial_path(
        &self,
        task: TaskId,
        destination: &Destination,
        create: bool,
    ) -> Result<(PathBuf, PathBuf), StoreError> {
        let dest = self.locate(destination, create)?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = dest.with_file_name(format!(".{name}.{task}.partial"));
        Ok((dest, partial))
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
#[derive(Debug)]
pub struct FsPartial {
    file: Arc<std::fs::File>,
    path: PathBuf,
    destination: PathBuf,
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

    /// Runs `f` on the file on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&std::fs::File) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || f(&file))
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, format!("{what} task: {e}")))?
            .map_err(|e| StoreError::io(format!("{what} {}", self.path.display()), e))
    }
}

#[async_trait]
impl PayloadStore for FsPayloadStore {
    async fn open(
        &self,
        _session: &SessionId,
        task: TaskId,
        destination: &Destination,
        resume: &ResumeData,
    ) -> Result<Box<dyn Partial>, StoreError> {
        let (dest, path) = self.partial_path(task, destination, true)?;
        let opened = path.clone();
        let durable = resume.durable_offset;
        let (file, offset) = tokio::task::spawn_blocking(move || {
            let io = |what: &str, e| StoreError::io(format!("{what} {}", opened.display()), e);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                // Never open a partial through a symlink someone planted.
                .custom_flags(libc::O_NOFOLLOW)
                .open(&opened)
                .map_err(|e| io("opening", e))?;
            let len = file.metadata().map_err(|e| io("reading", e))?.len();
            let offset = len.min(durable);
            if len > offset {
                file.set_len(offset).map_err(|e| io("truncating", e))?;
            }
            std::io::Seek::seek(&mut &file, std::io::SeekFrom::Start(offset))
                .map_err(|e| io("seeking in", e))?;
            Ok::<_, StoreError>((file, offset))
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Unavailable, format!("open task: {e}")))??;
        Ok(Box::new(FsPartial {
            file: Arc::new(file),
            path,
            destination: dest,
            written: offset,
            pending: Vec::new(),
            pending_len: 0,
            durable: offset,
            syncing: None,
            failed: None,
        }))
    }

    async fn discard(
        &self,
        _session: &SessionId,
        task: TaskId,
        destination: &Destination,
        _partial: Option<&PartialLocation>,
    ) -> Result<(), StoreError> {
        let (_, path) = self.partial_path(task, destination, false)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io(format!("removing {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Partial for FsPartial {
    fn offset(&self) -> u64 {
        self.written + self.pending_len as u64
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
        self.blocking("syncing", |f| f.sync_data()).await?;
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
        if self.written > self.durable {
            let (file, at) = (self.file.clone(), self.written);
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

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.check_failed()?;
        let (from, to) = (self.path.clone(), self.destination.clone());
        let file = self.file.clone();
        // The rest of the bytes, written on the same blocking thread: a small
        // file costs one handoff in all.
        let rest = std::mem::take(&mut self.pending);
        tokio::task::spawn_blocking(move || {
            write_all_vectored(&file, &rest)
                .map_err(|e| StoreError::io(format!("writing {}", from.display()), e))?;
            file.sync_data()
                .map_err(|e| StoreError::io(format!("syncing {}", from.display()), e))?;
            // The partial was owner-only while incomplete; the finished file
            // gets the mode any new file of this process would have.
            use std::os::unix::fs::PermissionsExt;
            let mode = 0o666 & !process_umask();
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| {
                    StoreError::io(format!("setting the mode of {}", from.display()), e)
                })?;
            std::fs::rename(&from, &to)
                .map_err(|e| StoreError::io(format!("moving {} into place", to.display()), e))?;
            if let Some(dir) = to.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| {
            StoreError::new(
                StoreErrorKind::Unavailable,
                format!("commit task failed: {e}"),
            )
        })?
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        let path = self.path.clone();
        drop(self);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))
    }
}

/// The process's umask, read from `/proc/self/status` (Linux 4.7 and
/// later); owner-only (0o077) when it cannot be read, the safe side.
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

/// Read once per process.
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
