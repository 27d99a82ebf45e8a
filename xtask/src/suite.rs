//! `cargo xtask test`: the README's one test command, which passes on a
//! fresh machine by itself.
//!
//! It installs what the tests need if it is missing ([`crate::setup`]), runs
//! `cargo test --workspace --locked`, then the simulation's 200 seeds
//! (`cargo xtask sim`), then the short soak (`cargo xtask soak --short
//! --debug`) with the debug `ferry` those tests built. CI (`.ci/run`) runs fmt and clippy, then this.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use crate::{root, setup, sim, soak};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Only list what the tests need and this machine lacks (exit status 1
    /// if anything); install nothing, run nothing.
    #[arg(long, conflicts_with = "setup_only")]
    check: bool,
    /// Install what the tests need if it is missing, then stop.
    #[arg(long)]
    setup_only: bool,
}

/// `cargo xtask soak`'s options, parsed from the short soak's command line
/// so it stays the same command the README names.
#[derive(Parser)]
struct SoakCommand {
    #[command(flatten)]
    args: soak::Args,
}

/// `cargo xtask sim`'s options, parsed the same way.
#[derive(Parser)]
struct SimCommand {
    #[command(flatten)]
    args: sim::Args,
}

/// The short soak's command line.
const SHORT_SOAK: [&str; 3] = ["soak", "--short", "--debug"];

/// Sets up, then runs the tests and the short soak.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let root = root();
    if args.check {
        return check(&root);
    }
    setup::ensure(&root)?;
    if args.setup_only {
        return Ok(());
    }

    let started = Instant::now();
    println!("== cargo test --workspace --locked");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["test", "--workspace", "--locked"])
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace --locked failed ({status})");
    }
    println!("== cargo xtask sim --seeds 200");
    let sim = SimCommand::try_parse_from(["sim", "--seeds", "200"])?;
    sim::run(&sim.args)?;
    let tests = started.elapsed();

    println!("== cargo xtask {}", SHORT_SOAK.join(" "));
    let soak = SoakCommand::try_parse_from(SHORT_SOAK)?;
    soak::run(soak.args).await?;
    let all = started.elapsed();
    println!(
        "test: passed in {} (tests {}, soak {})",
        minutes(all),
        minutes(tests),
        minutes(all.saturating_sub(tests))
    );
    Ok(())
}

/// Lists what is missing, or says nothing is.
fn check(root: &std::path::Path) -> anyhow::Result<()> {
    let missing = setup::missing(root);
    if missing.is_empty() {
        println!("setup: the tests have all they need");
        return Ok(());
    }
    println!("setup: the tests need, and this machine lacks:");
    for m in &missing {
        println!("  - {m}");
    }
    bail!(
        "{} missing; `cargo xtask test` installs them",
        missing.len()
    )
}

/// `12m05s`.
fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_soak_command_line_parses() {
        assert!(SoakCommand::try_parse_from(SHORT_SOAK).is_ok());
    }

    #[test]
    fn durations_read_as_minutes_and_seconds() {
        assert_eq!(minutes(Duration::from_secs(725)), "12m05s");
    }
}
