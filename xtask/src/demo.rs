//! `cargo xtask demo`: the offline tour of Ferry. It starts a local origin,
//! runs `ferry get` on a few files with progress bars, kills it with SIGKILL
//! mid-way, runs it again, and shows that the second run continued from the
//! bytes already on disk instead of starting over. Needs nothing beyond the
//! Rust toolchain and loopback.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use testkit::{Fault, Origin, Resource, Script};

use crate::{build_ferry, root};

struct File {
    name: &'static str,
    seed: u64,
    len: u64,
}

const FILES: [File; 3] = [
    File {
        name: "ubuntu-like.iso",
        seed: 1,
        len: 96 << 20,
    },
    File {
        name: "dataset.tar",
        seed: 2,
        len: 48 << 20,
    },
    File {
        name: "notes.pdf",
        seed: 3,
        len: 3 << 20,
    },
];

/// Bytes per second the origin sends each file at: slow enough to watch.
const PACE: u64 = 16 << 20;

pub(crate) async fn run(out: Option<PathBuf>) -> anyhow::Result<()> {
    let ferry = build_ferry()?;
    let origin = Origin::start().await.context("starting the local origin")?;
    let mut urls = Vec::new();
    for f in &FILES {
        let path = format!("/files/{}", f.name);
        origin.resource(&path, Resource::seeded(f.seed, f.len));
        origin.script(&path, Script::new().always(Fault::RateLimit(PACE)));
        urls.push(origin.http_url(&path));
    }
    let demo_dir = root().join("target/demo");
    let out = out.unwrap_or_else(|| demo_dir.join("downloads"));
    let home = tempfile::tempdir().context("state directory")?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;

    println!();
    println!(
        "1. ferry get: three files from a local origin at {} MiB/s each",
        PACE >> 20
    );
    let run = || {
        println!(
            "   $ ferry get {} --output-dir {}",
            urls.join(" "),
            out.display()
        );
        Command::new(&ferry)
            .arg("get")
            .args(&urls)
            .arg("--output-dir")
            .arg(&out)
            .env("FERRY_HOME", home.path())
            .spawn()
    };
    let mut first = run()?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    first.kill().context("killing ferry")?; // SIGKILL: no chance to clean up
    first.wait()?;
    let before: u64 = origin.log().iter().map(|e| e.bytes_sent).sum();
    println!();
    println!(
        "2. killed with SIGKILL after 1.2 s: {:.1} MiB had arrived",
        before as f64 / f64::from(1 << 20)
    );

    println!();
    println!("3. the same command again");
    let mut again = run()?;
    let status = tokio::task::spawn_blocking(move || again.wait()).await??;
    if !status.success() {
        bail!("the second ferry get failed: {status}");
    }

    println!();
    println!("4. what happened");
    let log = origin.log();
    let mut all_intact = true;
    for f in &FILES {
        let path = format!("/files/{}", f.name);
        let requests: Vec<_> = log.iter().filter(|e| e.path == path).collect();
        let resumed_from = requests
            .iter()
            .skip(1)
            .filter_map(|e| e.range.as_deref())
            .filter_map(|r| {
                r.trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse::<u64>()
                    .ok()
            })
            .next();
        let sent: u64 = requests.iter().map(|e| e.bytes_sent).sum();
        let data = std::fs::read(out.join(f.name)).with_context(|| f.name)?;
        let intact = Sha256::digest(&data)[..] == testkit::body::sha256(f.seed, 0, f.len)[..];
        all_intact &= intact;
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        match resumed_from {
            Some(at) => println!(
                "   {:<16} {:>6.1} MiB: resumed at {:.1} MiB; re-fetched {:.1} MiB of what had arrived; SHA-256 {}",
                f.name,
                mib(f.len),
                mib(at),
                mib(sent.saturating_sub(f.len)),
                if intact { "ok" } else { "WRONG" }
            ),
            None => println!(
                "   {:<16} {:>6.1} MiB: fetched in one go; SHA-256 {}",
                f.name,
                mib(f.len),
                if intact { "ok" } else { "WRONG" }
            ),
        }
    }
    if !all_intact {
        bail!("a file does not match the origin");
    }
    println!();
    println!("   files in {}", out.display());
    Ok(())
}
