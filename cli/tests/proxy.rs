#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! `ferry get` through real proxies, configured as curl users configure
//! them: `HTTPS_PROXY`/`NO_PROXY` in the environment, `-x URL` on the
//! command line. A download resumes through the proxy after a SIGKILL and
//! after the proxy itself dies mid-body; `ferry ls` says which proxy a task
//! went through and never shows its credentials; a proxy that wants
//! credentials fails the task at once, in words.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{FERRY, ferry, stderr, stdout};
use testkit::{Dante, Fault, Origin, Resource, Script, Squid, body};

/// `ferry get URL -o OUT --cacert ROOT EXTRA` with `env`, as a process.
fn spawn_get(
    home: &Path,
    out: &Path,
    root: &Path,
    url: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let mut c = Command::new(FERRY);
    c.args(["get", url, "--output-dir"])
        .arg(out)
        .arg("--cacert")
        .arg(root)
        .args(extra)
        .env("FERRY_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

async fn finish(child: Child, within: Duration) -> std::process::Output {
    let started = Instant::now();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let out = tokio::time::timeout(within, waited)
        .await
        .expect("ferry get finishes")
        .unwrap();
    eprintln!("ferry get took {:?}", started.elapsed());
    out
}

struct Fixture {
    origin: Origin,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let origin = Origin::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), origin.root_cert_pem()).unwrap();
        Fixture { origin, dir }
    }
    fn home(&self) -> std::path::PathBuf {
        self.dir.path().join("home")
    }
    fn out(&self) -> std::path::PathBuf {
        self.dir.path().join("out")
    }
    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root.pem")
    }
    fn get(&self, url: &str, extra: &[&str], env: &[(&str, &str)]) -> Child {
        spawn_get(&self.home(), &self.out(), &self.root(), url, extra, env)
    }
    /// `ferry ls --json`'s only row.
    fn row(&self) -> serde_json::Value {
        let ls = ferry(&self.home(), &["ls", "--json"]);
        let text = stdout(&ls);
        serde_json::from_str(text.lines().next().expect("a row")).unwrap()
    }
}

fn range_start(range: &Option<String>) -> u64 {
    range.as_deref().map_or(0, |r| {
        r.trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap()
    })
}

