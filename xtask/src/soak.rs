//! `cargo xtask soak`: many downloads, injected faults, and `ferry run`
//! SIGKILLed again and again; fails on any loss.
//!
//! Why: Ferry promises that a download survives anything short of losing
//! the disk, SIGKILL included, without losing the file, corrupting it, or
//! fetching again more than about one checkpoint's worth of bytes per kill.
//! Unit and property tests check the pieces. This checks the whole thing
//! the way a user runs it: real processes, real files, real sockets.
//!
//! How: the testkit origin runs in this process and serves `--files` seeded
//! resources of mixed sizes (log-uniform from 1 KiB to `--max-size`, with
//! both ends always present). Every response is paced at `--rate`, and each
//! path has a few scripted faults on chosen request numbers: a 503 (with or
//! without `Retry-After`), a cut connection, a stall, or a changed
//! representation (new ETag, new bytes). `ferry add` queues everything.
//! Then `ferry run --until-idle` is started, SIGKILLed after a random
//! delay, and started again, until `--kills` kills have happened. Later
//! runs go on until one exits 0 with every task complete. The delays come
//! from a seeded generator and are scaled to the work that is left, so the
//! kills spread over the whole transfer.
//!
//! `ferry run` prints nothing per task. A follower therefore connects to
//! each run's control socket and sends the `follow` request, the same one
//! `ferry get` uses to follow a running ferry. It records every task that
//! run reports done. At the end:
//! - every file is checked against the SHA-256 of the representation the
//!   origin serves last;
//! - the origin's request log is replayed to count bytes sent twice. They
//!   are split into bytes re-fetched after a kill, bytes re-fetched after an
//!   in-run fault, and bytes of a representation that a changed ETag made
//!   obsolete. The re-fetches after kills are compared with the bound: for
//!   each kill, the transfers it interrupted times one checkpoint's worth of
//!   bytes (the scheduler's `SessionConfig` defaults, which `ferry run`
//!   uses);
//! - completion reports are compared with the tasks;
//! - `ferry run --until-idle` is started a few more times with nothing
//!   left to do, as a cron job would start it, and should exit. A hang there
//!   is a known ferry bug, so it is reported but does not fail the soak yet.
//!
//! A table sums it up. A missing, corrupted or never-reported file, or
//! re-fetches above the bound, make the task fail. The working directory
//! (`target/soak`: state, downloads, one stderr log per run) is kept when the
//! soak fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use http::StatusCode;
use scheduler::SessionConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{Fault, LogEntry, Origin, Resource, Script};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::{build_ferry, root};

/// Options of `cargo xtask soak`. An unset option takes the full soak's
/// default, or the short soak's with `--short`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Downloads to queue [default: 200; --short: 40].
    #[arg(long, value_name = "N")]
    files: Option<usize>,
    /// SIGKILLs of `ferry run` to deliver before letting it finish
    /// [default: 100; --short: 40].
    #[arg(long, value_name = "N")]
    kills: Option<u32>,
    /// Largest download (suffixes k, M, G). Sizes spread log-uniformly from
    /// 1 KiB up to it [default: 256M; --short: 16M].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_size: Option<u64>,
    /// The origin's pace for each response, in bytes per second (suffixes
    /// k, M, G) [default: 4M; --short: 512k].
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    rate: Option<u64>,
    /// Seed for sizes, faults and kill moments (decimal or 0x-hex; default:
    /// from the clock). It is printed, so a failing soak can be run again.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// The CI version: about two minutes on two cores.
    #[arg(long)]
    short: bool,
    /// Use the debug build of ferry (`cargo build -p ferry-cli`,
    /// target/debug/ferry) instead of a release build.
    #[arg(long)]
    debug: bool,
    /// Give up, and fail, after this many seconds in all [default: 7200;
    /// --short: 600].
    #[arg(long, value_name = "SECS")]
    time_limit: Option<u64>,
    /// Working directory [default: target/soak]. It is emptied first, and
    /// kept when the soak fails.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the downloaded files after a successful soak.
    #[arg(long)]
    keep: bool,
}

/// Smallest download.
const MIN_SIZE: u64 = 1 << 10;
/// A run with no new request, no byte sent and no report for this long is
/// stuck.
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// How long `ferry run --until-idle` may take to exit once every task has
/// been reported done.
const IDLE_GRACE: Duration = Duration::from_secs(30);
/// How long the last pass waits for reports of tasks no run reported.
const REPORT_GRACE: Duration = Duration::from_secs(30);
/// Runs that exit non-zero before the soak gives up.
const MAX_RUNNER_ERRORS: u32 = 5;
/// Restarts with nothing left to do, after the soak: each must exit.
const IDLE_PROBES: u32 = 5;
/// How long such a restart may take to exit.
const IDLE_PROBE_LIMIT: Duration = Duration::from_secs(5);
/// Runs that exit 0 with work left before the soak gives up.
const MAX_EARLY_EXITS: u32 = 10;
/// How often a run is checked on.
const TICK: Duration = Duration::from_millis(25);

/// Runs the soak and prints its report.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let settings = Settings::new(args)?;
    println!(
        "soak: seed {:#x} (run again with --seed {:#x}); {} files of {} to {}, {} kills, origin pace {}/s per response",
        settings.seed,
        settings.seed,
        settings.files,
        size(settings.min_size),
        size(settings.max_size),
        settings.kills,
        size(settings.rate),
    );
    let ferry = if settings.debug {
        build_debug_ferry()?
    } else {
        build_ferry()?
    };
    let origin = Origin::start().await.context("starting the origin")?;
    let mut soak = Soak::new(settings, ferry, origin)?;
    soak.prepare().await?;
    let aborted = soak.drive().await.err();
    match &aborted {
        Some(e) => println!("soak: stopped early: {e:#}"),
        None => soak.probe_idle_restarts().await?,
    }
    soak.finish(aborted).await
}

/// The options with the defaults of the full or the short soak applied.
struct Settings {
    files: usize,
    kills: u32,
    min_size: u64,
    max_size: u64,
    rate: u64,
    seed: u64,
    time_limit: Duration,
    dir: PathBuf,
    keep: bool,
    debug: bool,
}

