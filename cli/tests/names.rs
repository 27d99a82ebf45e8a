#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Two downloads queued by separate commands under one file name: each
//! lands byte-exact under a name of its own; neither overwrites the other.

mod common;

use testkit::{Origin, Resource};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adds_of_one_name_keep_both_files() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/a/same.bin", Resource::seeded(1, 50_000));
    origin.resource("/b/same.bin", Resource::seeded(2, 60_000));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let ferry = |args: &[&str]| {
        let run = common::ferry(&home, args);
        assert!(
            run.status.success(),
            "ferry {args:?}: {}",
            common::stderr(&run)
        );
    };
    let out_arg = out.to_str().unwrap();
    ferry(&[
        "add",
        "--output-dir",
        out_arg,
        &origin.http_url("/a/same.bin"),
    ]);
    ferry(&[
        "add",
        "--output-dir",
        out_arg,
        &origin.http_url("/b/same.bin"),
    ]);
    ferry(&["run", "--until-idle"]);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["same-1.bin", "same.bin"], "one file lost");
    let a = std::fs::read(out.join("same.bin")).unwrap();
    let b = std::fs::read(out.join("same-1.bin")).unwrap();
    assert_eq!(a, testkit::body::bytes(1, 0, 0..50_000));
    assert_eq!(b, testkit::body::bytes(2, 0, 0..60_000));
}

/// Runs ferry with `home` as its state; returns (success, stdout, stderr).
fn ferry_in(home: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = common::ferry(home, args);
    (
        out.status.success(),
        common::stdout(&out),
        common::stderr(&out),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_put_in_a_queued_download_s_place_is_never_replaced() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/x.bin", Resource::seeded(3, 40_000));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let out_arg = out.to_str().unwrap();
    let url = origin.http_url("/x.bin");
    let (ok, _, err) = ferry_in(&home, &["add", "--output-dir", out_arg, &url]);
    assert!(ok, "{err}");
    // Somebody else's file appears under the name before the download ends.
    std::fs::write(out.join("x.bin"), b"theirs").unwrap();
    let (_, _, err) = ferry_in(&home, &["run", "--until-idle"]);
    assert!(err.contains("exists; not replaced"), "{err}");
    assert_eq!(std::fs::read(out.join("x.bin")).unwrap(), b"theirs");
    // Nothing of the failed download is left beside it.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["x.bin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_again_says_done_only_for_the_file_its_task_wrote() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/y.bin", Resource::seeded(4, 30_000));
    let dir = tempfile::tempdir().unwrap();
    let (home, out) = (dir.path().join("home"), dir.path().join("out"));
    let out_arg = out.to_str().unwrap();
    let url = origin.http_url("/y.bin");
    let (ok, _, err) = ferry_in(&home, &["get", "--output-dir", out_arg, &url]);
    assert!(ok, "{err}");
    let body = testkit::body::bytes(4, 0, 0..30_000);
    assert_eq!(std::fs::read(out.join("y.bin")).unwrap(), body);
    // Run again: the task's own file is there, nothing is fetched.
    let asked = origin.log().len();
    let (ok, _, err) = ferry_in(&home, &["get", "--output-dir", out_arg, &url]);
    assert!(ok, "{err}");
    assert_eq!(
        origin.log().len(),
        asked,
        "a finished download was fetched again"
    );
    // Replaced by another file of the same name: not the task's any more.
    // The download is done again, beside it; the other file stays.
    std::fs::remove_file(out.join("y.bin")).unwrap();
    std::fs::write(out.join("y.bin"), b"edited").unwrap();
    let (ok, _, err) = ferry_in(&home, &["get", "--output-dir", out_arg, &url]);
    assert!(ok, "{err}");
    assert!(
        origin.log().len() > asked,
        "the replaced file was called done"
    );
    assert_eq!(std::fs::read(out.join("y.bin")).unwrap(), b"edited");
    assert_eq!(std::fs::read(out.join("y-1.bin")).unwrap(), body);
    // --overwrite replaces it.
    let (ok, _, err) = ferry_in(
        &home,
        &["get", "--overwrite", "--output-dir", out_arg, &url],
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(out.join("y.bin")).unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_directory_swapped_for_a_symlink_is_not_written_through() {
    let origin = Origin::start().await.unwrap();
    origin.resource("/z.bin", Resource::seeded(5, 10_000));
    let dir = tempfile::tempdir().unwrap();
    let (home, out, elsewhere) = (
        dir.path().join("home"),
        dir.path().join("out"),
        dir.path().join("elsewhere"),
    );
    let (ok, _, err) = ferry_in(
        &home,
        &[
            "add",
            "--output-dir",
            out.to_str().unwrap(),
            &origin.http_url("/z.bin"),
        ],
    );
    assert!(ok, "{err}");
    // After the add, the directory becomes a symlink to another place.
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::remove_dir(&out).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
    let (_, _, err) = ferry_in(&home, &["run", "--until-idle"]);
    assert!(err.contains("not written through"), "{err}");
    let written: Vec<_> = std::fs::read_dir(&elsewhere).unwrap().collect();
    assert!(
        written.is_empty(),
        "written through the symlink: {written:?}"
    );
}
