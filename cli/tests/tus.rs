#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `ferry put --tus` against a tus server no one here wrote: `@tus/server`
//! 2.4.5 with `@tus/file-store` from the npm registry, run with the
//! machine's Node.js on 127.0.0.1 (`testkit/tus`; `.ci/run` installs it, and
//! so does this test when it is missing). A relay in front of it cuts the
//! connection mid-upload; the ferry process is SIGKILLed and run again.
//! The server's stored file must be byte-identical.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{Relay, RelayConfig, body};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

fn tus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/tus")
}

/// Installs the server's npm packages once, if `.ci/run` has not.
fn installed() {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if *done || tus_dir().join("node_modules/@tus/server").is_dir() {
        *done = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(tus_dir())
        .status()
        .expect("npm (Node.js 20.19 or later) is needed to run the tus server");
    assert!(status.success(), "npm ci in testkit/tus failed: {status}");
    *done = true;
}

/// The tus server, killed when dropped.
struct Tus {
    child: Child,
    port: u16,
    store: tempfile::TempDir,
}

impl Tus {
    fn start() -> Tus {
        installed();
        let store = tempfile::tempdir().unwrap();
        let mut child = Command::new("node")
            .arg("server.mjs")
            .arg(store.path())
            .current_dir(tus_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js 20.19 or later) is needed to run the tus server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the tus server said {line:?}"));
        Tus { child, port, store }
    }

    /// The files the server stored (upload data, not its .json info).
    fn stored(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.store.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none())
            .collect();
        files.sort();
        files
    }
}

impl Drop for Tus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn put(home: &Path, file: &Path, url: &str) -> Command {
    let mut c = Command::new(FERRY);
    c.args([
        "put",
        file.to_str().unwrap(),
        url,
        "--tus",
        "--upload-chunk",
        "8M",
    ])
    .env("FERRY_HOME", home);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_land_intact_on_a_tus_server() {
    let tus = Tus::start();
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in [0u64, 1, 3 << 20].into_iter().enumerate() {
        let file = dir.path().join(format!("f{i}.bin"));
        std::fs::write(&file, body::bytes(70 + i as u64, 0, 0..len)).unwrap();
        let url = format!("http://127.0.0.1:{}/files/", tus.port);
        let got = put(&dir.path().join("home"), &file, &url).output().unwrap();
        assert!(got.status.success(), "{len} bytes: {got:?}");
    }
    let stored = tus.stored();
    assert_eq!(stored.len(), 3, "{stored:?}");
    let mut lens: Vec<u64> = stored
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    lens.sort_unstable();
    assert_eq!(lens, [0, 1, 3 << 20]);
    for p in stored {
        let data = std::fs::read(&p).unwrap();
        let seed = (70..73)
            .find(|s| data == body::bytes(*s, 0, 0..data.len() as u64))
            .unwrap_or_else(|| panic!("{} is not one of the files sent", p.display()));
        assert!(seed >= 70);
    }
}

/// Three cuts of the connection, then a SIGKILL, then a run to the end:
/// one upload on the server (never started over), byte-identical, and no
/// more sent again than one append per interruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_killed_a_tus_upload_resumes_and_lands_intact() {
    let tus = Tus::start();
    let len = 48u64 << 20;
    let chunk = 8u64 << 20;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut cuts = Vec::new();
    for _ in 0..3 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        cuts.push((1 << 20) + seed % (len / 2));
    }
    let relay = Relay::start(
        format!("127.0.0.1:{}", tus.port).parse().unwrap(),
        RelayConfig {
            cuts: cuts.clone(),
            rate: Some(24 << 20),
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let file = dir.path().join("big.bin");
    std::fs::write(&file, body::bytes(77, 0, 0..len)).unwrap();
    let url = format!("http://{}/files/", relay.addr());

    let mut child = put(&home, &file, &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let past_cuts = cuts.iter().max().unwrap() + (2 << 20);
    while relay.sent() < past_cuts {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "stuck at {} bytes (cuts at {cuts:?})",
            relay.sent()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let got = put(&home, &file, &url).output().unwrap();
    assert!(got.status.success(), "{got:?}");
    let stored = tus.stored();
    assert_eq!(stored.len(), 1, "one upload, continued: {stored:?}");
    assert!(
        std::fs::read(&stored[0]).unwrap() == body::bytes(77, 0, 0..len),
        "the stored file differs from the source"
    );
    // Request heads are small; what was sent again is at most one append
    // per interruption (three cuts and a kill).
    let again = relay.sent().saturating_sub(len);
    assert!(
        again <= 4 * chunk + (64 << 10),
        "{again} bytes sent again for 4 interruptions"
    );
}
