#![allow(dead_code)] // each test file uses some of these
//! Running the `ferry` binary the way a user does, with its own state.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub(crate) const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Runs `ferry ARGS` with `home` as its state directory and nothing on
/// standard input, to its end.
pub(crate) fn ferry(home: &Path, args: &[&str]) -> Output {
    Command::new(FERRY)
        .args(args)
        .env("FERRY_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Standard error, as text.
pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Standard output, as text.
pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// [`ferry`] from async code: on a blocking thread, so the test's origin
/// keeps serving meanwhile.
pub(crate) async fn ferry_blocking(home: &Path, args: &[&str]) -> Output {
    let home = home.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ferry(&home, &args)
    })
    .await
    .unwrap()
}
