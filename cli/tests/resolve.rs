#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Names and ports in words: `ferry get` of a host name that does not
//! exist fails in seconds saying so, unless `--retry-dns` asks it to keep
//! trying; a port beyond 16 bits is refused before anything is queued.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{FERRY, ferry, stderr};

/// A fake sysfs root where the machine is on a wired network, so the
/// transfers are admitted whatever this machine's own network is.
fn wired(root: &Path) {
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
         eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
    );
    write("sys/class/net/eth0/uevent", "INTERFACE=eth0\n");
}

fn get(home: &Path, root: &Path, args: &[&str]) -> Child {
    Command::new(FERRY)
        .arg("get")
        .args(args)
        .env("FERRY_HOME", home)
        .env("FERRY_SYSFS_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What an ended child wrote on standard error.
fn said(child: &mut Child) -> String {
    let mut text = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut text).unwrap();
    text
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `.invalid` names never resolve (RFC 6761); the resolver says the name
/// does not exist. Without `--retry-dns` that ends the download at once:
/// a non-zero exit, well before even the first retry's backoff would end,
/// with "cannot resolve HOST".
#[test]
fn a_name_that_does_not_exist_fails_the_get_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let (home, root, out) = (
        dir.path().join("home"),
        dir.path().join("root"),
        dir.path().join("out"),
    );
    wired(&root);
    let mut child = KillOnDrop(get(
        &home,
        &root,
        &[
            "--output-dir",
            out.to_str().unwrap(),
            "http://nonexistent.invalid/x",
        ],
    ));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "ferry get of a name that does not exist is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = said(&mut child.0);
    assert!(!status.success(), "{status}: {text}");
    assert!(
        text.contains("cannot resolve nonexistent.invalid"),
        "{status}: {text}"
    );
}

/// With `--retry-dns` the same download keeps waiting: it backs off and
/// retries, saying why in `ferry ls`, and `ferry get` does not end.
#[test]
fn retry_dns_keeps_waiting_for_a_name_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let (home, root, out) = (
        dir.path().join("home"),
        dir.path().join("root"),
        dir.path().join("out"),
    );
    wired(&root);
    let mut child = KillOnDrop(get(
        &home,
        &root,
        &[
            "--retry-dns",
            "--output-dir",
            out.to_str().unwrap(),
            "http://nonexistent.invalid/x",
        ],
    ));
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "ferry get --retry-dns ended ({status}): {}",
                said(&mut child.0)
            );
        }
        let ls = ferry(&home, &["ls", "--json"]);
        let rows = String::from_utf8_lossy(&ls.stdout).into_owned();
        if rows.contains("retrying") && rows.contains("cannot resolve nonexistent.invalid") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no retry of the name in: {rows}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "ferry get --retry-dns ended while the name does not resolve"
    );
}

/// A port that does not fit in 16 bits is refused in words (it was read
/// as no port, and the download went to port 80), and nothing is queued.
#[test]
fn a_port_beyond_16_bits_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = dir.path().join("out");
    let got = ferry(
        &home,
        &[
            "get",
            "--output-dir",
            out.to_str().unwrap(),
            "http://127.0.0.1:99999/x",
        ],
    );
    let text = stderr(&got);
    assert_eq!(got.status.code(), Some(2), "{text}");
    assert!(text.contains("port 99999 is out of range"), "{text}");
    let ls = ferry(&home, &["ls", "--json"]);
    assert!(
        ls.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
}

/// `--resolve HOST:PORT:ADDR` as curl's: it takes URLs on HOST and PORT to
/// ADDR, and only those (the same host on another port is resolved, and
/// `.invalid` names never resolve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_applies_to_its_host_and_port_only() {
    let dir = tempfile::tempdir().unwrap();
    let (home, root, out) = (
        dir.path().join("home"),
        dir.path().join("root"),
        dir.path().join("out"),
    );
    wired(&root);
    let origin = testkit::Origin::start().await.unwrap();
    origin.resource("/x", testkit::Resource::seeded(7, 1000));
    let port = origin.http_addr().port();
    let other = if port == u16::MAX { port - 1 } else { port + 1 };
    let resolve = format!("origin.invalid:{port}:[::2],127.0.0.1");
    let out_dir = out.to_str().unwrap().to_owned();
    let run = |url: String| {
        let (home, root, resolve, out_dir) =
            (home.clone(), root.clone(), resolve.clone(), out_dir.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(FERRY)
                .args(["get", "--resolve", &resolve, "--output-dir", &out_dir, &url])
                .env("FERRY_HOME", &home)
                .env("FERRY_SYSFS_ROOT", &root)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
    };
    let got = run(format!("http://origin.invalid:{port}/x"))
        .await
        .unwrap();
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(std::fs::read(out.join("x")).unwrap().len(), 1000);
    let got = run(format!("http://origin.invalid:{other}/y"))
        .await
        .unwrap();
    let text = stderr(&got);
    assert!(!got.status.success(), "{text}");
    assert!(text.contains("cannot resolve origin.invalid"), "{text}");
}
