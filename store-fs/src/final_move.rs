//! The final move of a finished partial into place, never over what is
//! already there unless the task asks: a destination may hold a file the
//! user made, another task's download, or a symlink or a directory someone
//! planted, and none of them is this download's to replace.
//!
//! Taking the name is atomic, so a second process committing to the same
//! name at the same moment loses cleanly: `renameat2(RENAME_NOREPLACE)`;
//! where the filesystem or the kernel lacks it (`EINVAL`, `ENOSYS`: NFS,
//! some FUSE filesystems, old kernels, seccomp filters), a hard link of the
//! partial to the name, which fails as well on a name that exists, then an
//! unlink of the partial; where hard links are missing too (`EPERM`: FAT),
//! the name is taken by an exclusive create and the partial renamed over
//! that placeholder. Each fails with `EEXIST` rather than replace anything.
//!
//! The one thing a commit replaces unasked is the same task's own earlier
//! commit, which a crash kept from being recorded (the rerun downloads
//! again and commits again): every finished file carries the extended
//! attribute [`TASK_ATTRIBUTE`] naming its session and task, where the
//! filesystem keeps user attributes, and a regular file at the destination
//! that names the committing task is that earlier commit. Where attributes
//! are not kept, the rerun fails with the destination named instead: the
//! safe side.

use std::ffi::OsStr;
use std::fs::File;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, XattrFlags};
use rustix::io::Errno;

/// The extended attribute naming the session and task that wrote a file
/// (`SESSION/TASK`).
pub(crate) const TASK_ATTRIBUTE: &str = "user.ferry.task";

/// The value of [`TASK_ATTRIBUTE`] for a task of a session.
pub(crate) fn task_tag(session: &transfer_core::SessionId, task: transfer_core::TaskId) -> String {
    format!("{session}/{task}")
}

/// A way of taking a name without replacing what holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// `renameat2(RENAME_NOREPLACE)`.
    Rename,
    /// `linkat` to the name, then `unlinkat` of the partial.
    Link,
    /// An exclusive create of the name, then a rename over it.
    Placeholder,
}

impl Strategy {
    /// Every strategy, in the order they are tried.
    pub(crate) const ALL: [Strategy; 3] = [Strategy::Rename, Strategy::Link, Strategy::Placeholder];

    /// Moves `from` to `to`, both in `dir`, failing with `EEXIST` if `to` exists.
    pub(crate) fn take(self, dir: &File, from: &OsStr, to: &OsStr) -> rustix::io::Result<()> {
        match self {
            Strategy::Rename => {
                rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE)
            }
            Strategy::Link => {
                rustix::fs::linkat(dir, from, dir, to, AtFlags::empty())?;
                // The payload is in place under both names; the partial's
                // name is all that is left to drop. Failing that, it is in
                // the way of nothing: the commit stands.
                if let Err(e) = rustix::fs::unlinkat(dir, from, AtFlags::empty())
                    && e != Errno::NOENT
                {
                    tracing::warn!(partial = ?from, error = %e, "a committed partial's name stays");
                }
                Ok(())
            }
            Strategy::Placeholder => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                drop(rustix::fs::openat(
                    dir,
                    to,
                    flags,
                    Mode::from_raw_mode(0o600),
                )?);
                rustix::fs::renameat(dir, from, dir, to).inspect_err(|_| {
                    let _ = rustix::fs::unlinkat(dir, to, AtFlags::empty());
                })
            }
        }
    }

    /// Whether `e` says this filesystem or kernel cannot take a name this way.
    fn unsupported(self, e: Errno) -> bool {
        match self {
            Strategy::Rename => matches!(e, Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP),
            Strategy::Link => matches!(e, Errno::PERM | Errno::OPNOTSUPP | Errno::NOSYS),
            Strategy::Placeholder => false,
        }
    }
}

/// Moves `from` to `to`, both in `dir`, unless `to` exists (then
/// `EEXIST`), with the first [`Strategy`] the filesystem supports.
pub(crate) fn rename_no_replace(dir: &File, from: &OsStr, to: &OsStr) -> rustix::io::Result<()> {
    let mut last = Errno::NOSYS;
    for strategy in Strategy::ALL {
        match strategy.take(dir, from, to) {
            Err(e) if strategy.unsupported(e) => last = e,
            done => return done,
        }
    }
    Err(last)
}

/// Marks `file` as written by the task `tag` names. Best effort: a
/// filesystem without user attributes keeps no mark, and a commit then
/// cannot tell its own earlier file from another's (it keeps both).
pub(crate) fn mark(file: &File, tag: &str) {
    if let Err(e) = rustix::fs::fsetxattr(file, TASK_ATTRIBUTE, tag.as_bytes(), XattrFlags::empty())
    {
        tracing::trace!(error = %e, "no task attribute on the finished file");
    }
}

