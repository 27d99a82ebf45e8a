//! `ferry`: background downloads and uploads that survive crashes, kills and restarts.
//!
//! ```text
//! ferry get URL... [-i LIST] [-o FILE]... [--output-dir DIR] [--sha256 HEX] [--limit-rate RATE] [--discretionary]
//!           [--require-charging] [--no-cellular] [--no-expensive] [--schedule TIMETABLE]
//!           [--metered IFACE] [--cacert PEM] [--resolve HOST:PORT:ADDR] [--checkpoint SIZE|off]
//! ferry add URL... [-i LIST] [-o FILE]... [--output-dir DIR] [--sha256 HEX] [--limit-rate RATE] [--discretionary]
//!           [--require-charging]
//! ferry put FILE URL [-F NAME=VALUE]... [--form-file NAME] [-X METHOD] [--content-type TYPE]
//!           [--resumable | --tus] [--upload-chunk SIZE] [--discretionary] [--require-charging] [the runner options of get]
//! ferry run [--until-idle] [--limit-rate RATE] [--no-cellular] [--no-expensive]
//!           [--schedule TIMETABLE] [--metered IFACE] [--cacert PEM] [--resolve HOST:PORT:ADDR]
//!           [--checkpoint SIZE|off]
//! ferry ls [--json]
//! get, put and run: [-q | -v...] [--no-progress] [--json]
//! ferry pause|resume|cancel ID
//! ferry conditions [--metered IFACE]
//! every command: [--store s3://BUCKET/PREFIX] [--endpoint URL]
//! ```
//!
//! With `--store`, the session's state is in a bucket that several processes
//! share: there is no control socket, each command reads and writes the
//! bucket, and each task is run by one process at a time (see
//! `scheduler::SessionBuilder::shared`).
//!
//! One process runs a state directory's session at a time (`get` or `run`);
//! it listens on `control.sock` there, and the other commands talk to it.
//! With no runner, `add`, `ls`, `pause`, `resume` and `cancel` change the
//! state directly.
//!
//! Network and power conditions come from sysfs, `/proc/net/route` and
//! `/proc/net/ipv6_route` under `$FERRY_SYSFS_ROOT` (default `/`), read
//! every 2 s, and, without `$FERRY_SYSFS_ROOT`, from NetworkManager's
//! metered flag on the system bus as it changes; downloads from this
//! machine (localhost) are not held back by the network.
//!
//! A `get` whose work rides one connection (one URL, or https URLs on one
//! origin) runs on one worker thread; `TOKIO_WORKER_THREADS` overrides.
//!
//! State lives in `$FERRY_HOME`, else the platform data directory
//! (`~/.local/share/ferry` on Linux). Running `ferry get` again with the same
//! URL and output directory continues that download where it stopped.
//!
//! This file parses the command line, sizes the runtime and dispatches;
//! each command is in [`commands`], the argument types in [`args`].

mod args;
mod commands;
mod control;
mod descriptors;
mod enqueue;
mod exit;
mod json_lines;
mod listing;
mod logging;
mod names;
mod output;
mod payloads;
mod progress;
mod session;
mod state;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use commands::change::change;
use commands::transfer::Job;
use wire::Change;