impl Settings {
    fn new(a: Args) -> anyhow::Result<Settings> {
        let pick = |full: u64, short: u64| if a.short { short } else { full };
        let files = a.files.unwrap_or(if a.short { 40 } else { 200 });
        let max_size = a.max_size.unwrap_or(pick(256 << 20, 16 << 20));
        if files == 0 {
            bail!("--files must be at least 1");
        }
        Ok(Settings {
            files,
            kills: a.kills.unwrap_or(if a.short { 40 } else { 100 }),
            min_size: MIN_SIZE.min(max_size),
            max_size,
            rate: a.rate.unwrap_or(pick(4 << 20, 512 << 10)),
            seed: a.seed.unwrap_or_else(clock_seed),
            time_limit: Duration::from_secs(a.time_limit.unwrap_or(pick(7200, 600))),
            dir: a.dir.unwrap_or_else(|| root().join("target/soak")),
            keep: a.keep,
            debug: a.debug,
        })
    }
}

/// A seed when none is given: the clock and the process id.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Builds the debug `ferry` (the one CI has already built) and returns its path.
fn build_debug_ferry() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building ferry (debug)…");
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--quiet", "-p", "ferry-cli"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed: {status}");
    }
    Ok(root().join("target/debug/ferry"))
}

/// Parses a size such as `512k`, `16M` or `1048576` (suffixes are 1024-based).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    match digits.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 1.0 / mult as f64 => Ok((n * mult as f64) as u64),
        _ => Err(format!("{s:?} is not a size such as 512k, 16M or 1048576")),
    }
}

/// Parses a seed: decimal, or hexadecimal after `0x`.
fn parse_seed(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a seed: {e}"))
}

/// SplitMix64: small, seeded, and good enough to pick sizes, faults and
/// moments reproducibly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Faults scheduled for one path, by request number. The origin counts
/// requests per path from 1, across every run.
#[derive(Default)]
struct Faults {
    /// A 503 at this request, with this `Retry-After`.
    unavailable: Option<(u64, Option<&'static str>)>,
    /// This request is cut after so many body bytes.
    cut: Option<(u64, u64)>,
    /// This request pauses after so many body bytes, for so long.
    stall: Option<(u64, u64, Duration)>,
    /// The representation changes (new ETag, new bytes) at this request.
    change: Option<u64>,
}

impl Faults {
    /// Draws a few faults on distinct early request numbers. A 503 and a
    /// change never share a request: the origin answers a scripted status
    /// before it applies a change.
    fn draw(rng: &mut Rng, len: u64) -> Faults {
        let mut slots: Vec<u64> = (1..=4).collect();
        for i in (1..slots.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            slots.swap(i, j);
        }
        let reach = len.min(8 << 20) + 1;
        // A change at the very first request would change nothing anyone
        // saw: then it takes the 503's request, and there is no 503.
        let change = rng
            .chance(0.15)
            .then(|| if slots[3] == 1 { slots[0] } else { slots[3] });
        let unavailable = rng
            .chance(0.3)
            .then(|| (slots[0], rng.chance(0.5).then_some("1")))
            .filter(|(n, _)| change != Some(*n));
        Faults {
            unavailable,
            cut: rng.chance(0.4).then(|| (slots[1], rng.below(reach))),
            stall: rng.chance(0.25).then(|| {
                let pause = Duration::from_millis(500 + rng.below(2500));
                (slots[2], rng.below(reach), pause)
            }),
            change,
        }
    }

    /// The origin's script for the path: paced, plus the faults.
    fn script(&self, rate: u64) -> Script {
        let mut s = Script::new().always(Fault::RateLimit(rate));
        if let Some((n, retry_after)) = self.unavailable {
            s = s.nth(
                n,
                Fault::Status {
                    code: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after: retry_after.map(str::to_owned),
                },
            );
        }
        if let Some((n, k)) = self.cut {
            s = s.nth(n, Fault::CutAfter(k));
        }
        if let Some((n, after, duration)) = self.stall {
            s = s.nth(n, Fault::Stall { after, duration });
        }
        if let Some(n) = self.change {
            s = s.nth(n, Fault::ChangeRepresentation);
        }
        s
    }

