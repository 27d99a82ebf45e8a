//! A damaged state database: real database files with bytes flipped or cut
//! short. Opening one never panics and never loads a wrong record: it opens
//! whole, or fails with an error that names the file and says what to do.
//! One record that does not decode is set aside and reported, not fatal to
//! the others. A repair salvages what still reads into a fresh database and
//! keeps the damaged file aside as it was.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::AssertUnwindSafe;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use store_fs::{DATABASE_FILE, FsTaskStore, RepairReport};
use transfer_core::{EntryKind, SessionId, StoreErrorKind, TaskRecord, TaskStore};

const RECORDS: u64 = 60;

fn session() -> SessionId {
    SessionId::new("damaged").unwrap()
}

fn record(i: u64) -> TaskRecord {
    testkit::conformance::record(i, &format!("a label long enough to fill pages {i:04}"))
}

/// A database of [`RECORDS`] records, as bytes.
fn good_database() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    {
        let store = FsTaskStore::open(dir.path()).unwrap();
        rt.block_on(async {
            for i in 0..RECORDS {
                store.save(&session(), vec![record(i)]).await.unwrap();
            }
        });
    }
    std::fs::read(dir.path().join(DATABASE_FILE)).unwrap()
}

/// What opening and loading `bytes` as the database gives: `Ok` with the
/// records loaded, or the error; `Err` with the panic's message if it panicked.
fn open_and_load(
    bytes: &[u8],
) -> Result<Result<Vec<TaskRecord>, transfer_core::StoreError>, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATABASE_FILE), bytes).unwrap();
    let path = dir.path().to_owned();
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = FsTaskStore::open(&path)?;
        let mut records = rt.block_on(store.load(&session()))?.records;
        records.sort_by_key(|r| r.id);
        Ok(records)
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// What is wrong with an outcome, if anything. Allowed: every record,
/// exactly; or an error that says the database is damaged, names it and
/// says what to do.
fn wrong(
    outcome: Result<Result<Vec<TaskRecord>, transfer_core::StoreError>, String>,
) -> Option<String> {
    match outcome {
        Err(panic) => Some(format!("panicked: {panic}")),
        Ok(Ok(records)) => {
            let want: Vec<TaskRecord> = (0..RECORDS).map(record).collect();
            (records != want).then(|| {
                let bad = (0..RECORDS)
                    .filter(|&i| records.iter().find(|r| r.id.as_u64() == i) != Some(&record(i)))
                    .count();
                format!(
                    "loaded {} records, {bad} missing or wrong, without an error",
                    records.len()
                )
            })
        }
        Ok(Err(e)) => {
            let text = e.to_string();
            if e.kind() != StoreErrorKind::Corrupt {
                Some(format!("{:?}, not Corrupt: {text}", e.kind()))
            } else if !text.contains(DATABASE_FILE) {
                Some(format!("names no file: {text}"))
            } else if !text.contains("ferry repair") {
                Some(format!("says nothing to do: {text}"))
            } else {
                None
            }
        }
    }
}

