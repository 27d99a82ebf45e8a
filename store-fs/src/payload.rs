//! Partial payloads as files beside their destinations: created owner-only,
//! cut back to the durable offset on open, `sync_data` at checkpoints, renamed
//! into place with the directory synced. Nothing is written outside the root
//! directory the store was given.

use std::io::SeekFrom;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
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

/// A partial file being written.
#[derive(Debug)]
pub struct FsPartial {
    file: tokio::fs::File,
    path: PathBuf,
    destination: PathBuf,
    offset: u64,
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
        let io = |what: &str, e| StoreError::io(format!("{what} {}", path.display()), e);
        let std_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // Never open a partial through a symlink someone planted.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        let len = file.metadata().await.map_err(|e| io("reading", e))?.len();
        let offset = len.min(resume.durable_offset);
        if len > offset {
            file.set_len(offset)
                .await
                .map_err(|e| io("truncating", e))?;
        }
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| io("seeking in", e))?;
        Ok(Box::new(FsPartial {
            file,
            path,
            destination: dest,
            offset,
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
        self.offset
    }

    async fn read_at(&mut self, at: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        use std::os::unix::fs::FileExt;
        // Written bytes must be visible to the second handle.
        self.file
            .flush()
            .await
            .map_err(|e| StoreError::io(format!("flushing {}", self.path.display()), e))?;
        let want = buf
            .len()
            .min(usize::try_from(self.offset.saturating_sub(at)).unwrap_or(usize::MAX));
        let path = self.path.clone();
        let mut chunk = vec![0u8; want];
        let (n, chunk) = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path)?;
            let n = f.read_at(&mut chunk, at)?;
            Ok::<_, std::io::Error>((n, chunk))
        })
        .await
        .map_err(|e| StoreError::new(StoreErrorKind::Io, format!("reading back: {e}")))?
        .map_err(|e| StoreError::io(format!("reading {}", self.path.display()), e))?;
        buf[..n].copy_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        let io = |e| StoreError::io(format!("writing {}", self.path.display()), e);
        self.file.write_all(&data).await.map_err(io)?;
        // tokio hands the write to a blocking thread and returns; waiting for
        // it here means a partial dropped after `write` has no write still in
        // flight that could land after the next `open` cut the file.
        self.file.flush().await.map_err(io)?;
        self.offset += data.len() as u64;
        Ok(())
    }

    async fn sync(&mut self) -> Result<(u64, PartialLocation), StoreError> {
        let io = |e| StoreError::io(format!("syncing {}", self.path.display()), e);
        self.file.flush().await.map_err(io)?;
        self.file.sync_data().await.map_err(io)?;
        Ok((self.offset, PartialLocation::File(self.path.clone())))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.sync().await?;
        let (from, to) = (self.path.clone(), self.destination.clone());
        tokio::task::spawn_blocking(move || {
            // The partial was owner-only while incomplete; the finished file
            // gets the mode any new file of this process would have.
            use std::os::unix::fs::PermissionsExt;
            let mode = 0o666 & !process_umask();
            std::fs::set_permissions(&from, std::fs::Permissions::from_mode(mode)).map_err(
                |e| StoreError::io(format!("setting the mode of {}", from.display()), e),
            )?;
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
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o077)
}
