#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! Bodies that would fill the disk: `--max-filesize` refuses a body past
//! it, announced or not, and a body announced larger than the free space
//! fails before a byte is written. Either way the command fails in words
//! and nothing is left in the output directory.

mod common;

use std::path::Path;
use std::process::Command;

use testkit::{Fault, Origin, Resource, Script};

/// Runs ferry with `home` as its state; returns (success, stderr).
fn ferry(home: &Path, args: &[&str]) -> (bool, String) {
    let out = common::ferry(home, args);
    (out.status.success(), common::stderr(&out))
}

/// What is in `dir`.
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_max_filesize_fails_and_leaves_nothing() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/told.bin", Resource::seeded(1, 4 << 20));
    origin.resource("/endless.bin", Resource::seeded(2, 4 << 20));
    // No length: the size shows only as the bytes arrive.
    origin.script("/endless.bin", Script::new().always(Fault::NoLength));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let out_arg = out.to_str().unwrap();
    for path in ["/told.bin", "/endless.bin"] {
        let url = origin.http_url(path);
        let (ok, err) = ferry(
            &home,
            &["get", "--max-filesize", "1M", "--output-dir", out_arg, &url],
        );
        assert!(!ok, "{path}: a body over the limit was accepted");
        assert!(err.contains("body larger than allowed"), "{path}: {err}");
        assert_eq!(names(&out), Vec::<String>::new(), "{path} left something");
    }
    // The same limit on the whole session, from `run`.
    let url = origin.http_url("/endless.bin");
    let (ok, err) = ferry(&home, &["add", "--output-dir", out_arg, &url]);
    assert!(ok, "{err}");
    let (_, err) = ferry(&home, &["run", "--until-idle", "--max-filesize", "1.5M"]);
    assert!(err.contains("body larger than allowed"), "{err}");
    assert_eq!(names(&out), Vec::<String>::new());
    // A limit that comes to nothing is refused before anything is queued.
    let (ok, err) = ferry(
        &home,
        &[
            "add",
            "--max-filesize",
            "0.1",
            "--output-dir",
            out_arg,
            &url,
        ],
    );
    assert!(!ok);
    assert!(err.contains("--max-filesize"), "{err}");
}

/// A small filesystem mounted for one test, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_free_space_fails_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small");
    let Some(_disk) = SmallDisk::mount(&out, "2m") else {
        // Mounting needs root (CI runs as root); say so rather than pass.
        // /proc/self belongs to the process's effective user.
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        assert_ne!(uid, 0, "root could not mount a tmpfs");
        eprintln!("skipped: mounting a small filesystem needs root");
        return;
    };
    let origin = Origin::start().await.unwrap();
    origin.resource("/big.bin", Resource::seeded(3, 4 << 20));
    let home = dir.path().join("home");
    let url = origin.http_url("/big.bin");
    let (ok, err) = ferry(&home, &["get", "--output-dir", out.to_str().unwrap(), &url]);
    assert!(!ok, "a body larger than the disk was accepted");
    assert!(err.contains("needs 4.0 MiB, 2.0 MiB free"), "{err}");
    assert_eq!(names(&out), Vec::<String>::new());
    // Asked once: a body that cannot fit is not retried.
    assert_eq!(origin.log().len(), 1);
}
