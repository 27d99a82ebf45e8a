//! Ferry's project tasks.
//!
//! - `cargo xtask demo`: the offline tour (local origin, SIGKILL, resume).
//! - `cargo xtask test`: installs what the tests need if it is missing, then
//!   runs the workspace's tests and the short soak (the README's test
//!   command, and CI's).
//! - `cargo xtask bench`: Ferry side by side with curl, wget2 and aria2c
//!   against nginx, with a JSON, Markdown and SVG report.
//! - `cargo xtask soak`: downloads under injected faults while `ferry run`
//!   is SIGKILLed again and again; fails on any loss.
//! - `cargo xtask sim`: the seeded simulation of the engine under faults
//!   and crashes; `--seeds N` runs many, `--seed S` replays one.

// A task runner talks to the person running it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod demo;
mod setup;
mod sim;
mod soak;
mod suite;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Ferry's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Download a few files from a local origin, kill ferry mid-way, resume.
    Demo {
        /// Where the files go (default: target/demo/downloads).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Install what the tests need if it is missing (apt-get, a moto
    /// virtualenv, npm ci), then run `cargo test --workspace --locked` and
    /// the short soak.
    Test(suite::Args),
    /// Measure Ferry side by side with curl, wget2 and aria2c.
    Bench(bench::Args),
    /// Kill `ferry run` again and again under injected faults; fail on any loss.
    Soak(soak::Args),
    /// Simulate sessions under faults and crashes, seed by seed; fail on
    /// the first broken invariant.
    Sim(sim::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.task {
            Task::Demo { out } => demo::run(out).await,
            Task::Test(args) => suite::run(args).await,
            Task::Bench(args) => bench::run(args).await,
            Task::Soak(args) => soak::run(args).await,
            Task::Sim(args) => sim::run(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds the `ferry` binary (release) and returns its path.
fn build_ferry() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building ferry (release)…");
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--quiet", "--release", "-p", "ferry-cli"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(root().join("target/release/ferry"))
}