/// mimalloc: the transfer path allocates and frees buffers at a high rate,
/// and glibc's allocator gave memory back and faulted it in again (page
/// faults and zeroing were several per cent of a large download's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // These print what clap knows of the command line, and need no runtime.
    match &cli.command {
        Command::Completions { shell } => return commands::help::completions(*shell),
        Command::Man { command } => return commands::help::man(command.as_deref()),
        _ => {}
    }
    // ring is the one crypto provider compiled in; the S3 client's rustls
    // takes the process's, so name it once for all.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Many transfers at once need many open files.
    descriptors::raise_limit();
    // A `get`'s URLs are read and checked before the runtime starts: they
    // choose its size.
    let cli = match cli.resolved() {
        Ok(cli) => cli,
        Err(e) => return fail(e),
    };
    // `-v` and `RUST_LOG`: the libraries' events on standard error.
    logging::start(cli.runner_opts().map_or(0, |o| o.verbose));
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // `TOKIO_WORKER_THREADS`, when set, is the user's choice and wins.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() && rides_one_connection(&cli) {
        runtime.worker_threads(1);
    }
    let runtime = match runtime.build() {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::anyhow!("starting the runtime: {e}")),
    };
    // The command runs as a task on the runtime's workers, beside the
    // session it drives: waiting on the main thread instead would wake that
    // thread for each task that ends.
    let result = runtime.block_on(async {
        match tokio::spawn(command(cli)).await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("the command stopped: {e}")),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

/// Whether the whole job will ride one connection: a `ferry get` of one
/// URL, or of https URLs that all name one origin (HTTP/2 carries them all
/// on one connection), with no S3 traffic beside it. Such a job runs on one
/// worker thread. A connection's reading, decryption and framing are one
/// task's work; with a second worker, each frame's consumer is woken on the
/// other thread, and that hand-off cost more than it gave back (a 1 GiB
/// download over TLS HTTP/2, and 2,000 small files over one HTTP/2
/// connection, both finished sooner on one worker). Writes to the disk go to
/// the blocking pool either way. Plain-HTTP lists keep a worker per core:
/// their connections (up to 8 per server) run side by side.
fn rides_one_connection(cli: &Cli) -> bool {
    let Command::Get(args) = &cli.command else {
        return false;
    };
    if cli.store.is_some() || args.add.to.is_some() {
        return false;
    }
    let mut origins = args.add.urls.iter().map(|u| url::Url::parse(u).ok());
    let Some(Some(first)) = origins.next() else {
        return false;
    };
    let mut rest = origins.peekable();
    if rest.peek().is_none() {
        return true;
    }
    first.scheme() == "https" && rest.all(|u| u.is_some_and(|u| u.origin() == first.origin()))
}

/// Runs the command line's command.
async fn command(cli: Cli) -> anyhow::Result<ExitCode> {
    let shared = session::shared(&cli)?;
    let shared = shared.as_ref();
    let endpoint = cli.endpoint;
    match cli.command {
        Command::Get(mut args) => {
            args.opts.endpoint = endpoint;
            // `main` resolved the arguments before starting the runtime.
            let job = Job::Get(args.add.downloads()?);
            commands::transfer::transfer(job, &args.opts, shared).await
        }
        Command::Put { put, mut opts } => {
            opts.endpoint = endpoint;
            commands::transfer::transfer(Job::Put(put.resolved()?), &opts, shared).await
        }
        Command::Add(args) => commands::add::add(args, shared, endpoint).await,
        Command::Run {
            until_idle,
            limit_rate,
            max_filesize,
            when,
            mut opts,
        } => {
            opts.endpoint = endpoint;
            opts.session_max_size = max_filesize
                .as_deref()
                .map(crate::args::parse_max_filesize)
                .transpose()?;
            commands::run::run(until_idle, limit_rate.as_deref(), &when, opts, shared).await
        }
        Command::Conditions { sensing } => commands::conditions::conditions(&sensing).await,
        Command::Repair => commands::repair::repair(shared),
        Command::Completions { .. } | Command::Man { .. } => {
            anyhow::bail!("printed before the runtime starts")
        }
        Command::Ls { json } => commands::ls::ls(json, shared, endpoint).await,
        Command::Pause { id } => change(&id, Change::Pause, shared, endpoint).await,
        Command::Resume { id } => change(&id, Change::Resume, shared, endpoint).await,
        Command::Cancel { id } => change(&id, Change::Cancel, shared, endpoint).await,
    }
}

/// Says why the command failed; exit code 2.
#[allow(clippy::print_stderr)]
fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("ferry: {e:#}");
    ExitCode::from(2)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn one_connection(args: &[&str]) -> bool {
        let cli = Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))
            .expect("the arguments parse");
        rides_one_connection(&cli)
    }

    #[test]
    fn a_job_that_rides_one_connection_is_told_apart() {
        // One URL is one connection, whatever its scheme.
        assert!(one_connection(&["get", "http://a.test/x"]));
        assert!(one_connection(&["get", "https://a.test/x"]));
        // https on one origin: HTTP/2 multiplexes them.
        assert!(one_connection(&[
            "get",
            "https://a.test/x",
            "https://a.test:443/y"
        ]));
        // Plain HTTP/1.1 runs several connections side by side.
        assert!(!one_connection(&[
            "get",
            "http://a.test/x",
            "http://a.test/y"
        ]));
        // Other origins: another host, another port, another scheme.
        assert!(!one_connection(&[
            "get",
            "https://a.test/x",
            "https://b.test/y"
        ]));
        assert!(!one_connection(&[
            "get",
            "https://a.test/x",
            "https://a.test:8443/y"
        ]));
        assert!(!one_connection(&[
            "get",
            "https://a.test/x",
            "http://a.test/y"
        ]));
        // S3 traffic beside the downloads.
        assert!(!one_connection(&[
            "get",
            "https://a.test/x",
            "--to",
            "s3://bucket/x"
        ]));
        assert!(!one_connection(&[
            "--store",
            "s3://bucket/state",
            "get",
            "https://a.test/x"
        ]));
        // A URL that does not parse is refused later; it decides nothing.
        assert!(!one_connection(&["get", "https://a.test/x", "not a url"]));
        // Only `get` knows its work before it starts.
        assert!(!one_connection(&["run"]));
    }
}