/// Whether `name` in `dir` is a regular file marked as written by the task
/// `tag` names: `None` when the filesystem keeps no user attributes, so no
/// file there carries a mark. Never follows a symlink, and opens only a
/// regular file.
pub(crate) fn written_by(dir: &File, name: &OsStr, tag: &str) -> Option<bool> {
    let Ok(seen) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return Some(false);
    };
    if FileType::from_raw_mode(seen.st_mode) != FileType::RegularFile {
        return Some(false);
    }
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) else {
        return Some(false);
    };
    // Still the file looked at (not one swapped in meanwhile).
    if !rustix::fs::fstat(&fd).is_ok_and(|st| (st.st_dev, st.st_ino) == (seen.st_dev, seen.st_ino))
    {
        return Some(false);
    }
    let mut value = [0u8; 256];
    match rustix::fs::fgetxattr(&fd, TASK_ATTRIBUTE, &mut value[..]) {
        Ok(n) => Some(value.get(..n) == Some(tag.as_bytes())),
        Err(Errno::OPNOTSUPP) => None,
        Err(_) => Some(false),
    }
}

/// What is at `name` in `dir`, in words, for an error.
pub(crate) fn what_is_at(dir: &File, name: &OsStr) -> &'static str {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode))
    {
        Ok(FileType::RegularFile) => "a file",
        Ok(FileType::Directory) => "a directory",
        Ok(FileType::Symlink) => "a symbolic link",
        Ok(_) => "a special file",
        Err(_) => "something",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &std::path::Path) -> File {
        File::open(path).unwrap()
    }

    /// Every strategy, whichever the filesystem here supports (tmpfs and
    /// the usual disks support all three): moves onto a free name, and
    /// refuses a name that is taken, leaving both files as they were.
    #[test]
    fn every_strategy_takes_a_free_name_and_refuses_a_taken_one() {
        for strategy in Strategy::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let d = dir(tmp.path());
            std::fs::write(tmp.path().join("partial"), b"new").unwrap();
            std::fs::write(tmp.path().join("taken"), b"old").unwrap();
            let refused = strategy.take(&d, OsStr::new("partial"), OsStr::new("taken"));
            assert_eq!(refused, Err(Errno::EXIST), "{strategy:?}");
            assert_eq!(std::fs::read(tmp.path().join("taken")).unwrap(), b"old");
            assert_eq!(std::fs::read(tmp.path().join("partial")).unwrap(), b"new");

            strategy
                .take(&d, OsStr::new("partial"), OsStr::new("free"))
                .unwrap();
            assert_eq!(std::fs::read(tmp.path().join("free")).unwrap(), b"new");
            assert!(!tmp.path().join("partial").exists(), "{strategy:?}");

            // A symlink, even a dangling one, is a name taken: not followed.
            std::fs::write(tmp.path().join("partial"), b"new").unwrap();
            std::os::unix::fs::symlink(tmp.path().join("nowhere"), tmp.path().join("link"))
                .unwrap();
            let refused = strategy.take(&d, OsStr::new("partial"), OsStr::new("link"));
            assert_eq!(refused, Err(Errno::EXIST), "{strategy:?}");
            assert!(!tmp.path().join("nowhere").exists(), "{strategy:?}");
        }
    }

    #[test]
    fn only_a_regular_file_with_the_tasks_mark_is_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dir(tmp.path());
        let path = tmp.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        if written_by(&d, OsStr::new("f"), "s/1").is_none() {
            return; // this filesystem keeps no user attributes
        }
        assert_eq!(
            written_by(&d, OsStr::new("f"), "s/1"),
            Some(false),
            "no mark"
        );
        mark(&File::open(&path).unwrap(), "s/1");
        assert_eq!(written_by(&d, OsStr::new("f"), "s/1"), Some(true));
        assert_eq!(
            written_by(&d, OsStr::new("f"), "s/2"),
            Some(false),
            "another task"
        );
        assert_eq!(
            written_by(&d, OsStr::new("f"), "s/10"),
            Some(false),
            "a prefix is not a match"
        );
        std::os::unix::fs::symlink(&path, tmp.path().join("l")).unwrap();
        assert_eq!(
            written_by(&d, OsStr::new("l"), "s/1"),
            Some(false),
            "a symlink to it"
        );
        assert_eq!(
            written_by(&d, OsStr::new("none"), "s/1"),
            Some(false),
            "no file"
        );
        assert_eq!(what_is_at(&d, OsStr::new("l")), "a symbolic link");
        assert_eq!(what_is_at(&d, OsStr::new("f")), "a file");
    }
}
