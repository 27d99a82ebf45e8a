#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `ferry conditions` on a fake sysfs tree (`FERRY_SYSFS_ROOT`): a laptop
//! on cellular at 20% battery, discharging.

use std::path::Path;
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
