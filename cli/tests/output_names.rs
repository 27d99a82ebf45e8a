#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Files named as curl names them: `-o FILE` for one URL (one per URL, in
//! order), `--output-dir DIR` for all, `-O` accepted; a `-o` naming a
//! directory is refused with a hint.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{FERRY, stderr};
use testkit::{Origin, Resource, body};

/// `ferry ARGS` run in `cwd`, with its state in `cwd/.home`.
async fn ferry_in(cwd: &Path, args: &[&str]) -> Output {
    let (cwd, args) = (
        cwd.to_owned(),
        args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        Command::new(FERRY)
            .args(&args)
            .current_dir(&cwd)
            .env("FERRY_HOME", cwd.join(".home"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn origin() -> Origin {
    let origin = Origin::start().await.unwrap();
    origin.resource("/small.txt", Resource::seeded(61, 1000));
    origin.resource("/other.txt", Resource::seeded(62, 2000));
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o_names_the_file_of_its_url() {
    let origin = origin().await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let got = ferry_in(
        cwd,
        &["get", &origin.http_url("/small.txt"), "-o", "myfile.txt"],
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(std::fs::read(cwd.join("myfile.txt")).unwrap() == body::bytes(61, 0, 0..1000));
    assert!(!cwd.join("small.txt").exists());

    // Two URLs, one -o: the first is named, the second keeps its name,
    // both in --output-dir (made if missing); -O is accepted.
    let got = ferry_in(
        cwd,
        &[
            "get",
            "-O",
            "--output-dir",
            "new/dir",
            &origin.http_url("/small.txt"),
            &origin.http_url("/other.txt"),
            "-o",
            "first.bin",
        ],
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(
        std::fs::read(cwd.join("new/dir/first.bin")).unwrap().len(),
        1000
    );
    assert_eq!(
        std::fs::read(cwd.join("new/dir/other.txt")).unwrap().len(),
        2000
    );

    // An -o file that is there is replaced, as curl replaces it.
    std::fs::write(cwd.join("old.txt"), b"old contents").unwrap();
    let got = ferry_in(
        cwd,
        &["get", &origin.http_url("/other.txt"), "-o", "old.txt"],
    )
    .await;
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(cwd.join("old.txt")).unwrap().len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn o_naming_a_directory_or_too_many_files_is_refused_in_words() {
    let origin = origin().await;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::create_dir(cwd.join("downloads")).unwrap();
    let url = origin.http_url("/small.txt");
    let got = ferry_in(cwd, &["get", &url, "-o", "downloads"]).await;
    assert_eq!(got.status.code(), Some(2));
    let said = stderr(&got);
    assert!(
        said.contains("-o downloads is a directory") && said.contains("--output-dir downloads"),
        "{said}"
    );
    let got = ferry_in(cwd, &["get", &url, "-o", "a", "-o", "b"]).await;
    assert_eq!(got.status.code(), Some(2));
    assert!(stderr(&got).contains("2 -o for 1 URL"), "{}", stderr(&got));
    assert!(origin.log().is_empty(), "nothing was fetched");
    assert_eq!(
        std::fs::read_dir(cwd.join("downloads")).unwrap().count(),
        0,
        "nothing was written"
    );
}
