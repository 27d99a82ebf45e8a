#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A damaged state database: every command fails in words (naming the
//! file and `ferry repair`, never a panic), and `ferry repair` sets the
//! damaged file aside and starts a fresh database, after which commands
//! work again.

mod common;

use std::path::Path;

/// Runs ferry with `home` as its state; returns (exit code, stdout, stderr).
fn ferry(home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::ferry(home, args);
    let code = out.status.code().unwrap_or(-1);
    (code, common::stdout(&out), common::stderr(&out))
}

#[test]
fn a_damaged_database_fails_in_words_and_repair_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    for i in 0..3 {
        let url = format!("http://127.0.0.1:9/{i}.bin");
        let (code, _, err) = ferry(&home, &["add", "--output-dir", out.to_str().unwrap(), &url]);
        assert_eq!(code, 0, "{err}");
    }
    let db = home.join("ferry.redb");
    // The file is overwritten with garbage of the same length.
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();

    let (code, _, err) = ferry(&home, &["ls"]);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("ferry repair"), "{err}");

    let (code, said, err) = ferry(&home, &["repair"]);
    assert!(code == 0 || code == 1, "{err}");
    assert!(
        said.contains("kept aside") || said.contains("is kept as"),
        "{said}"
    );
    // The damaged file is kept beside the fresh one, byte for byte.
    let aside: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("damaged"))
        .collect();
    assert_eq!(aside.len(), 1, "{said}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);

    let (code, _, err) = ferry(&home, &["ls"]);
    assert_eq!(code, 0, "the state works again: {err}");
}