    /// The version served at request `n` (a change bumps it for good).
    fn version_at(&self, n: u64) -> u32 {
        self.change.map_or(0, |c| u32::from(n >= c))
    }
}

/// One download of the soak: what the origin serves there and what goes wrong.
struct Planned {
    /// The file name in the output directory (unique, so ferry keeps it).
    name: String,
    /// The origin path.
    path: String,
    seed: u64,
    len: u64,
    faults: Faults,
}

/// The downloads of a soak: the first is the largest size, the second the
/// smallest, the rest log-uniform between.
fn plan(s: &Settings, rng: &mut Rng) -> Vec<Planned> {
    let (lo, hi) = ((s.min_size as f64).ln(), (s.max_size as f64).ln());
    (0..s.files)
        .map(|i| {
            let len = match i {
                0 => s.max_size,
                1 => s.min_size,
                _ => ((lo + rng.unit() * (hi - lo)).exp() as u64).clamp(s.min_size, s.max_size),
            };
            let name = format!("f{i:03}-{len}.bin");
            Planned {
                path: format!("/soak/{name}"),
                name,
                seed: rng.next(),
                len,
                faults: Faults::draw(rng, len),
            }
        })
        .collect()
}

/// One task as `ferry ls --json` shows it.
struct Row {
    id: String,
    state: String,
    detail: String,
    durable: u64,
}

/// How a run ended.
enum RunEnd {
    /// SIGKILLed on purpose.
    Killed,
    /// It exited by itself.
    Exited(ExitStatus),
}

/// One SIGKILL: how far the origin's log was when it landed, how many
/// transfers it interrupted, and how long the run had lived.
struct KillPoint {
    log_len: usize,
    active: usize,
    after: Duration,
}

/// What a follower heard on a run's control socket.
enum Heard {
    /// It is connected and has asked.
    Connected,
    /// A task ended: done, or failed with a reason.
    Done { id: String, ok: bool, error: String },
    /// The runner refused the request.
    Refused(String),
}

/// One run's plan: whether to kill it, and whether it stops when idle.
struct RunPlan {
    kill_after: Option<Duration>,
    until_idle: bool,
    /// Ask about these tasks on the control socket.
    follow: Vec<String>,
}

/// A soak in progress.
struct Soak {
    s: Settings,
    ferry: PathBuf,
    home: PathBuf,
    out: PathBuf,
    logs: PathBuf,
    origin: Origin,
    files: Vec<Planned>,
    by_path: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    /// Task id → file.
    ids: HashMap<String, usize>,
    /// File → task id.
    task_ids: Vec<String>,
    /// Done reports per file, from followers.
    reported: Vec<u32>,
    /// Failure reports per file, from followers.
    failed: Vec<Option<String>>,
    /// Follower reports of a task whose record was not completed at the
    /// start of a later run: reported before it was durable.
    reopened: Vec<u32>,
    /// "NAME: done, N bytes" lines in the runs' stderr.
    printed: Vec<u32>,
    refusals: Vec<String>,
    kills: Vec<KillPoint>,
    runs: u32,
    followed_runs: u32,
    connected_runs: u32,
    early_exits: u32,
    runner_errors: u32,
    report_pass: bool,
    /// Restarts with nothing left to do that did not exit in time.
    idle_hangs: u32,
    idle_probes: u32,
    kill_rng: Rng,
    started: Instant,
    deadline: Instant,
}

impl Soak {
    fn new(s: Settings, ferry: PathBuf, origin: Origin) -> anyhow::Result<Soak> {
        let mut rng = Rng(s.seed);
        let files = plan(&s, &mut rng);
        let n = files.len();
        let by_path = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.path.clone(), i))
            .collect();
        let by_name = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let started = Instant::now();
        Ok(Soak {
            home: s.dir.join("home"),
            out: s.dir.join("out"),
            logs: s.dir.join("logs"),
            kill_rng: Rng(s.seed ^ 0x5EED_0FC0_FFEE_u64.rotate_left(17)),
            deadline: started + s.time_limit,
            s,
            ferry,
            origin,
            files,
            by_path,
            by_name,
            ids: HashMap::new(),
            task_ids: vec![String::new(); n],
            reported: vec![0; n],
            failed: vec![None; n],
            reopened: vec![0; n],
            printed: vec![0; n],
            refusals: Vec::new(),
            kills: Vec::new(),
            runs: 0,
            followed_runs: 0,
            connected_runs: 0,
            early_exits: 0,
            runner_errors: 0,
            report_pass: false,
            idle_hangs: 0,
            idle_probes: 0,
            started,
        })
    }

    /// Empties the working directory, serves the resources and queues the
    /// downloads with `ferry add`.
    async fn prepare(&mut self) -> anyhow::Result<()> {
        for d in [&self.home, &self.out, &self.logs] {
            if d.exists() {
                std::fs::remove_dir_all(d).with_context(|| format!("emptying {}", d.display()))?;
            }
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut urls = String::new();
        for f in &self.files {
            self.origin
                .resource(&f.path, Resource::seeded(f.seed, f.len));
            self.origin.script(&f.path, f.faults.script(self.s.rate));
            urls.push_str(&self.origin.http_url(&f.path));
            urls.push('\n');
        }
        let list = self.s.dir.join("urls.txt");
        std::fs::write(&list, urls).with_context(|| format!("writing {}", list.display()))?;
        let total: u64 = self.files.iter().map(|f| f.len).sum();
        println!(
            "soak: queueing {} downloads, {} in all, into {}",
            self.files.len(),
            size(total),
            self.out.display()
        );
        let list = list.display().to_string();
        let out = self.out.display().to_string();
        let added = self
            .ferry(
                &["add", "-i", &list, "--output-dir", &out],
                Duration::from_secs(300),
            )
            .await?;
        for line in added.lines() {
            let Some((id, name)) = line.split_once("  ") else {
                continue;
            };
            let Some(&i) = self.by_name.get(name.trim()) else {
                bail!("ferry add named a download {name:?}, which the soak did not ask for");
            };
            self.ids.insert(id.trim().to_owned(), i);
            self.task_ids[i] = id.trim().to_owned();
        }
        if let Some(i) = self.task_ids.iter().position(String::is_empty) {
            bail!("ferry add did not report a task for {}", self.files[i].name);
        }
        Ok(())
    }

    /// Runs `ferry` with these arguments and returns its standard output;
    /// kills it when it takes longer than `limit`.
    async fn ferry(&self, args: &[&str], limit: Duration) -> anyhow::Result<String> {
        let stdout_path = self.logs.join("command.out");
        let stderr_path = self.logs.join("command.err");
        let stdout = std::fs::File::create(&stdout_path)?;
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut child = Command::new(&self.ferry)
            .args(args)
            .env("FERRY_HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map(Ferry)
            .with_context(|| format!("starting {}", self.ferry.display()))?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > limit {
                child.stop();
                bail!("`ferry {}` took more than {limit:?}", args.join(" "));
            }
            tokio::time::sleep(TICK).await;
        };
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if !status.success() {
            bail!("`ferry {}`: {status}: {}", args.join(" "), err.trim());
        }
        std::fs::read_to_string(&stdout_path).context("reading ferry's output")
    }

    /// Every task, as `ferry ls --json` shows it.
    async fn ls(&self) -> anyhow::Result<Vec<Row>> {
        let text = self
            .ferry(&["ls", "--json"], Duration::from_secs(60))
            .await?;
        let mut rows = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).context("ferry ls --json")?;
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            rows.push(Row {
                id: s("id"),
                state: s("state"),
                detail: s("detail"),
                durable: v["durable"].as_u64().unwrap_or(0),
            });
        }
        Ok(rows)
    }

    /// Runs, kills and restarts `ferry run` until the planned kills are
    /// spent and every task is complete (normally: a run exits 0 after
    /// completing the last ones); then makes sure every task has been
    /// reported done.
    async fn drive(&mut self) -> anyhow::Result<()> {
        loop {
            if Instant::now() >= self.deadline {
                bail!(
                    "the time limit of {:?} ran out before the downloads ended",
                    self.s.time_limit
                );
            }
            let rows = self.ls().await?;
            self.note_reopened(&rows);
            if !rows.is_empty() && rows.iter().all(|r| r.state == "completed") {
                // A kill landed after the last completion. Restarts with
                // nothing to do are probed on their own at the end.
                break;
            }
            let kills_left = self.s.kills.saturating_sub(self.kills.len() as u32);
            let follow = self.to_follow(&rows);
            let kill_after = (kills_left > 0).then(|| self.kill_delay(&rows, kills_left));
            let complete = rows.iter().filter(|r| r.state == "completed").count();
            let began = Instant::now();
            let end = self
                .run_once(RunPlan {
                    kill_after,
                    until_idle: true,
                    follow,
                })
                .await?;
            println!(
                "soak: run {:>3}: {} after {:.2} s ({complete}/{} complete when it started)",
                self.runs,
                match &end {
                    RunEnd::Killed => "SIGKILLed".to_owned(),
                    RunEnd::Exited(status) => format!("exited ({status})"),
                },
                began.elapsed().as_secs_f64(),
                self.files.len(),
            );
            match end {
                RunEnd::Killed => {}
                RunEnd::Exited(status) if status.success() => {
                    let rows = self.ls().await?;
                    self.note_reopened(&rows);
                    if rows.iter().all(|r| r.state == "completed") {
                        break;
                    }
                    let ended: Vec<String> = rows
                        .iter()
                        .filter(|r| r.state == "failed" || r.state == "cancelled")
                        .map(|r| format!("{}: {}", self.name_of(&r.id), r.detail))
                        .collect();
                    if !ended.is_empty() {
                        bail!(
                            "ferry run went idle with {} task(s) ended without completing: {}",
                            ended.len(),
                            ended.join("; ")
                        );
                    }
                    self.early_exits += 1;
                    if self.early_exits >= MAX_EARLY_EXITS {
                        bail!(
                            "ferry run --until-idle exited {} times while tasks were left to do",
                            self.early_exits
                        );
                    }
                }
                RunEnd::Exited(status) => {
                    self.runner_errors += 1;
                    let log = self.run_log(self.runs);
                    println!(
                        "soak: run {} exited with {status}: {}",
                        self.runs,
                        tail(&log, 5)
                    );
                    if self.runner_errors >= MAX_RUNNER_ERRORS {
                        bail!("ferry run failed {} times", self.runner_errors);
                    }
                }
            }
        }
        // The last run may have ended before its follower heard every
        // report. Ask a runner about the rest, as a user would.
        let unreported: Vec<String> = (0..self.files.len())
            .filter(|&i| self.reported[i] == 0)
            .map(|i| self.task_ids[i].clone())
            .collect();
        if !unreported.is_empty() {
            self.report_pass = true;
            self.run_once(RunPlan {
                kill_after: Some(REPORT_GRACE),
                until_idle: false,
                follow: unreported,
            })
            .await?;
        }
        Ok(())
    }

    /// Starts `ferry run --until-idle` a few times with nothing left to do,
    /// as a cron job would, and counts the runs that do not exit.
    async fn probe_idle_restarts(&mut self) -> anyhow::Result<()> {
        for probe in 0..IDLE_PROBES {
            let log_path = self.logs.join(format!("idle-{probe}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let mut child = Command::new(&self.ferry)
                .args(["run", "--until-idle"])
                .env("FERRY_HOME", &self.home)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map(Ferry)
                .with_context(|| format!("starting {}", self.ferry.display()))?;
            self.idle_probes += 1;
            let started = Instant::now();
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if started.elapsed() >= IDLE_PROBE_LIMIT {
                    self.idle_hangs += 1;
                    child.stop();
                    break;
                }
                tokio::time::sleep(TICK).await;
            }
        }
        Ok(())
    }

    /// Counts reports of tasks that a later run found not completed: the
    /// report came before the completion was durable.
    fn note_reopened(&mut self, rows: &[Row]) {
        for r in rows {
            if let Some(&i) = self.ids.get(&r.id)
                && r.state != "completed"
                && self.reported[i] > 0
            {
                self.reopened[i] += 1;
                self.reported[i] = 0;
            }
        }
    }

    /// The tasks a run's follower asks about: those not completed on disk,
    /// and those no follower has reported yet.
    fn to_follow(&self, rows: &[Row]) -> Vec<String> {
        let open: Vec<usize> = rows
            .iter()
            .filter(|r| r.state != "completed")
            .filter_map(|r| self.ids.get(&r.id).copied())
            .collect();
        (0..self.files.len())
            .filter(|i| self.reported[*i] == 0 || open.contains(i))
            .map(|i| self.task_ids[i].clone())
            .collect()
    }

    /// A random moment for the next kill, scaled so that the kills left
    /// spread over the work left. The estimate is a lower bound on the time
    /// left (every transfer at the origin's pace, as many at once as the
    /// session allows per host), so kills run out before the work does.
    /// One kill in eight lands in the first 300 ms, while ferry starts,
    /// attaches and redelivers.
    fn kill_delay(&mut self, rows: &[Row], kills_left: u32) -> Duration {
        let config = SessionConfig::default();
        let slots = u64::from(config.policy.max_per_host.min(config.policy.max_concurrent)).max(1);
        let (mut left, mut longest, mut open) = (0u64, 0u64, 0u64);
        for r in rows.iter().filter(|r| r.state != "completed") {
            if let Some(&i) = self.ids.get(&r.id) {
                let rest = self.files[i].len.saturating_sub(r.durable);
                left += rest;
                longest = longest.max(rest);
                open += 1;
            }
        }
        let rate = self.s.rate as f64;
        let estimate =
            (left as f64 / (slots.min(open.max(1)) as f64 * rate)).max(longest as f64 / rate);
        let mean = (estimate / (f64::from(kills_left) + 1.0)).clamp(0.2, 20.0);
        let secs = if self.kill_rng.chance(0.125) {
            self.kill_rng.unit() * 0.3
        } else {
            self.kill_rng.unit() * 2.0 * mean
        };
        Duration::from_secs_f64(secs)
    }

    fn name_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.ids
            .get(id)
            .map_or(id, |&i| self.files[i].name.as_str())
    }

    fn run_log(&self, run: u32) -> PathBuf {
        self.logs.join(format!("run-{run:04}.log"))
    }

    /// One `ferry run`: started, followed on its control socket, watched,
    /// and killed when planned (or when stuck, or out of time).
    async fn run_once(&mut self, plan: RunPlan) -> anyhow::Result<RunEnd> {
        self.runs += 1;
        let run = self.runs;
        let log_path = self.run_log(run);
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_start = self.origin.log().len();
        let mut args = vec!["run"];
        if plan.until_idle {
            args.push("--until-idle");
        }
        let mut child = Command::new(&self.ferry)
            .args(&args)
            .env("FERRY_HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Ferry)
            .with_context(|| format!("starting {}", self.ferry.display()))?;
        let started = Instant::now();

        let (tx, mut rx) = mpsc::unbounded_channel();
        let give_up = Arc::new(AtomicBool::new(false));
        let follower = (!plan.follow.is_empty()).then(|| {
            self.followed_runs += 1;
            tokio::spawn(follow(
                self.home.join("control.sock"),
                plan.follow.clone(),
                tx,
                give_up.clone(),
            ))
        });

        let mut activity = (0usize, 0u64, 0u32);
        let mut last_change = Instant::now();
        let mut last_look = Instant::now() - Duration::from_secs(1);
        let mut all_reported_since: Option<Instant> = None;
        let mut reported_at_kill = Vec::new();
        let end: anyhow::Result<RunEnd> = loop {
            while let Ok(h) = rx.try_recv() {
                self.heard(h);
            }
            match child.try_wait() {
                Ok(Some(status)) => break Ok(RunEnd::Exited(status)),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            let now = Instant::now();
            if plan.kill_after.is_some_and(|d| started.elapsed() >= d)
                || (!plan.until_idle && self.reported.iter().all(|&n| n > 0))
            {
                reported_at_kill = self.reported.clone();
                child.stop();
                break Ok(RunEnd::Killed);
            }
            if now >= self.deadline {
                child.stop();
                break Err(anyhow!(
                    "the time limit of {:?} ran out during run {run}",
                    self.s.time_limit
                ));
            }
            if now.duration_since(last_look) >= Duration::from_secs(1) {
                last_look = now;
                let log = self.origin.log();
                let seen = (
                    log.len(),
                    log.iter().map(|e| e.bytes_sent).sum::<u64>(),
                    self.reported.iter().sum::<u32>(),
                );
                if seen != activity {
                    activity = seen;
                    last_change = now;
                }
            }
            if now.duration_since(last_change) >= STALL_LIMIT {
                let state = self
                    .ferry(&["ls"], Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| format!("(ferry ls failed: {e:#})"));
                child.stop();
                break Err(anyhow!(
                    "run {run} stalled: no request, byte or report for {STALL_LIMIT:?}; ferry ls said:\n{state}"
                ));
            }
            if plan.until_idle && self.reported.iter().all(|&n| n > 0) {
                let since = *all_reported_since.get_or_insert(now);
                if now.duration_since(since) >= IDLE_GRACE {
                    child.stop();
                    break Err(anyhow!(
                        "run {run}: `ferry run --until-idle` did not exit {IDLE_GRACE:?} after every task was reported done"
                    ));
                }
            }
            tokio::time::sleep(TICK).await;
        };

        give_up.store(true, Ordering::Relaxed);
        if let Some(mut f) = follower
            && tokio::time::timeout(Duration::from_secs(5), &mut f)
                .await
                .is_err()
        {
            f.abort();
        }
        while let Ok(h) = rx.try_recv() {
            self.heard(h);
        }
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        for line in text.lines() {
            if let Some((name, _)) = line.split_once(": done, ")
                && let Some(&i) = self.by_name.get(name.trim())
            {
                self.printed[i] += 1;
            }
        }
        if let Ok(RunEnd::Killed) = &end
            && !self.report_pass
        {
            self.kills.push(KillPoint {
                log_len: self.origin.log().len(),
                active: self.active_since(log_start, &reported_at_kill),
                after: started.elapsed(),
            });
        }
        end
    }

    /// Transfers a kill interrupted: paths that got body bytes during the
    /// run and were not reported done before the kill.
    fn active_since(&self, log_start: usize, reported: &[u32]) -> usize {
        let log = self.origin.log();
        let mut paths: Vec<usize> = log
            .iter()
            .skip(log_start)
            .filter(|e| serves(e))
            .filter_map(|e| self.by_path.get(&e.path).copied())
            .filter(|&i| reported.get(i).is_none_or(|&n| n == 0))
            .collect();
        paths.sort_unstable();
        paths.dedup();
        paths.len()
    }

    fn heard(&mut self, h: Heard) {
        match h {
            Heard::Connected => self.connected_runs += 1,
            Heard::Done { id, ok, error } => {
                if let Some(&i) = self.ids.get(&id) {
                    if ok {
                        self.reported[i] += 1;
                    } else {
                        self.failed[i] = Some(error);
                    }
                }
            }
            Heard::Refused(e) => self.refusals.push(e),
        }
    }

    /// Verifies the files, replays the origin's log, prints the report, and
    /// fails on any loss.
    async fn finish(self, aborted: Option<anyhow::Error>) -> anyhow::Result<()> {
        let wall = self.started.elapsed();
        let rows = self.ls().await.unwrap_or_default();
        let versions: Vec<u32> = self
            .files
            .iter()
            .map(|f| self.origin.version(&f.path))
            .collect();
        println!(
            "soak: checking {} files against the origin…",
            self.files.len()
        );
        let checked = verify(&self.files, &versions, &self.out);
        let acct = self.account(&versions);
        let report = self.report(&rows, &checked, &acct, wall, aborted.as_ref());
        println!();
        println!("{report}");
        let failures: Vec<&str> = report_failures(&report);
        if failures.is_empty() {
            if !self.s.keep {
                let _ = std::fs::remove_dir_all(&self.out);
            }
            println!("soak: passed in {}", duration(wall));
            Ok(())
        } else {
            println!(
                "soak: state, downloads and one stderr log per run are kept in {}",
                self.s.dir.display()
            );
            Err(anyhow!(
                "soak failed (seed {:#x}): {}",
                self.s.seed,
                failures.join("; ")
            ))
        }
    }

    /// Replays the origin's log: bytes sent twice, by cause, and the bound.
    fn account(&self, versions: &[u32]) -> Accounting {
        let log = self.origin.log();
        let config = SessionConfig::default();
        let interval = config.checkpoint_interval.as_secs_f64();
        // One checkpoint's worth of a transfer at the origin's pace, plus
        // one frame of the origin's (it paces in tenths of a second).
        let per_transfer = config
            .checkpoint_bytes
            .min((self.s.rate as f64 * interval) as u64)
            + self.s.rate / 10;
        let kill_lens: Vec<usize> = self.kills.iter().map(|k| k.log_len).collect();
        let mut a = Accounting {
            per_transfer,
            bound: self
                .kills
                .iter()
                .map(|k| k.active as u64 * per_transfer)
                .sum(),
            per_kill: vec![0; self.kills.len()],
            sent: log.iter().map(|e| e.bytes_sent).sum(),
            requests: log.len(),
            ..Accounting::default()
        };
        let mut by_path: HashMap<usize, Vec<(usize, &LogEntry)>> = HashMap::new();
        for (g, e) in log.iter().enumerate() {
            if let Some(&i) = self.by_path.get(&e.path) {
                by_path.entry(i).or_default().push((g, e));
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            let entries = by_path.remove(&i).unwrap_or_default();
            // Per version: the highest byte sent, and the last serving request.
            let mut reach: HashMap<u32, (u64, usize)> = HashMap::new();
            let mut last_version = 0;
            for (k, (g, e)) in entries.iter().enumerate() {
                let n = k as u64 + 1;
                let v = f.faults.version_at(n);
                last_version = v;
                if e.status == StatusCode::SERVICE_UNAVAILABLE {
                    a.unavailable += 1;
                }
                if f.faults
                    .cut
                    .is_some_and(|(c, at)| c == n && e.bytes_sent >= at && !e.finished)
                {
                    a.cuts += 1;
                }
                if f.faults
                    .stall
                    .is_some_and(|(s, after, _)| s == n && e.bytes_sent > after)
                {
                    a.stalls += 1;
                }
                if !serves(e) {
                    continue;
                }
                let start = if e.status == StatusCode::PARTIAL_CONTENT {
                    range_start(e.range.as_deref())
                } else {
                    0
                };
                let end = start + e.bytes_sent;
                let (high, prev) = reach.get(&v).copied().unwrap_or((0, usize::MAX));
                if start > high {
                    // Resuming beyond what was ever sent: ferry would hold
                    // bytes it never received.
                    a.gaps.push(format!(
                        "{}: request {n} asked from byte {start}, but the origin had sent only {high} of version {v}",
                        f.name
                    ));
                }
                let again = high.min(end).saturating_sub(start);
                if again > 0 {
                    // The kill that came between the request that first sent
                    // these bytes and this one, if any.
                    let first_kill = kill_lens.partition_point(|&l| l <= prev);
                    match kill_lens.get(first_kill) {
                        Some(&l) if prev != usize::MAX && l <= *g => {
                            a.after_kills += again;
                            a.per_kill[first_kill] += again;
                            a.worst_resume = a.worst_resume.max(again);
                        }
                        _ => a.after_faults += again,
                    }
                }
                reach.insert(v, (high.max(end), *g));
            }
            if versions[i] > 0 {
                a.changed += 1;
                a.superseded += reach
                    .iter()
                    .filter(|(v, _)| **v < versions[i])
                    .map(|(_, (high, _))| high)
                    .sum::<u64>();
            }
            if last_version != versions[i] && !entries.is_empty() {
                a.notes.push(format!(
                    "{}: the origin serves version {} but the log implies {last_version}",
                    f.name, versions[i]
                ));
            }
        }
        a
    }

    /// The report: a table, with a verdict on each line that can fail.
    fn report(
        &self,
        rows: &[Row],
        checked: &Checked,
        a: &Accounting,
        wall: Duration,
        aborted: Option<&anyhow::Error>,
    ) -> String {
        let n = self.files.len();
        let total: u64 = self.files.iter().map(|f| f.len).sum();
        let config = SessionConfig::default();
        let mut t = Table::default();
        let pass = |ok: bool| if ok { "ok" } else { "FAIL" };
        t.row(
            "files completed (SHA-256 as the origin's)",
            format!("{}", checked.intact),
            format!("{n}"),
            pass(checked.intact == n),
        );
        t.row(
            "files missing",
            format!("{}", checked.missing.len()),
            "0".into(),
            pass(checked.missing.is_empty()),
        );
        t.row(
            "files corrupted (SHA-256 or length differs)",
            format!("{}", checked.corrupted.len()),
            "0".into(),
            pass(checked.corrupted.is_empty()),
        );
        let states = rows.iter().filter(|r| r.state == "completed").count();
        t.row(
            "tasks completed in ferry's state",
            format!("{states}"),
            format!("{n}"),
            pass(states == n),
        );
        let kills = self.kills.len();
        t.row(
            "SIGKILLs of ferry run",
            format!("{kills}"),
            format!("≥ {}", self.s.kills),
            pass(kills >= self.s.kills as usize),
        );
        let lived: Vec<f64> = self.kills.iter().map(|k| k.after.as_secs_f64()).collect();
        let active: usize = self.kills.iter().map(|k| k.active).sum();
        t.row(
            "  run lifetime before a kill (min / mean / max)",
            if lived.is_empty() {
                "-".into()
            } else {
                format!(
                    "{:.2} / {:.2} / {:.2} s",
                    lived.iter().copied().fold(f64::INFINITY, f64::min),
                    lived.iter().sum::<f64>() / lived.len() as f64,
                    lived.iter().copied().fold(0.0, f64::max)
                )
            },
            String::new(),
            "",
        );
        t.row(
            "  transfers interrupted by the kills",
            format!("{active}"),
            String::new(),
            "",
        );
        t.row(
            "runs of ferry run (all)",
            format!(
                "{} ({} exited 0 with work left, {} failed)",
                self.runs, self.early_exits, self.runner_errors
            ),
            String::new(),
            "",
        );
        t.row(
            "bytes re-fetched after kills",
            size(a.after_kills),
            format!(
                "≤ {} ({} transfers × {})",
                size(a.bound),
                active,
                size(a.per_transfer)
            ),
            pass(a.after_kills <= a.bound),
        );
        let worst_kill = self
            .kills
            .iter()
            .zip(&a.per_kill)
            .max_by_key(|(_, b)| **b)
            .map_or("-".into(), |(k, b)| {
                format!("{} over {} transfers", size(*b), k.active)
            });
        t.row(
            "  worst kill / worst single resume",
            format!("{worst_kill} / {}", size(a.worst_resume)),
            format!(
                "checkpoint: {} or {:?}",
                size(config.checkpoint_bytes),
                config.checkpoint_interval
            ),
            "",
        );
        t.row(
            "bytes re-fetched after in-run faults",
            size(a.after_faults),
            String::new(),
            "",
        );
        t.row(
            "bytes of representations replaced (changed ETag)",
            format!("{} in {} files", size(a.superseded), a.changed),
            String::new(),
            "",
        );
        t.row(
            "bytes sent by the origin / file bytes",
            format!(
                "{} / {} in {} requests",
                size(a.sent),
                size(total),
                a.requests
            ),
            String::new(),
            "",
        );
        t.row(
            "resumes from beyond the bytes sent",
            format!("{}", a.gaps.len()),
            "0".into(),
            pass(a.gaps.is_empty()),
        );
        t.row(
            "faults hit: 503 / cuts / stalls",
            format!("{} / {} / {}", a.unavailable, a.cuts, a.stalls),
            String::new(),
            "",
        );
        let reported = self.reported.iter().filter(|&&r| r > 0).count();
        t.row(
            "tasks reported done (control-socket follow)",
            format!("{reported}"),
            format!("{n}"),
            pass(reported == n),
        );
        let reports: u32 = self.reported.iter().sum::<u32>() + self.reopened.iter().sum::<u32>();
        let dup = self
            .reported
            .iter()
            .map(|r| r.saturating_sub(1))
            .sum::<u32>()
            + self.reopened.iter().sum::<u32>();
        t.row(
            "  reports in all / duplicates",
            format!("{reports} / {dup}"),
            format!("≥ {n} / allowed"),
            "",
        );
        let reopened = self.reopened.iter().filter(|&&r| r > 0).count();
        t.row(
            "  reported done, then not completed on disk",
            format!("{reopened}"),
            "0".into(),
            if reopened == 0 { "ok" } else { "note" },
        );
        t.row(
            "  followed runs / connected",
            format!(
                "{} / {}{}",
                self.followed_runs,
                self.connected_runs,
                if self.report_pass {
                    " (incl. a last pass to ask about the rest)"
                } else {
                    ""
                }
            ),
            String::new(),
            "",
        );
        let printed: u32 = self.printed.iter().sum();
        let unprinted = self.printed.iter().filter(|&&p| p == 0).count();
        t.row(
            "  \"NAME: done\" lines printed by ferry run",
            format!("{printed}, {unprinted} files never"),
            "every file at least once".into(),
            pass(unprinted == 0),
        );
        if self.idle_probes > 0 {
            t.row(
                "restarts with nothing to do that hung",
                format!("{} of {}", self.idle_hangs, self.idle_probes),
                format!("0 (exit within {IDLE_PROBE_LIMIT:?})"),
                pass(self.idle_hangs == 0),
            );
        }
        let failed = self.failed.iter().filter(|f| f.is_some()).count();
        t.row(
            "tasks reported failed",
            format!("{failed}"),
            "0".into(),
            pass(failed == 0),
        );
        t.row(
            "partials left in the output directory",
            format!("{}", checked.partials),
            "0".into(),
            if checked.partials == 0 { "ok" } else { "note" },
        );
        if aborted.is_some() {
            t.row(
                "soak stopped early",
                "yes (see below)".into(),
                "no".into(),
                "FAIL",
            );
        }
        t.row("wall time", duration(wall), String::new(), "");

        let mut s = format!(
            "soak report: seed {:#x}, {n} files ({} in all, {} to {}), origin pace {}/s per response, ferry {}\n\n",
            self.s.seed,
            size(total),
            size(self.s.min_size),
            size(self.s.max_size),
            size(self.s.rate),
            if self.s.debug { "debug" } else { "release" },
        );
        s.push_str(&t.render());
        let mut details = Vec::new();
        if let Some(e) = aborted {
            details.push(format!("stopped early: {e:#}"));
        }
        for (i, why) in &checked.corrupted {
            details.push(format!("corrupted: {}: {why}", self.files[*i].name));
        }
        for i in &checked.missing {
            let state = rows
                .iter()
                .find(|r| r.id == self.task_ids[*i])
                .map_or("unknown", |r| r.detail.as_str());
            details.push(format!("missing: {} (ferry: {state})", self.files[*i].name));
        }
        for (i, f) in self.failed.iter().enumerate() {
            if let Some(e) = f {
                details.push(format!("reported failed: {}: {e}", self.files[i].name));
            }
        }
        for (i, &r) in self.reported.iter().enumerate() {
            if r == 0 {
                details.push(format!("never reported done: {}", self.files[i].name));
            }
        }
        for (i, &r) in self.reopened.iter().enumerate() {
            if r > 0 {
                details.push(format!(
                    "reported done, then found not completed at the next start ({r}×): {}",
                    self.files[i].name
                ));
            }
        }
        for e in self.refusals.iter().take(3) {
            details.push(format!("the runner refused a follow request: {e}"));
        }
        details.extend(a.gaps.iter().take(10).cloned());
        details.extend(a.notes.iter().cloned());
        if self.idle_hangs > 0 {
            details.push(format!(
                "`ferry run --until-idle` with nothing left to do did not exit {} of {} times (killed after {IDLE_PROBE_LIMIT:?})",
                self.idle_hangs, self.idle_probes
            ));
        }
        for (i, &p) in self.printed.iter().enumerate() {
            if p == 0 {
                details.push(format!(
                    "ferry run never printed \"{}: done\"",
                    self.files[i].name
                ));
            }
        }
        for d in details {
            s.push_str("\n  - ");
            s.push_str(&d);
        }
        s
    }
}

/// Whether a logged request answered with body bytes (200 or 206).
fn serves(e: &LogEntry) -> bool {
    e.status == StatusCode::OK || e.status == StatusCode::PARTIAL_CONTENT
}

/// The first byte of `bytes=N-…` (0 when there is none).
fn range_start(range: Option<&str>) -> u64 {
    range
        .and_then(|r| r.trim().strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A `ferry` process of the soak's: SIGKILLed and reaped when dropped, so
/// no error path leaves one running.
struct Ferry(Child);

impl Ferry {
    /// SIGKILLs it (if it still runs) and reaps it.
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.0.try_wait().context("waiting for ferry")
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Follows `ids` on a run's control socket: connects as soon as the runner
/// listens (until told to give up), asks, and passes on each ended task
/// until the runner goes away.
async fn follow(
    socket: PathBuf,
    ids: Vec<String>,
    tx: mpsc::UnboundedSender<Heard>,
    give_up: Arc<AtomicBool>,
) {
    let stream = loop {
        // A socket left by a killed runner refuses; the new runner replaces it.
        if let Ok(s) = UnixStream::connect(&socket).await {
            break s;
        }
        if give_up.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (read, mut write) = stream.into_split();
    // Task ids go as numbers on the wire (they print in hex).
    let numbers: Vec<u64> = ids
        .iter()
        .filter_map(|id| u64::from_str_radix(id, 16).ok())
        .collect();
    let mut request = json!({"op": "follow", "ids": numbers}).to_string();
    request.push('\n');
    if write.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let _ = write.shutdown().await;
    let _ = tx.send(Heard::Connected);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let event = v["event"].as_str();
        if matches!(event, Some("completed" | "failed")) {
            let _ = tx.send(Heard::Done {
                id: v["id"]
                    .as_u64()
                    .map(|n| format!("{n:016x}"))
                    .unwrap_or_default(),
                ok: event == Some("completed"),
                error: v["error"].as_str().unwrap_or_default().to_owned(),
            });
        } else if let Some(e) = v.get("error").and_then(Value::as_str) {
            let _ = tx.send(Heard::Refused(e.to_owned()));
        }
    }
}

/// The origin's log replayed.
#[derive(Default)]
struct Accounting {
    /// Bytes sent again after a kill interrupted the request that sent them.
    after_kills: u64,
    /// Bytes sent again after a request failed within a run (cut, stall…).
    after_faults: u64,
    /// Bytes of representations that a changed ETag made obsolete.
    superseded: u64,
    /// Files whose representation changed.
    changed: usize,
    /// The bound on `after_kills`.
    bound: u64,
    /// One interrupted transfer's share of the bound.
    per_transfer: u64,
    /// Bytes re-fetched after each kill.
    per_kill: Vec<u64>,
    /// The most one resumed request fetched again.
    worst_resume: u64,
    sent: u64,
    requests: usize,
    unavailable: u64,
    cuts: u64,
    stalls: u64,
    /// Requests that resumed beyond the bytes sent before them.
    gaps: Vec<String>,
    notes: Vec<String>,
}

/// What the output directory holds, checked against the origin.
#[derive(Default)]
struct Checked {
    intact: usize,
    missing: Vec<usize>,
    corrupted: Vec<(usize, String)>,
    partials: usize,
}

/// Checks every file against the SHA-256 of the representation the origin
/// serves now, on as many threads as there are cores.
fn verify(files: &[Planned], versions: &[u32], out: &Path) -> Checked {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = files.get(i) else { break };
                    let verdict = check_file(f, versions[i], &out.join(&f.name));
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, verdict));
                }
            });
        }
    });
    let mut checked = Checked::default();
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    for (i, verdict) in results {
        match verdict {
            FileVerdict::Intact => checked.intact += 1,
            FileVerdict::Missing => checked.missing.push(i),
            FileVerdict::Corrupted(why) => checked.corrupted.push((i, why)),
        }
    }
    checked.partials = std::fs::read_dir(out)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                .count()
        })
        .unwrap_or(0);
    checked
}

