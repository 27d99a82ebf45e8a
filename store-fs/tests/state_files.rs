//! State files are the user's alone: the database is created owner-only
//! whatever the mode of the directory it goes in (a URL with a `?token=`
//! in a record must not be readable by other users), and a directory open
//! to others is reported.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use store_fs::{DATABASE_FILE, FsTaskStore};

fn mode(path: &Path) -> String {
    format!(
        "{:04o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    )
}

/// Records the messages of warnings and errors logged while it is the
/// thread's subscriber.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    fn during<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
        let warnings = Warnings::default();
        let out = tracing::subscriber::with_default(warnings.clone(), f);
        let seen = warnings.0.lock().unwrap().clone();
        (out, seen)
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn the_database_is_owner_only_in_a_directory_open_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ferry");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (store, warnings) = Warnings::during(|| FsTaskStore::open(&home).unwrap());
    drop(store);
    assert_eq!(mode(&home.join(DATABASE_FILE)), "0600", "a new database");
    assert_eq!(mode(&home), "0755", "the user's directory is left as it is");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(&home.display().to_string())
            && warnings[0].contains("0755")
            && warnings[0].contains("open to other users"),
        "{warnings:?}"
    );
}

#[test]
fn a_directory_made_by_the_store_is_owner_only_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("new/ferry");
    let (store, warnings) = Warnings::during(|| FsTaskStore::open(&home).unwrap());
    drop(store);
    assert_eq!(mode(&home), "0700");
    assert_eq!(mode(&home.join(DATABASE_FILE)), "0600");
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// A database an older version left readable by others is tightened.
#[tokio::test]
async fn an_existing_database_open_to_others_is_made_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let session = transfer_core::SessionId::new("s").unwrap();
    {
        let store = FsTaskStore::open(dir.path()).unwrap();
        let record = testkit::conformance::record(1, "https://h/x?token=secret");
        transfer_core::TaskStore::save(&store, &session, vec![record])
            .await
            .unwrap();
    }
    let db = dir.path().join(DATABASE_FILE);
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = FsTaskStore::open(dir.path()).unwrap();
    assert_eq!(mode(&db), "0600");
    let loaded = transfer_core::TaskStore::load(&store, &session)
        .await
        .unwrap();
    assert_eq!(loaded.records.len(), 1, "and it is the same database");
}

/// A symlink planted where the database goes is refused, not followed.
#[test]
fn a_symlink_at_the_database_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ferry");
    std::fs::create_dir(&home).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(&elsewhere, b"someone else's").unwrap();
    std::os::unix::fs::symlink(&elsewhere, home.join(DATABASE_FILE)).unwrap();
    let err = FsTaskStore::open(&home).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"someone else's");
}