/// Every byte under `dir`, as text, for looking for a secret.
fn everything_under(dir: &Path) -> String {
    let mut all = String::new();
    for entry in walk(dir) {
        all.push_str(&String::from_utf8_lossy(&std::fs::read(entry).unwrap()));
    }
    all
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else if p.is_file() {
            files.push(p);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_from_the_environment_carries_the_download_and_ls_says_so() {
    let f = Fixture::new().await;
    f.origin.resource("/e.bin", Resource::seeded(21, 3 << 20));
    let squid = Squid::start(Some(("alice", "hunter2"))).unwrap();
    let url = f.origin.https_url("/e.bin");
    let child = f.get(&url, &[], &[("HTTPS_PROXY", &squid.url())]);
    let out = finish(child, Duration::from_secs(60)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read(f.out().join("e.bin")).unwrap();
    assert!(got == body::bytes(21, 0, 0..3 << 20), "the file is intact");

    let row = f.row();
    assert_eq!(row["proxy"].as_str(), Some(squid.bare_url().as_str()));
    let ls = stdout(&ferry(&f.home(), &["ls"]));
    assert!(ls.contains(&format!("via {}", squid.bare_url())), "{ls}");
    // The proxy's password is nowhere a user or a log can read it.
    for text in [
        ls,
        stdout(&ferry(&f.home(), &["ls", "--json"])),
        stderr(&out),
        stdout(&out),
        everything_under(&f.home()),
    ] {
        assert!(!text.contains("hunter2"), "the password shows: {text}");
    }
    for e in f.origin.log() {
        assert!(!e.headers.contains_key("proxy-authorization"));
    }
}

/// `NO_PROXY` holds: the proxy in the environment is down, and a host it
/// excludes is reached direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_sends_its_hosts_direct() {
    let f = Fixture::new().await;
    f.origin.resource("/n.bin", Resource::seeded(22, 64 << 10));
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = format!("http://127.0.0.1:{dead}");
    let child = f.get(
        &f.origin.https_url("/n.bin"),
        &[],
        &[
            ("HTTPS_PROXY", &proxy),
            ("NO_PROXY", "example.com,localhost"),
        ],
    );
    let out = finish(child, Duration::from_secs(60)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(f.row().get("proxy").is_none(), "{}", f.row());
}

/// A SIGKILLed `ferry get -x socks5h://…` resumes through dante from the
/// bytes it had made durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_through_socks5_resumes_after_a_kill() {
    let f = Fixture::new().await;
    let len = 24u64 << 20;
    f.origin.resource("/k.bin", Resource::seeded(23, len));
    f.origin
        .script("/k.bin", Script::new().always(Fault::RateLimit(8 << 20)));
    let dante = Dante::start(true).unwrap();
    let proxy = dante.url();
    let url = f.origin.https_url("/k.bin");
    let extra = ["-x", proxy.as_str(), "--checkpoint", "1M"];

    let mut child = f.get(&url, &extra, &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let durable = f.row()["durable"].as_u64().unwrap();
    assert!(durable > 0, "a checkpoint was made before the kill");

    let out = finish(f.get(&url, &extra, &[]), Duration::from_secs(90)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read(f.out().join("k.bin")).unwrap();
    assert!(got == body::bytes(23, 0, 0..len), "the file is intact");
    let log = f.origin.log();
    assert!(
        log.iter().skip(1).any(|e| range_start(&e.range) > 0),
        "the second run resumed with a Range: {log:?}"
    );
    let row = f.row();
    assert_eq!(
        row["proxy"].as_str(),
        Some(format!("socks5h://127.0.0.1:{}", dante.port()).as_str())
    );
    assert!(!row.to_string().contains(testkit::DANTE_PASSWORD));
}

/// squid dies mid-body (the tunnel breaks) and comes back: the download
/// goes on from where it was, through the new squid, and lands intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_drops_the_tunnel_mid_body_costs_a_retry_not_the_file() {
    let f = Fixture::new().await;
    let len = 24u64 << 20;
    f.origin.resource("/d.bin", Resource::seeded(24, len));
    f.origin
        .script("/d.bin", Script::new().always(Fault::RateLimit(8 << 20)));
    let mut squid = Squid::start(None).unwrap();
    let proxy = squid.url();
    let url = f.origin.https_url("/d.bin");
    let child = f.get(&url, &["-x", &proxy, "--checkpoint", "1M"], &[]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    squid.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    squid.restart().unwrap();

    let out = finish(child, Duration::from_secs(120)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read(f.out().join("d.bin")).unwrap();
    assert!(got == body::bytes(24, 0, 0..len), "the file is intact");
    let log = f.origin.log();
    assert!(log.len() >= 2, "the tunnel broke mid-body: {log:?}");
    assert!(!log[0].finished, "the first answer was cut: {log:?}");
    assert!(
        log.iter().skip(1).any(|e| range_start(&e.range) > 0),
        "the retry resumed with a Range: {log:?}"
    );
}

/// A proxy that wants credentials it was not given fails the download at
/// once, naming the proxy and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_fails_at_once_in_words() {
    let f = Fixture::new().await;
    f.origin.resource("/a.bin", Resource::seeded(25, 64 << 10));
    let squid = Squid::start(Some(("alice", "hunter2"))).unwrap();
    let child = f.get(
        &f.origin.https_url("/a.bin"),
        &["-x", &squid.bare_url()],
        &[],
    );
    let out = finish(child, Duration::from_secs(30)).await;
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("proxy {} asks for credentials", squid.bare_url())),
        "{err}"
    );
    assert!(f.origin.log().is_empty(), "nothing reached the origin");
}

/// A proxy URL that cannot be used is refused before anything is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_proxy_url_is_refused_in_words() {
    let f = Fixture::new().await;
    for (proxy, why) in [
        (
            "socks4://127.0.0.1:1080",
            "SOCKS4 proxies are not supported",
        ),
        ("http://127.0.0.1:99999", "port 99999 is out of range"),
    ] {
        let out = finish(
            f.get(&f.origin.https_url("/x"), &["-x", proxy], &[]),
            Duration::from_secs(30),
        )
        .await;
        assert!(!out.status.success());
        assert!(stderr(&out).contains(why), "{proxy}: {}", stderr(&out));
    }
    let out = finish(
        f.get(
            &f.origin.https_url("/x"),
            &[],
            &[("https_proxy", "ftp://p")],
        ),
        Duration::from_secs(30),
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("https_proxy"), "{}", stderr(&out));
}