/// How one file compares with the origin.
enum FileVerdict {
    Intact,
    Missing,
    Corrupted(String),
}

fn check_file(f: &Planned, version: u32, path: &Path) -> FileVerdict {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else {
        return FileVerdict::Missing;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len != f.len {
        return FileVerdict::Corrupted(format!("{len} bytes, the origin has {}", f.len));
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) => return FileVerdict::Corrupted(format!("unreadable: {e}")),
        }
    }
    let got: [u8; 32] = hasher.finalize().into();
    if got == testkit::body::sha256(f.seed, version, f.len) {
        return FileVerdict::Intact;
    }
    FileVerdict::Corrupted(first_difference(f, version, path))
}

/// Where a corrupted file first differs from the origin's bytes, and
/// whether it holds the other representation there (a splice).
fn first_difference(f: &Planned, version: u32, path: &Path) -> String {
    let Ok(data) = std::fs::read(path) else {
        return "SHA-256 differs (unreadable on a second look)".into();
    };
    let want = testkit::body::bytes(f.seed, version, 0..f.len);
    let Some(at) = data.iter().zip(&want).position(|(a, b)| a != b) else {
        return "SHA-256 differs".into();
    };
    let other = if version == 0 { 1 } else { 0 };
    let end = (at as u64 + 4096).min(f.len);
    let theirs = testkit::body::bytes(f.seed, other, at as u64..end);
    let splice = data.get(at..end as usize) == Some(&theirs[..]);
    format!(
        "SHA-256 differs from byte {at} on{}",
        if splice {
            format!(" (version {other}'s bytes there: two representations spliced)")
        } else {
            String::new()
        }
    )
}

