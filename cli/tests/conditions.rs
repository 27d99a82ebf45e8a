#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `ferry conditions` on a fake sysfs tree (`FERRY_SYSFS_ROOT`): a laptop
//! on cellular at 20% battery, discharging.

use std::path::{Path, PathBuf};
use std::process::Command;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn conditions_says_what_it_sees_and_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
         wwan0\t00000000\t0101A8C0\t0003\t0\t0\t700\t00000000\t0\t0\t0\n",
    );
    write(root, "sys/class/net/wwan0/uevent", "DEVTYPE=wwan\n");
    write(root, "sys/class/power_supply/BAT0/type", "Battery\n");
    write(root, "sys/class/power_supply/BAT0/capacity", "20\n");
    write(root, "sys/class/power_supply/BAT0/status", "Discharging\n");
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("conditions")
        .env("FERRY_SYSFS_ROOT", root)
        .env("FERRY_HOME", root.join("home"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let line = |start: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line in:\n{text}"))
            .to_owned()
    };
    assert_eq!(line("network:"), "network: cellular, expensive");
    assert_eq!(line("power:"), "power: battery 20%, not charging");
    assert!(line("a download:").contains("runs"), "{text}");
    assert!(line("a high-priority download:").contains("runs"), "{text}");
    for waits in [
        "a discretionary download:",
        "a download that requires charging:",
        "a download that requires an unmetered network:",
    ] {
        assert!(line(waits).contains("waits: "), "{text}");
    }
}

/// A scratch directory with a fake sysfs root, a state directory and an
/// output directory inside.
fn scratch() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = |p| dir.path().join(p);
    let (root, home, out) = (path("root"), path("home"), path("out"));
    (dir, root, home, out)
}

