//! State files are the user's alone. Records hold URLs, and a URL may hold
//! a `?token=`: the database and every file kept beside it are created
//! owner-only (0600) whatever the mode of the directory they go in and the
//! process's umask, a looser one found there is tightened, and they are
//! never opened through a symlink. A state directory Ferry creates is
//! owner-only too; one that already exists open to others is left as the
//! user made it, with a warning.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use transfer_core::{StoreError, StoreErrorKind};

/// The mode of every state file.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) owner-only if missing; warns when it
/// exists and other users may list or change it.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| StoreError::io(format!("reading {}", dir.display()), e))?
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            directory = %dir.display(),
            mode = format_args!("{:04o}", mode & 0o7777),
            "the state directory is open to other users: its files stay owner-only, \
             but others can see their names{}; `chmod 700` it to close it",
            if mode & 0o022 != 0 { " and replace them" } else { "" },
        );
    }
    Ok(())
}

/// Opens the state file at `path` for reading and writing, creating it
/// owner-only; an existing one must be a regular file (a symlink is
/// refused, not followed) and is made owner-only if it was not.
pub(crate) fn open_file(path: &Path) -> Result<File, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!(
                        "{} is a symbolic link: a state file must be a plain file, not followed",
                        path.display()
                    ),
                )
            } else {
                StoreError::io(format!("opening {}", path.display()), e)
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(StoreError::new(
            StoreErrorKind::Unavailable,
            format!("{} is not a plain file", path.display()),
        ));
    }
    tighten(&file, meta.mode(), path)?;
    Ok(file)
}

/// Makes an open state file owner-only if its mode (`mode`) lets others in.
pub(crate) fn tighten(file: &File, mode: u32, path: &Path) -> Result<(), StoreError> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .map_err(|e| StoreError::io(format!("making {} owner-only", path.display()), e))?;
    tracing::info!(
        file = %path.display(),
        was = format_args!("{:04o}", mode & 0o7777),
        "a state file open to other users is now owner-only"
    );
    Ok(())
}