/// A table of measured values, expectations and verdicts.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, what: &str, measured: String, expected: String, verdict: &str) {
        self.rows
            .push([what.to_owned(), measured, expected, verdict.to_owned()]);
    }

    fn render(&self) -> String {
        let head = ["", "measured", "expected / bound", "verdict"];
        let mut widths = head.map(|h| h.chars().count());
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 4]| {
            let mut s = String::from("  ");
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                s.push_str(c);
                if i < 3 {
                    s.push_str(&" ".repeat(w - c.chars().count() + 2));
                }
            }
            s.trim_end().to_owned() + "\n"
        };
        let mut s = line(head);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        s.push_str(&line([&rule[0], &rule[1], &rule[2], &rule[3]]));
        for r in &self.rows {
            s.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
        }
        s
    }
}

/// The rows of a rendered report whose verdict is FAIL.
fn report_failures(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter(|l| l.trim_end().ends_with("FAIL"))
        .map(|l| {
            l.split("  ")
                .find(|c| !c.trim().is_empty())
                .unwrap_or(l)
                .trim()
        })
        .collect()
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A byte count for people: `1.5 MiB`.
fn size(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration for people: `4m 12s` or `48.2 s`.
fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m {:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_seeds_parse() {
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert!(parse_size("fast").is_err());
        assert_eq!(parse_seed("0x1f"), Ok(31));
        assert_eq!(parse_seed("31"), Ok(31));
    }

    #[test]
    fn ranges_start_where_asked() {
        assert_eq!(range_start(Some("bytes=1234-")), 1234);
        assert_eq!(range_start(Some("bytes=0-99")), 0);
        assert_eq!(range_start(None), 0);
    }

    #[test]
    fn a_plan_is_a_function_of_its_seed() {
        let settings = |seed| Settings {
            files: 50,
            kills: 1,
            min_size: MIN_SIZE,
            max_size: 16 << 20,
            rate: 1 << 20,
            seed,
            time_limit: Duration::from_secs(1),
            dir: PathBuf::new(),
            keep: false,
            debug: false,
        };
        let a = plan(&settings(7), &mut Rng(7));
        let b = plan(&settings(7), &mut Rng(7));
        assert_eq!(a.len(), 50);
        assert_eq!((a[0].len, a[1].len), (16 << 20, MIN_SIZE));
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.len == y.len && x.seed == y.seed)
        );
        for f in &a {
            assert!((MIN_SIZE..=16 << 20).contains(&f.len));
            if let (Some((n, _)), Some(c)) = (f.faults.unavailable, f.faults.change) {
                assert_ne!(n, c, "a 503 would hide the change");
            }
            assert_ne!(f.faults.change, Some(1));
        }
    }

    #[test]
    fn failing_rows_are_found() {
        let mut t = Table::default();
        t.row("files", "1".into(), "2".into(), "FAIL");
        t.row("kills", "3".into(), "3".into(), "ok");
        assert_eq!(report_failures(&t.render()), vec!["files"]);
    }
}