/// Fails with every case that went wrong.
fn check_all(cases: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let mut failures = Vec::new();
    let mut n = 0;
    for (what, bytes) in cases {
        n += 1;
        if let Some(w) = wrong(open_and_load(&bytes)) {
            failures.push(format!("{what}: {w}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0x5a;
    b
}

#[test]
fn flipped_bytes_never_panic_nor_load_wrong_records() {
    let good = good_database();
    // A byte in every 509 of the file, at offsets that move through the pages.
    check_all(
        (0..good.len())
            .step_by(509)
            .map(|at| (format!("byte {at} flipped"), flip(&good, at))),
    );
}

#[test]
fn a_truncated_database_never_panics() {
    let good = good_database();
    let lens = [
        good.len() - 1,
        good.len() - 4096,
        good.len() / 2,
        4096,
        512,
        17,
    ];
    check_all(lens.map(|len| (format!("cut to {len} bytes"), good[..len].to_vec())));
}

/// Overwrites the stored bytes of one record, as a bug or a newer version
/// of Ferry might have written them.
fn overwrite_record(dir: &Path, id: u64, bytes: &[u8]) {
    const TABLE: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("records");
    let db = redb::Database::create(dir.join(DATABASE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(TABLE)
        .unwrap()
        .insert((session().as_str(), id), bytes)
        .unwrap();
    txn.commit().unwrap();
}

async fn store_of_four(dir: &Path) {
    let store = FsTaskStore::open(dir).unwrap();
    store
        .save(&session(), (0..4).map(record).collect())
        .await
        .unwrap();
}

const BROKEN: &[u8] = b"{\"version\":1,\"data\":{\"id\":";

#[tokio::test]
async fn one_undecodable_record_is_set_aside_and_the_others_load() {
    let dir = tempfile::tempdir().unwrap();
    store_of_four(dir.path()).await;
    overwrite_record(dir.path(), 1, BROKEN);
    // A record of task 3 stored under task 2's id is not task 2's.
    overwrite_record(dir.path(), 2, &record(3).encode());
    let store = FsTaskStore::open(dir.path()).unwrap();
    let snapshot = store.load(&session()).await.unwrap();
    let ids: Vec<u64> = snapshot.records.iter().map(|r| r.id.as_u64()).collect();
    assert_eq!(ids, [0, 3]);
    let aside = store.quarantined(&session()).await.unwrap();
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert_eq!((aside[0].kind, aside[0].id), (EntryKind::Record, 1));
    assert!(
        aside[0].reason.contains("EOF while parsing"),
        "{}",
        aside[0]
    );
    assert_eq!((aside[1].kind, aside[1].id), (EntryKind::Record, 2));
    assert!(
        aside[1].reason.contains("stored under another id"),
        "{}",
        aside[1]
    );
    // Set aside, not removed: still there for a newer version or a repair.
    drop(store);
    let store = FsTaskStore::open(dir.path()).unwrap();
    assert_eq!(store.quarantined(&session()).await.unwrap().len(), 2);
    assert_eq!(store.sessions().await.unwrap(), [session()]);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The files a repair leaves: the fresh database and the one set aside,
/// both owner-only, the latter holding `before` exactly.
fn check_files(report: &RepairReport, before: &[u8]) {
    let aside = report.set_aside.as_ref().expect("the old database is kept");
    assert_eq!(
        std::fs::read(aside).unwrap(),
        before,
        "kept aside as it was"
    );
    let name = aside.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("ferry.redb.damaged-20"), "{name}");
    assert_eq!(mode(aside), 0o600);
    assert_eq!(mode(&report.database), 0o600);
    let dir = report.database.parent().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [DATABASE_FILE.to_owned(), name],
        "no scratch file is left"
    );
}

#[tokio::test]
async fn a_repair_keeps_every_record_that_decodes_and_reports_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    store_of_four(dir.path()).await;
    overwrite_record(dir.path(), 1, BROKEN);
    let before = std::fs::read(dir.path().join(DATABASE_FILE)).unwrap();
    let report = FsTaskStore::repair(dir.path()).unwrap();
    assert!(report.was_sound, "{report}");
    assert_eq!((report.records, report.completions), (3, 0), "{report}");
    assert_eq!(report.sessions, [session()]);
    assert_eq!(report.lost.len(), 1, "{report}");
    assert_eq!(report.lost[0].key, Some(("damaged".to_owned(), 1)));
    let text = report.to_string();
    assert!(
        text.contains("kept 3 task records and 0 completions"),
        "{text}"
    );
    assert!(
        text.contains("task record 0000000000000001 of damaged"),
        "{text}"
    );
    check_files(&report, &before);

    let store = FsTaskStore::open(dir.path()).unwrap();
    let loaded = store.load(&session()).await.unwrap().records;
    assert_eq!(loaded, [record(0), record(2), record(3)]);
    assert!(store.quarantined(&session()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_repair_is_refused_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsTaskStore::open(dir.path()).unwrap();
    let err = FsTaskStore::repair(dir.path()).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("stop it, then repair"), "{err}");
    drop(store);
    let report = FsTaskStore::repair(dir.path()).unwrap();
    assert_eq!(report.records, 0);
    assert!(report.lost.is_empty(), "{report}");
}

#[test]
fn a_repair_without_a_database_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let report = FsTaskStore::repair(dir.path()).unwrap();
    assert_eq!(report.set_aside, None);
    assert!(report.to_string().contains("nothing to repair"), "{report}");
    assert!(!dir.path().join(DATABASE_FILE).exists());
}

/// Repairs `bytes` as the database: what it kept, checked against the
/// originals, and the fresh database opened and loaded.
fn repair_of(bytes: &[u8]) -> Result<(RepairReport, Vec<TaskRecord>), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATABASE_FILE), bytes).unwrap();
    let report = FsTaskStore::repair(dir.path()).map_err(|e| format!("repair failed: {e}"))?;
    check_files(&report, bytes);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = FsTaskStore::open(dir.path()).map_err(|e| format!("reopening: {e}"))?;
    let records = rt
        .block_on(store.load(&session()))
        .map_err(|e| format!("loading: {e}"))?
        .records;
    if records.len() != report.records {
        return Err(format!(
            "{} loaded, {} reported",
            records.len(),
            report.records
        ));
    }
    let altered = records
        .iter()
        .filter(|r| **r != record(r.id.as_u64()))
        .count();
    if altered > 0 && report.was_sound {
        return Err(format!(
            "{altered} records altered in a database called sound"
        ));
    }
    if report.was_sound && records.len() as u64 != RECORDS {
        return Err(format!(
            "sound, yet {} of {RECORDS} records kept",
            records.len()
        ));
    }
    Ok((report, records))
}

/// Every damaged database of the tests above repairs: the fresh one opens
/// and loads, the old one is kept as it was, and most records come back.
#[test]
fn damaged_databases_are_repaired() {
    let good = good_database();
    let mut cases: Vec<(String, Vec<u8>)> = (0..good.len())
        .step_by(509)
        .map(|at| (format!("byte {at} flipped"), flip(&good, at)))
        .collect();
    for len in [good.len() - 1, good.len() - 4096, good.len() / 2, 4096, 17] {
        cases.push((format!("cut to {len} bytes"), good[..len].to_vec()));
    }
    let (mut failures, mut kept, mut unsound) = (Vec::new(), 0, 0);
    for (what, bytes) in &cases {
        match std::panic::catch_unwind(AssertUnwindSafe(|| repair_of(bytes))) {
            Ok(Ok((report, records))) => {
                kept += records.len();
                unsound += usize::from(!report.was_sound);
            }
            Ok(Err(e)) => failures.push(format!("{what}: {e}")),
            Err(_) => failures.push(format!("{what}: panicked")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(unsound > 0, "no case was damaged");
    // Cut short by half or more, a database keeps little; flipped bytes
    // cost a record or a page.
    let most = (cases.len() - 3) * RECORDS as usize * 9 / 10;
    assert!(
        kept >= most,
        "{kept} records kept in all, fewer than {most}"
    );
}
