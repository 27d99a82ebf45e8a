#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A download never replaces a file it did not write unless its task may
//! overwrite: one that finds its destination taken fails at once, in
//! words, and the file there stays as it was.

mod common;

use common::{Fixture, Proto, failed_with, wait};
use testkit::{Resource, body};
use transfer_core::{Destination, ErrorKind, Outcome, TaskSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_onto_a_taken_name_fails_and_the_file_stays() {
    let f = Fixture::new(Proto::H1).await;
    f.origin
        .resource("/a/same.bin", Resource::seeded(1, 70_000));
    f.origin
        .resource("/b/same.bin", Resource::seeded(2, 50_000));
    let s = f.session().await;
    let spec = |path: &str, overwrite: bool| {
        TaskSpec::download(&f.url(path), Destination::Path("same.bin".into()))
            .overwrite(overwrite)
            .build()
            .unwrap()
    };

    let a = s.enqueue(spec("/a/same.bin", false), true).await.unwrap();
    assert_eq!(wait(&a).await, Outcome::Completed { bytes: 70_000 });

    // Another task, another source, the same name: refused, once, and the
    // first task's file is untouched.
    let b = s.enqueue(spec("/b/same.bin", false), true).await.unwrap();
    let outcome = wait(&b).await;
    assert_eq!(failed_with(&outcome), ErrorKind::DestinationExists);
    let Outcome::Failed { error, .. } = &outcome else {
        unreachable!()
    };
    let named = format!("{} exists; not replaced", f.out.join("same.bin").display());
    assert!(error.to_string().contains(&named), "{error}");
    assert_eq!(f.file("same.bin").unwrap(), body::bytes(1, 0, 0..70_000));
    let asked: Vec<_> = f
        .origin
        .log()
        .into_iter()
        .filter(|e| e.path == "/b/same.bin")
        .collect();
    assert_eq!(asked.len(), 1, "a taken destination is not retried");

    // Allowed to overwrite, a third task replaces it.
    let c = s.enqueue(spec("/b/same.bin", true), true).await.unwrap();
    assert_eq!(wait(&c).await, Outcome::Completed { bytes: 50_000 });
    assert_eq!(f.file("same.bin").unwrap(), body::bytes(2, 0, 0..50_000));
    s.shutdown().await;
}