/// Starts `ferry ARGS` on the state directory `home` and the fake sysfs
/// tree `root`, its output discarded.
fn spawn<S: AsRef<std::ffi::OsStr>>(
    home: &Path,
    root: &Path,
    args: impl IntoIterator<Item = S>,
) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("FERRY_HOME", home)
        .env("FERRY_SYSFS_ROOT", root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn ls(home: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["ls", "--json"])
        .env("FERRY_HOME", home)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_for_detail(home: &Path, what: &str, ok: impl Fn(&str) -> bool) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let rows = ls(home);
        if let Some(row) = rows.first()
            && ok(row["detail"].as_str().unwrap_or(""))
        {
            return row.clone();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "waiting for {what}: {rows:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Waits for `ferry get` to exit, then checks that it succeeded, that
/// `file` holds `want`, and that the origin saw two requests, the second
/// from the `durable` offset.
async fn resumed_intact(
    mut get: std::process::Child,
    origin: &testkit::Origin,
    file: &Path,
    want: Vec<u8>,
    durable: u64,
) {
    let status = tokio::task::spawn_blocking(move || get.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(std::fs::read(file).unwrap(), want);
    let log = origin.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        log[1].range.as_deref(),
        Some(format!("bytes={durable}-").as_str()),
        "resumed from the durable offset"
    );
}

fn plug(root: &Path, charging: bool) {
    write(root, "sys/class/power_supply/AC/type", "Mains\n");
    write(
        root,
        "sys/class/power_supply/AC/online",
        if charging { "1\n" } else { "0\n" },
    );
    write(root, "sys/class/power_supply/BAT0/type", "Battery\n");
    write(root, "sys/class/power_supply/BAT0/capacity", "60\n");
    write(
        root,
        "sys/class/power_supply/BAT0/status",
        if charging {
            "Charging\n"
        } else {
            "Discharging\n"
        },
    );
}

/// `ferry get --require-charging` on a laptop (a fake sysfs tree): it runs
/// while plugged in; unplugged, it stops, checkpoints and waits, saying why
/// in `ferry ls`, with no bytes moving; plugged in again, it continues from
/// the durable offset with a Range request and lands intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_stops_a_download_that_requires_charging_and_plugging_in_resumes_it() {
    use testkit::{Fault, Origin, Resource, Script, body};
    let (_dir, root, home, out) = scratch();
    write(
        &root,
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
         eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
    );
    write(&root, "sys/class/net/eth0/uevent", "INTERFACE=eth0\n");
    plug(&root, true);
    let origin = Origin::start().await.unwrap();
    let len = 6u64 << 20;
    origin.resource("/plugged.bin", Resource::seeded(21, len));
    origin.script(
        "/plugged.bin",
        Script::new().always(Fault::RateLimit(1 << 20)),
    );
    let url = origin.http_url("/plugged.bin");
    let out_dir = out.display().to_string();
    let get = spawn(
        &home,
        &root,
        [
            "get",
            "--require-charging",
            "--checkpoint",
            "256k",
            "--output-dir",
            &out_dir,
            &url,
        ],
    );
    wait_for_detail(&home, "bytes to arrive", |d| d == "running").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    plug(&root, false);
    let row = wait_for_detail(&home, "the wait", |d| d.starts_with("waiting")).await;
    let detail = row["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("power"), "{detail}");
    let durable = row["durable"].as_u64().unwrap();
    assert!(durable > 0 && durable < len, "{row:?}");
    // While it waits, nothing moves.
    let sent = |o: &Origin| o.log().iter().map(|e| e.bytes_sent).sum::<u64>();
    let before = sent(&origin);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(sent(&origin), before, "bytes moved while waiting");
    assert_eq!(ls(&home)[0]["bytes"].as_u64(), row["bytes"].as_u64());
    plug(&root, true);
    let file = out.join("plugged.bin");
    resumed_intact(get, &origin, &file, body::bytes(21, 0, 0..len), durable).await;
}

/// Points the fake default route at `iface`.
fn route(root: &Path, iface: &str) {
    write(
        root,
        "proc/net/route",
        &format!(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
             {iface}\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        ),
    );
}

/// `ferry get --no-cellular --no-expensive --metered usb0` from an origin
/// reached by name (`--resolve`, so the network counts): it runs on Wi-Fi;
/// on cellular it stops and waits, saying so; on a metered USB tether it
/// still waits, now for an unmetered network; back on Wi-Fi it continues
/// from the durable offset and lands intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cellular_and_no_expensive_wait_off_wifi() {
    use testkit::{Fault, Origin, Resource, Script, body};
    let (_dir, root, home, out) = scratch();
    route(&root, "wlan0");
    write(&root, "sys/class/net/wlan0/uevent", "DEVTYPE=wlan\n");
    std::fs::create_dir_all(root.join("sys/class/net/wlan0/wireless")).unwrap();
    write(&root, "sys/class/net/wwan0/uevent", "DEVTYPE=wwan\n");
    write(&root, "sys/class/net/usb0/uevent", "INTERFACE=usb0\n");
    let origin = Origin::start().await.unwrap();
    let len = 8u64 << 20;
    origin.resource("/roam.bin", Resource::seeded(23, len));
    // Slow only the first request, so the story happens mid-download.
    origin.script("/roam.bin", Script::new().nth(1, Fault::RateLimit(1 << 20)));
    let port = origin.http_addr().port();
    let (resolve, out_dir) = (
        format!("origin.test:{port}:127.0.0.1"),
        out.display().to_string(),
    );
    let url = format!("http://origin.test:{port}/roam.bin");
    let get = spawn(
        &home,
        &root,
        [
            "get",
            "--no-cellular",
            "--no-expensive",
            "--metered",
            "usb0",
            "--checkpoint",
            "256k",
            "--resolve",
            &resolve,
            "--output-dir",
            &out_dir,
            &url,
        ],
    );
    wait_for_detail(&home, "bytes to arrive", |d| d == "running").await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;

    route(&root, "wwan0");
    let row = wait_for_detail(&home, "the wait on cellular", |d| d.starts_with("waiting")).await;
    assert_eq!(
        row["detail"].as_str().unwrap(),
        "waiting: cellular networks are not allowed"
    );
    let sent = |o: &Origin| o.log().iter().map(|e| e.bytes_sent).sum::<u64>();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = sent(&origin);

    route(&root, "usb0");
    let row = wait_for_detail(&home, "the wait on the tether", |d| d.contains("unmetered")).await;
    assert_eq!(
        row["detail"].as_str().unwrap(),
        "waiting: waiting for an unmetered network (this one is cellular or expensive)"
    );
    assert_eq!(sent(&origin), before, "bytes moved while waiting");
    let durable = row["durable"].as_u64().unwrap();
    assert!(durable > 0 && durable < len, "{row:?}");

    route(&root, "wlan0");
    let file = out.join("roam.bin");
    resumed_intact(get, &origin, &file, body::bytes(23, 0, 0..len), durable).await;
}

/// `ferry run --discretionary` makes every task it runs background work: a
/// download queued without flags waits while the battery is at 20% and
/// discharging ("battery low"), and runs once the machine is plugged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_discretionary_holds_every_task_on_a_low_battery() {
    use testkit::{Origin, Resource, body};
    let (_dir, root, home, out) = scratch();
    plug(&root, false);
    write(&root, "sys/class/power_supply/BAT0/capacity", "20\n");
    let origin = Origin::start().await.unwrap();
    let len = 1u64 << 20;
    origin.resource("/later.bin", Resource::seeded(22, len));
    let added = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["add", "--output-dir"])
        .arg(&out)
        .arg(origin.http_url("/later.bin"))
        .env("FERRY_HOME", &home)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let mut run = spawn(&home, &root, ["run", "--discretionary"]);
    let row = wait_for_detail(&home, "the wait", |d| d.starts_with("waiting")).await;
    let detail = row["detail"].as_str().unwrap();
    assert!(detail.contains("battery low (20% < 30%)"), "{detail}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(origin.log().is_empty(), "nothing was fetched while waiting");
    plug(&root, true);
    let row = wait_for_detail(&home, "the download", |d| d == "completed").await;
    let _ = run.kill();
    let _ = run.wait();
    assert_eq!(row["bytes"].as_u64(), Some(len), "{row:?}");
    assert_eq!(
        std::fs::read(out.join("later.bin")).unwrap(),
        body::bytes(22, 0, 0..len)
    );
}
