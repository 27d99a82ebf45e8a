//! `ferry`: background downloads and uploads that survive crashes, kills and restarts.
//!
//! ```text
//! ferry get URL... [-i LIST] [-o DIR] [--sha256 HEX] [--limit-rate RATE] [--discretionary]
//!           [--require-charging] [--no-cellular] [--no-expensive] [--schedule TIMETABLE]
//!           [--metered IFACE] [--cacert PEM] [--resolve HOST:PORT:ADDR] [--checkpoint SIZE|off]
//! ferry add URL... [-i LIST] [-o DIR] [--sha256 HEX] [--limit-rate RATE] [--discretionary]
//!           [--require-charging]
//! ferry put FILE URL [-F NAME=VALUE]... [--form-file NAME] [-X METHOD] [--content-type TYPE]
//!           [--resumable | --tus] [--upload-chunk SIZE] [--discretionary] [--require-charging] [the runner options of get]
//! ferry run [--until-idle] [--limit-rate RATE] [--no-cellular] [--no-expensive]
//!           [--schedule TIMETABLE] [--metered IFACE] [--cacert PEM] [--resolve HOST:PORT:ADDR]
//!           [--checkpoint SIZE|off]
//! ferry ls [--json]
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
//! Network and power conditions come from sysfs and `/proc/net/route` under
//! `$FERRY_SYSFS_ROOT` (default `/`), read every 2 s; downloads from this
//! machine (localhost) are not held back by the network.
//!
//! A `get` whose work rides one connection (one URL, or https URLs on one
//! origin) runs on one worker thread; `TOKIO_WORKER_THREADS` overrides.
//!
//! State lives in `$FERRY_HOME`, else the platform data directory
//! (`~/.local/share/ferry` on Linux). Running `ferry get` again with the same
//! URL and output directory continues that download where it stopped.

mod control;
mod names;
mod payloads;
mod state;

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use scheduler::{Offline, Session, SessionConfig, SessionEvent, TaskHandle};
use store_fs::{FsPayloadStore, FsTaskStore};
use transfer_core::{
    Completion, Delegate, Destination, Event, NoDelegate, Outcome, Phase, TaskId, TaskKind,
    TaskRecord, TaskSpec,
};
use transport_http::{HttpConfig, HttpTransport};

/// mimalloc: the transfer path allocates and frees buffers at a high rate,
/// and glibc's allocator gave memory back and faulted it in again (page
/// faults and zeroing were several per cent of a large download's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The session every `ferry` command uses.
const SESSION: &str = "default";

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Background downloads and uploads that survive crashes, kills and restarts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Keep the session's state in S3 or an S3-compatible server, under
    /// `s3://BUCKET/PREFIX`, instead of `$FERRY_HOME`: several `ferry`
    /// processes, on this machine or others, then share the session, each
    /// task run by one of them at a time.
    #[arg(
        long,
        global = true,
        env = "FERRY_STORE",
        value_name = "s3://BUCKET/PREFIX"
    )]
    store: Option<String>,
    /// The S3-compatible endpoint for `--store` and `--to s3://…` (default:
    /// `AWS_ENDPOINT_URL`, else AWS). Credentials and region come from the
    /// `AWS_*` variables.
    #[arg(long, global = true, value_name = "URL")]
    endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download URLs into a directory and wait until every one ends.
    Get(GetArgs),
    /// Add downloads without waiting (a running `ferry` starts them at once).
    Add(AddArgs),
    /// Upload a file (PUT, or a POST of a form) and wait until it ends.
    Put {
        #[command(flatten)]
        put: PutArgs,
        #[command(flatten)]
        opts: RunnerOpts,
    },
    /// Run the session: every queued download, until stopped.
    Run {
        /// Stop once nothing is running, queued or waiting to retry.
        #[arg(long)]
        until_idle: bool,
        /// Rate limit for the whole session in bytes per second (suffixes
        /// k, M, G: 1024-based).
        #[arg(long)]
        limit_rate: Option<String>,
        /// Every task this run runs is treated as background work or as
        /// needing external power, on top of its own flags.
        #[command(flatten)]
        when: WhenArgs,
        #[command(flatten)]
        opts: RunnerOpts,
    },
    /// List the tasks of the session.
    Ls {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Suspend a task (it keeps its partial).
    Pause {
        /// The task's id, as `ferry ls` shows it.
        id: String,
    },
    /// Resume a suspended task.
    Resume {
        /// The task's id, as `ferry ls` shows it.
        id: String,
    },
    /// Cancel a task and delete its partial.
    Cancel {
        /// The task's id, as `ferry ls` shows it.
        id: String,
    },
    /// Show the network and power conditions detected, and what the default
    /// policy lets run now (sysfs root from `FERRY_SYSFS_ROOT`, else `/`).
    Conditions {
        #[command(flatten)]
        sensing: Sensing,
    },
}

/// How network and power conditions are read (`get`, `run`, `conditions`).
#[derive(clap::Args, Debug)]
struct Sensing {
    /// Treat network interface IFACE as metered (expensive), e.g. a phone
    /// tethered over USB; cellular interfaces always are. Repeatable.
    #[arg(long, value_name = "IFACE")]
    metered: Vec<String>,
}

impl Sensing {
    /// The Linux condition source's settings: the sysfs root from
    /// `FERRY_SYSFS_ROOT` (else `/`) and the metered interfaces.
    fn config(&self) -> scheduler::LinuxConditionsConfig {
        let mut config = scheduler::LinuxConditionsConfig::default();
        if let Some(root) = std::env::var_os("FERRY_SYSFS_ROOT") {
            config.root = root.into();
        }
        config.expensive.extend(self.metered.iter().cloned());
        config
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls is built with two providers here (the S3 client brings
    // aws-lc-rs): name ring, which every other part already uses, for the
    // process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A `get`'s URLs are read and checked before the runtime starts: they
    // choose its size.
    let cli = match cli.command {
        Command::Get(mut args) => match args.add.resolved() {
            Ok(add) => {
                args.add = add;
                Cli {
                    command: Command::Get(args),
                    ..cli
                }
            }
            Err(e) => return fail(e),
        },
        command => Cli { command, ..cli },
    };
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
    let lease_ttl = match &cli.command {
        Command::Get(args) => args.opts.lease_ttl.as_deref(),
        Command::Put { opts, .. } | Command::Run { opts, .. } => opts.lease_ttl.as_deref(),
        _ => None,
    };
    let ttl = match lease_ttl {
        Some(t) => state::parse_duration(t).with_context(|| format!("--lease-ttl {t:?}"))?,
        None => Duration::from_secs(30),
    };
    let shared = cli
        .store
        .as_deref()
        .map(|url| state::Shared::open(url, cli.endpoint.as_deref(), ttl))
        .transpose()?;
    let shared = shared.as_ref();
    let endpoint = cli.endpoint;
    match cli.command {
        Command::Get(mut args) => {
            args.opts.endpoint = endpoint;
            get(args, shared).await
        }
        Command::Put { put, mut opts } => {
            opts.endpoint = endpoint;
            transfer(Job::Put(put.resolved()?), &opts, shared).await
        }
        Command::Add(args) => add(args, shared, endpoint).await,
        Command::Run {
            until_idle,
            limit_rate,
            when,
            mut opts,
        } => {
            opts.endpoint = endpoint;
            opts.session_rate = limit_rate.as_deref().map(parse_rate).transpose()?;
            opts.session_constraints = transfer_core::Constraints {
                discretionary: when.discretionary,
                requires_charging: when.require_charging,
                requires_unmetered: false,
            };
            run(until_idle, &opts, shared).await
        }
        Command::Conditions { sensing } => conditions(&sensing),
        Command::Ls { json } => ls(json, shared, endpoint).await,
        Command::Pause { id } => user(&id, "pause", shared, endpoint).await,
        Command::Resume { id } => user(&id, "resume", shared, endpoint).await,
        Command::Cancel { id } => user(&id, "cancel", shared, endpoint).await,
    }
}

#[allow(clippy::print_stderr)]
fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("ferry: {e:#}");
    ExitCode::from(2)
}

/// The state directory: `$FERRY_HOME`, else the platform data directory.
fn home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("FERRY_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let base = dirs::data_dir().context("no data directory: set FERRY_HOME")?;
    Ok(base.join("ferry"))
}

/// How a command reaches the session.
enum Access {
    /// Another process runs it: talk to it.
    Runner(tokio::net::UnixStream),
    /// Nobody runs it: the store is ours.
    Store(FsTaskStore),
}

/// The running ferry's socket if one answers, else the store. A store held
/// for a moment by a command that is not a runner (`ls`, `add`) is tried
/// again for a few seconds; a runner shows up on its socket meanwhile.
async fn access(home: &Path) -> anyhow::Result<Access> {
    let start = Instant::now();
    loop {
        if let Some(s) = control::connect(home).await {
            return Ok(Access::Runner(s));
        }
        match FsTaskStore::open(home) {
            Ok(store) => return Ok(Access::Store(store)),
            Err(e)
                if e.kind() == transfer_core::StoreErrorKind::Unavailable
                    && start.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if e.kind() == transfer_core::StoreErrorKind::Unavailable => {
                bail!(
                    "another ferry process is using {} and does not answer on its control socket ({e})",
                    home.display()
                )
            }
            Err(e) => bail!("opening the state in {}: {e}", home.display()),
        }
    }
}

#[derive(clap::Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    add: AddArgs,
    #[command(flatten)]
    opts: RunnerOpts,
}

/// How the process that runs the session runs it (`get` and `run`).
#[derive(clap::Args, Debug)]
struct RunnerOpts {
    /// More trusted root certificates (PEM), beside the platform's.
    #[arg(long)]
    cacert: Vec<PathBuf>,
    /// Make each download durable every SIZE bytes (suffixes k, M, G;
    /// default 32M) and about once a second: after a kill, a download
    /// continues from its last checkpoint and fetches again what came after
    /// it (at full speed the disk flushes while the next bytes arrive, so
    /// that can be up to two checkpoints' worth); `off`: only when it
    /// completes (a kill may lose it all).
    #[arg(long, value_name = "SIZE|off")]
    checkpoint: Option<String>,
    /// Transfers at once, in all and to any one server (default 16 in
    /// all, 8 to one server).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    parallel: Option<u32>,
    /// Wait while on a cellular network.
    #[arg(long)]
    no_cellular: bool,
    /// Wait while on an expensive (metered) network.
    #[arg(long)]
    no_expensive: bool,
    /// A bandwidth timetable for the session, as rclone writes them:
    /// "08:00,512k 12:00,10M 23:00,off", with weekday forms ("Mon-08:00,512k").
    #[arg(long, value_name = "TIMETABLE")]
    schedule: Option<String>,
    /// Connect to ADDR:PORT for HOST instead of resolving HOST, in the form
    /// of curl's `--resolve` (TLS still checks the certificate for HOST).
    /// Repeatable.
    #[arg(long, value_name = "HOST:PORT:ADDR")]
    resolve: Vec<String>,
    #[command(flatten)]
    sensing: Sensing,
    /// With `--store`: how long this process's hold on a task lasts without
    /// a renewal (default 30s; renewed every third of it). If the process
    /// dies, the others take its tasks over after that much silence.
    #[arg(long, value_name = "DURATION")]
    lease_ttl: Option<String>,
    /// The global `--endpoint`.
    #[arg(skip)]
    endpoint: Option<String>,
    /// HTTP/3 only (over QUIC; https URLs).
    #[arg(long, conflicts_with = "prefer_http3")]
    http3: bool,
    /// HTTP/3 where the server answers over QUIC, else HTTP/2 or HTTP/1.1
    /// (servers that advertise HTTP/3 with Alt-Svc get it anyway).
    #[arg(long)]
    prefer_http3: bool,
    /// Largest append of a resumable upload (suffixes k, M, G; default
    /// 64M): at most this much is sent again after an interruption.
    #[arg(long, value_name = "SIZE")]
    upload_chunk: Option<String>,
    /// The session's rate limit (`ferry run --limit-rate`).
    #[arg(skip)]
    session_rate: Option<u64>,
    /// Constraints on every task (`ferry run --discretionary`,
    /// `--require-charging`).
    #[arg(skip)]
    session_constraints: transfer_core::Constraints,
}

impl RunnerOpts {
    /// The session configuration these options ask for.
    fn config(&self) -> anyhow::Result<SessionConfig> {
        let mut config = SessionConfig::default();
        match self.checkpoint.as_deref() {
            None => {}
            Some("off") => {
                config.checkpoint_bytes = u64::MAX;
                config.checkpoint_interval = Duration::MAX;
            }
            Some(size) => {
                config.checkpoint_bytes = parse_size(size)
                    .with_context(|| format!("--checkpoint {size:?}: a size such as 8M, or off"))?
            }
        }
        if let Some(size) = &self.upload_chunk {
            config.upload_chunk_bytes = parse_size(size)
                .with_context(|| format!("--upload-chunk {size:?}: a size such as 8M"))?;
        }
        config.protocol = if self.http3 {
            transfer_core::ProtocolPreference::RequireHttp3
        } else if self.prefer_http3 {
            transfer_core::ProtocolPreference::PreferHttp3
        } else {
            transfer_core::ProtocolPreference::Auto
        };
        if let Some(n) = self.parallel {
            config.policy.max_concurrent = n;
            config.policy.max_per_host = n;
        }
        config.policy.rate_limit = self.session_rate;
        config.policy.constraints = self.session_constraints;
        config.policy.allows_cellular = !self.no_cellular;
        config.policy.allows_expensive = !self.no_expensive;
        if let Some(t) = &self.schedule {
            config.policy.timetable = Some(
                transfer_core::Timetable::parse(t).with_context(|| format!("--schedule {t:?}"))?,
            );
        }
        Ok(config)
    }
}

/// When a task may run: shared by `get`, `add` and `put` (and `run`, for
/// every task it runs).
#[derive(clap::Args, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct WhenArgs {
    /// Background work: runs only on an unmetered, unconstrained network,
    /// outside low power mode, and charging or above 30% battery.
    #[arg(long)]
    #[serde(default)]
    discretionary: bool,
    /// Runs only while on external power.
    #[arg(long)]
    #[serde(default)]
    require_charging: bool,
}

/// What to download and where: shared by `get`, `add` and the control socket.
#[derive(clap::Args, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct AddArgs {
    /// The URLs (http or https).
    #[arg(required_unless_present = "input_file")]
    urls: Vec<String>,
    /// Read more URLs from this file, one per line (`-` for standard
    /// input); blank lines and lines starting with `#` are skipped.
    #[arg(short = 'i', long = "input-file", value_name = "LIST")]
    #[serde(skip)]
    input_file: Option<PathBuf>,
    /// The output directory (created if missing).
    #[arg(short = 'o', long = "output", default_value = ".")]
    output: PathBuf,
    /// Download into an object instead of a file: `s3://BUCKET/KEY` (one
    /// URL), or `s3://BUCKET/PREFIX/` (any number: each URL's file name
    /// after the prefix), through a multipart upload whose parts are the
    /// checkpoints.
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    #[serde(default)]
    to: Option<String>,
    /// Expected SHA-256 of the payload (64 hex digits; one URL only).
    #[arg(long)]
    sha256: Option<String>,
    /// Rate limit per download in bytes per second (suffixes k, M, G: 1024-based).
    #[arg(long)]
    limit_rate: Option<String>,
    /// Replace existing files instead of choosing a numbered name.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    #[serde(flatten)]
    when: WhenArgs,
}

impl AddArgs {
    /// What these arguments ask of every download: checksum, rate limit,
    /// when it may run.
    fn finish(
        &self,
        mut b: transfer_core::TaskSpecBuilder,
        rate: Option<u64>,
    ) -> transfer_core::TaskSpecBuilder {
        if let Some(hex) = &self.sha256 {
            b = b.expected_sha256(hex.clone());
        }
        if let Some(r) = rate {
            b = b.max_rate(r);
        }
        b.discretionary(self.when.discretionary)
            .requires_charging(self.when.require_charging)
    }

    /// Checks the arguments and makes the output directory absolute.
    fn resolved(mut self) -> anyhow::Result<AddArgs> {
        if let Some(list) = self.input_file.take() {
            let text = if list.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the URL list")?
            } else {
                std::fs::read_to_string(&list)
                    .with_context(|| format!("reading {}", list.display()))?
            };
            self.urls.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
            if self.urls.is_empty() {
                bail!("{} lists no URLs", list.display());
            }
        }
        if let Some(to) = &self.to {
            let prefix = to.ends_with('/');
            if payloads::parse_s3(&format!("{to}{}", if prefix { "x" } else { "" })).is_none() {
                bail!("--to {to:?}: s3://BUCKET/KEY, or s3://BUCKET/PREFIX/");
            }
            if !prefix && self.urls.len() != 1 {
                bail!("--to {to:?} names one object; give one URL, or a prefix ending in /");
            }
        }
        if self.sha256.is_some() && self.urls.len() != 1 {
            bail!("--sha256 applies to one URL; give one URL per command");
        }
        if let Some(r) = &self.limit_rate {
            parse_rate(r)?;
        }
        std::fs::create_dir_all(&self.output)
            .with_context(|| format!("creating {}", self.output.display()))?;
        self.output = std::fs::canonicalize(&self.output)
            .with_context(|| format!("resolving {}", self.output.display()))?;
        Ok(self)
    }
}

/// Where tasks go: the running session, or the state on disk.
pub(crate) enum Target<'a> {
    Live(&'a Session),
    Offline(&'a Offline),
}

impl Target<'_> {
    async fn tasks(&self) -> anyhow::Result<Vec<TaskRecord>> {
        Ok(match self {
            Target::Live(s) => s.tasks().await?,
            Target::Offline(o) => o.tasks().await?,
        })
    }

    async fn enqueue(&self, specs: Vec<TaskSpec>) -> anyhow::Result<Vec<TaskId>> {
        Ok(match self {
            Target::Live(s) => s
                .enqueue_many(specs, true)
                .await?
                .iter()
                .map(TaskHandle::id)
                .collect(),
            Target::Offline(o) => o.enqueue_many(specs).await?,
        })
    }
}

/// Enqueues one download per URL: a safe name in the output directory, and
/// a key (URL and directory) so the same command again finds the same task.
pub(crate) async fn add_tasks(
    target: Target<'_>,
    args: &AddArgs,
) -> anyhow::Result<Vec<(TaskId, String)>> {
    let rate = args.limit_rate.as_deref().map(parse_rate).transpose()?;
    let records = target.tasks().await?;
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let mut tried = HashMap::new();
    let mut specs = Vec::new();
    let mut labels = Vec::new();
    let mut done = Vec::new();
    if let Some(to) = &args.to {
        // Objects: `to` itself for one URL, else the URL's name after it.
        let mut keys = HashSet::new();
        let objects = args.urls.iter().map(|url| {
            let mut key = to.clone();
            if to.ends_with('/') {
                let name = names::file_name(url);
                key = format!("{to}{name}");
                let mut n = 1;
                while !keys.insert(key.clone()) {
                    key = format!("{to}{name}-{n}");
                    n += 1;
                }
            }
            (url.clone(), key)
        });
        let objects: Vec<(String, String)> = objects.collect();
        return add_objects(target, args, objects, rate, &records).await;
    }
    let by_key = by_key(&records);
    let destination_of = |r: &TaskRecord| match &r.spec.kind {
        TaskKind::Download {
            destination: Destination::Path(p),
        } => Some(p.clone()),
        _ => None,
    };
    let listed = if args.overwrite {
        None
    } else {
        names::listing(&args.output, args.urls.len())
    };
    for url in &args.urls {
        let key = format!("get {} {url}", args.output.display());
        let mine = by_key.get(key.as_str()).map_or(&[][..], Vec::as_slice);
        // Finished before, and the file is still there: nothing to do.
        if !args.overwrite
            && let Some((r, p)) = mine
                .iter()
                .filter(|r| r.state.phase == Phase::Completed)
                .find_map(|r| destination_of(r).filter(|p| p.exists()).map(|p| (r, p)))
        {
            done.push((r.id, display_name(&p)));
            continue;
        }
        let unfinished = mine.iter().copied().find(|r| !r.state.is_terminal());
        let dest = match unfinished.and_then(destination_of) {
            Some(p) => p,
            None => names::unique(
                &args.output,
                &names::file_name(url),
                args.overwrite,
                listed.as_ref(),
                &taken,
                &mut tried,
            ),
        };
        taken.insert(dest.clone());
        let name = display_name(&dest);
        let b = TaskSpec::download(url, Destination::Path(dest))
            .key(key)
            .label(name.clone());
        specs.push(args.finish(b, rate).build().with_context(|| url.clone())?);
        labels.push(name);
    }
    // Every URL was checked above: a bad one anywhere has queued nothing.
    // Batches help only a running session (its first downloads start while
    // the rest are saved); the store's own enqueue reads every record per
    // call.
    let mut batch = match target {
        Target::Live(_) => FIRST_BATCH,
        Target::Offline(_) => usize::MAX,
    };
    let mut specs = specs.into_iter();
    let mut labels = labels.into_iter();
    while !specs.as_slice().is_empty() {
        let part: Vec<TaskSpec> = if specs.len() <= batch {
            // The rest in one: the list's own allocation, not a copy of it.
            std::mem::take(&mut specs).collect()
        } else {
            specs.by_ref().take(batch).collect()
        };
        let names: Vec<String> = labels.by_ref().take(part.len()).collect();
        let ids = target.enqueue(part).await?;
        done.extend(ids.into_iter().zip(names));
        batch = batch.saturating_mul(4).min(LAST_BATCH);
    }
    Ok(done)
}

/// A long URL list is enqueued into a running session in batches, each
/// four times the last, from this many: the first downloads begin after one
/// small durable save, not after the whole list is saved.
const FIRST_BATCH: usize = 16;

/// The largest batch: a durable save of this many records takes a few
/// milliseconds.
const LAST_BATCH: usize = 4096;

/// What to upload and where: shared by `put` and the control socket.
#[derive(clap::Args, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct PutArgs {
    /// The file to upload.
    file: PathBuf,
    /// Where to send it (http or https).
    url: String,
    /// Send a multipart/form-data form: a text field NAME=VALUE before the
    /// file (repeatable).
    #[arg(short = 'F', long = "form", value_name = "NAME=VALUE")]
    #[serde(default)]
    form: Vec<String>,
    /// Send a form whose file part is the field NAME (default `file` when
    /// `--form` is given).
    #[arg(long, value_name = "NAME")]
    form_file: Option<String>,
    /// The method (default PUT; POST for a form).
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// The file's content type (default application/octet-stream).
    #[arg(long)]
    content_type: Option<String>,
    /// Resumable: IETF "Resumable Uploads for HTTP" (draft -12, interop
    /// version 9); an interrupted upload continues from the server's offset.
    /// A server that does not offer it gets a plain upload.
    #[arg(long, conflicts_with_all = ["form", "form_file", "tus"])]
    #[serde(default)]
    resumable: bool,
    /// Resumable with tus 1.0 (URL: the server's creation endpoint).
    #[arg(long, conflicts_with_all = ["form", "form_file"])]
    #[serde(default)]
    tus: bool,
    /// Rate limit of this upload in bytes per second (suffixes k, M, G:
    /// 1024-based).
    #[arg(long)]
    #[serde(default)]
    limit_rate: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    when: WhenArgs,
}

impl PutArgs {
    /// Checks the arguments and makes the file's path absolute.
    fn resolved(mut self) -> anyhow::Result<PutArgs> {
        self.file = std::fs::canonicalize(&self.file)
            .with_context(|| format!("upload source {}", self.file.display()))?;
        for f in &self.form {
            if !f.contains('=') {
                bail!("--form {f:?}: NAME=VALUE");
            }
        }
        self.method()?;
        if let Some(r) = &self.limit_rate {
            parse_rate(r)?;
        }
        transfer_core::Url::parse(&self.url).with_context(|| self.url.clone())?;
        Ok(self)
    }

    /// The method asked for, if any.
    fn method(&self) -> anyhow::Result<Option<http::Method>> {
        self.method
            .as_deref()
            .map(|m| {
                http::Method::from_bytes(m.as_bytes())
                    .map_err(|_| anyhow::anyhow!("--method {m:?} is not a method"))
            })
            .transpose()
    }
}

/// Enqueues the upload `args` describes, keyed by file and URL so the same
/// command again finds the same task; an upload that completed before from
/// the same, unchanged file is not sent again.
pub(crate) async fn add_upload(
    target: Target<'_>,
    args: &PutArgs,
) -> anyhow::Result<Vec<(TaskId, String)>> {
    let key = format!("put {} {}", args.file.display(), args.url);
    let name = display_name(&args.file);
    let now = std::fs::metadata(&args.file)
        .map(|m| transfer_core::FileStamp::of(&m))
        .with_context(|| format!("upload source {}", args.file.display()))?;
    let records = target.tasks().await?;
    if let Some(r) = records.iter().find(|r| {
        r.spec.key.as_deref() == Some(&key)
            && r.state.phase == Phase::Completed
            && matches!(&r.spec.kind, TaskKind::Upload { stamp: Some(s), .. } if *s == now)
    }) {
        return Ok(vec![(r.id, name)]);
    }
    let form = args
        .form_file
        .clone()
        .or_else(|| (!args.form.is_empty()).then(|| "file".to_owned()));
    let resumable = if args.tus {
        Some(transfer_core::ResumableProtocol::Tus)
    } else if args.resumable {
        Some(transfer_core::ResumableProtocol::IetfDraft)
    } else {
        None
    };
    let (body, default_method) = match form {
        None if resumable.is_some() => (
            transfer_core::UploadBody::Resumable {
                content_type: args.content_type.clone(),
                protocol: resumable.unwrap_or_default(),
            },
            http::Method::POST,
        ),
        Some(field) => (
            transfer_core::UploadBody::Multipart {
                field,
                file_name: name.clone(),
                content_type: args.content_type.clone(),
                fields: args
                    .form
                    .iter()
                    .filter_map(|f| f.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            },
            http::Method::POST,
        ),
        None => (
            transfer_core::UploadBody::Raw {
                content_type: args.content_type.clone(),
            },
            http::Method::PUT,
        ),
    };
    let method = args.method()?.unwrap_or(default_method);
    let mut spec = TaskSpec::upload(&args.url, args.file.clone(), body)
        .method(method)
        .key(key)
        .label(name.clone())
        .discretionary(args.when.discretionary)
        .requires_charging(args.when.require_charging);
    if let Some(r) = args.limit_rate.as_deref().map(parse_rate).transpose()? {
        spec = spec.max_rate(r);
    }
    let spec = spec.build().with_context(|| args.url.clone())?;
    let ids = target.enqueue(vec![spec]).await?;
    Ok(ids.into_iter().map(|id| (id, name.clone())).collect())
}

/// The session's records by key, for one lookup per URL instead of a walk
/// of every record.
fn by_key(records: &[TaskRecord]) -> HashMap<&str, Vec<&TaskRecord>> {
    let mut by_key: HashMap<&str, Vec<&TaskRecord>> = HashMap::new();
    for r in records {
        if let Some(k) = r.spec.key.as_deref() {
            by_key.entry(k).or_default().push(r);
        }
    }
    by_key
}

/// Enqueues downloads into objects, `(url, s3://BUCKET/KEY)`, except those
/// the same command already completed (unless `--overwrite`) or has under
/// way.
async fn add_objects(
    target: Target<'_>,
    args: &AddArgs,
    objects: Vec<(String, String)>,
    rate: Option<u64>,
    records: &[TaskRecord],
) -> anyhow::Result<Vec<(TaskId, String)>> {
    let mut done = Vec::new();
    let mut specs = Vec::new();
    let mut labels = Vec::new();
    let by_key = by_key(records);
    for (url, to) in objects {
        let key = format!("get {to} {url}");
        // Done before (and not to be done again), or under way: that task.
        let mine = by_key.get(key.as_str()).map_or(&[][..], Vec::as_slice);
        if let Some(r) = mine.iter().find(|r| {
            !r.state.is_terminal() || (r.state.phase == Phase::Completed && !args.overwrite)
        }) {
            done.push((r.id, to));
            continue;
        }
        let b = TaskSpec::download(&url, Destination::ObjectKey(to.clone()))
            .key(key)
            .label(&to);
        specs.push(args.finish(b, rate).build().with_context(|| url.clone())?);
        labels.push(to);
    }
    let ids = target.enqueue(specs).await?;
    done.extend(ids.into_iter().zip(labels));
    Ok(done)
}

/// Parses a rate such as `500k`, `2M` or `1048576` (bytes per second).
fn parse_rate(s: &str) -> anyhow::Result<u64> {
    parse_size(s).with_context(|| format!("--limit-rate {s:?} is not a rate such as 500k or 2M"))
}

/// Parses a size such as `500k`, `2M` or `1048576` (bytes; suffixes are
/// 1024-based), above zero.
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = digits.parse().context("not a number")?;
    if !(n.is_finite() && n > 0.0) {
        bail!("must be above zero");
    }
    Ok((n * mult as f64) as u64)
}

/// Opens the session as the runner of this state directory.
async fn runner(
    store: Arc<dyn transfer_core::TaskStore>,
    shared: Option<&state::Shared>,
    opts: &RunnerOpts,
    delegate: Arc<dyn Delegate>,
) -> anyhow::Result<(Session, PathBuf)> {
    let config = opts.config()?;
    let mut http = HttpConfig::default();
    for pem in &opts.cacert {
        let data = std::fs::read(pem).with_context(|| format!("reading {}", pem.display()))?;
        http = http
            .add_roots_pem(&data)
            .with_context(|| format!("--cacert {}", pem.display()))?;
    }
    for r in &opts.resolve {
        let (host, addr) = parse_resolve(r).with_context(|| {
            format!("--resolve {r:?}: HOST:PORT:ADDR, such as example.com:443:127.0.0.1")
        })?;
        http = http.resolve(&host, addr);
    }
    let home = home()?;
    let tcp = HttpTransport::new(http.clone()).context("TLS setup")?;
    let quic = transport_quic::QuicTransport::new(transport_quic::QuicConfig::default().http(http))
        .context("TLS setup")?;
    // What servers advertised (Alt-Svc) outlives the process, as the session does.
    let transport = transport_quic::ProtocolChoice::new(Arc::new(tcp), quic)
        .remember_in(home.join("alt-svc.json"));
    let sensing = opts.sensing.config();
    // Destinations are absolute paths this command chose (sanitized names
    // inside the output directory), so the payload root is `/`.
    let payloads = payloads::Payloads::new(
        FsPayloadStore::new("/").context("payload store")?,
        opts.endpoint.clone(),
    );
    let mut builder = Session::builder(SESSION)?
        .store(store)
        .payloads(Arc::new(payloads))
        .transport(Arc::new(transport))
        .conditions(Arc::new(scheduler::LinuxConditions::start(sensing)))
        .delegate(delegate)
        .config(config);
    if let Some(shared) = shared {
        builder = builder.shared(shared.claims(), None);
    } else if opts.lease_ttl.is_some() {
        bail!("--lease-ttl is for sessions shared through --store");
    }
    let session = builder.build().await?;
    Ok((session, home))
}

/// Where the session runs, as [`start`] found it.
enum Started {
    /// In this process (with the state directory's control socket, unless
    /// the session is shared through a bucket).
    Here(Session, Option<control::Listening>),
    /// In the process answering on this state directory's socket.
    Elsewhere(tokio::net::UnixStream, PathBuf),
}

/// Runs the session in this process: one of those sharing it through the
/// bucket, or the state directory's only runner, unless another process
/// already is.
async fn start(
    opts: &RunnerOpts,
    shared: Option<&state::Shared>,
    delegate: Arc<dyn Delegate>,
) -> anyhow::Result<Started> {
    if let Some(shared) = shared {
        let (session, _) = runner(shared.tasks.clone(), Some(shared), opts, delegate).await?;
        return Ok(Started::Here(session, None));
    }
    let home = home()?;
    let store = match access(&home).await? {
        Access::Runner(stream) => return Ok(Started::Elsewhere(stream, home)),
        Access::Store(store) => store,
    };
    let (session, home) = runner(Arc::new(store), None, opts, delegate).await?;
    let server = control::serve(&home, session.clone())?;
    Ok(Started::Here(session, Some(server)))
}

/// What `get` and `put` ask for.
enum Job {
    Get(AddArgs),
    Put(PutArgs),
}

impl Job {
    /// The request that hands the job to a running ferry.
    fn request(&self) -> serde_json::Value {
        match self {
            Job::Get(args) => serde_json::json!({"op": "add", "args": args}),
            Job::Put(args) => serde_json::json!({"op": "put", "args": args}),
        }
    }

    async fn enqueue(&self, target: Target<'_>) -> anyhow::Result<Vec<(TaskId, String)>> {
        match self {
            Job::Get(args) => add_tasks(target, args).await,
            Job::Put(args) => add_upload(target, args).await,
        }
    }
}

async fn get(args: GetArgs, shared: Option<&state::Shared>) -> anyhow::Result<ExitCode> {
    // `main` resolved the arguments before starting the runtime.
    transfer(Job::Get(args.add), &args.opts, shared).await
}

/// Runs the job's transfers (here, or in the ferry already running) and
/// waits until every one ends. An upload's answer goes to standard output.
#[allow(clippy::print_stdout)]
async fn transfer(
    job: Job,
    opts: &RunnerOpts,
    shared: Option<&state::Shared>,
) -> anyhow::Result<ExitCode> {
    let (session, server) = match start(opts, shared, Arc::new(NoDelegate)).await? {
        Started::Here(session, server) => (session, server),
        Started::Elsewhere(stream, home) => {
            return transfer_through_runner(stream, &home, &job).await;
        }
    };
    let mut events = Box::pin(session.events());
    let added = job.enqueue(Target::Live(&session)).await?;
    let tasks: Vec<(TaskHandle, String)> = added
        .into_iter()
        .map(|(id, name)| (session.task(id), name))
        .collect();

    let mut interrupted = watch_signals(session.clone());
    let shown = show_progress(&session, &tasks);
    let mut failures = 0;
    let mut answers = Vec::new();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for (handle, name) in &tasks {
        let outcome = tokio::select! {
            o = handle.wait() => o?,
            _ = interrupted.wait_for(|i| *i) => {
                shown.abandon();
                return Ok(ExitCode::from(130));
            }
        };
        if !report(name, &outcome) {
            failures += 1;
        }
        outcomes.push((handle.id(), name.as_str(), outcome));
    }
    shown.finish(&outcomes).await;
    if matches!(job, Job::Put(_)) {
        // The completions are in the stream already (recorded before
        // `wait` returned); take what is there without waiting.
        while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
            if let SessionEvent::Completed(c) = e
                && let Some(r) = c.response
                && c.outcome.is_completed()
            {
                answers.push(r.body);
            }
        }
    }
    drop(server);
    session.shutdown().await;
    for body in answers {
        std::io::Write::write_all(&mut std::io::stdout(), &body)?;
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `ferry get` while another process runs the session: hand it the tasks
/// and follow them until they end.
#[allow(clippy::print_stderr)]
async fn transfer_through_runner(
    stream: tokio::net::UnixStream,
    home: &Path,
    job: &Job,
) -> anyhow::Result<ExitCode> {
    let reply = control::call(stream, &job.request()).await?;
    let tasks = reply["tasks"].as_array().cloned().unwrap_or_default();
    let names: HashMap<String, String> = tasks
        .iter()
        .filter_map(|t| Some((t["id"].as_str()?.to_owned(), t["name"].as_str()?.to_owned())))
        .collect();
    eprintln!(
        "ferry: handed {} transfer(s) to the running ferry",
        names.len()
    );
    let stream = control::connect(home)
        .await
        .context("the running ferry went away")?;
    let ids: Vec<&String> = names.keys().collect();
    let mut lines =
        control::request(stream, &serde_json::json!({"op": "follow", "ids": ids})).await?;
    let mut failures = 0;
    let mut ended = 0;
    while let Some(line) = lines.next_line().await? {
        let v: serde_json::Value = serde_json::from_str(&line)?;
        let name = v["id"]
            .as_str()
            .and_then(|id| names.get(id))
            .cloned()
            .unwrap_or_default();
        match v["event"].as_str() {
            Some("progress") => say(format_args!("{name}: {} bytes", v["bytes"])),
            Some("waiting") => say(format_args!(
                "{name}: waiting: {}",
                v["reason"].as_str().unwrap_or("")
            )),
            Some("done") => {
                ended += 1;
                if v["ok"].as_bool() != Some(true) {
                    failures += 1;
                    eprintln!("ferry: {name}: {}", v["error"].as_str().unwrap_or("failed"));
                }
            }
            _ => {}
        }
    }
    if ended < names.len() {
        bail!(
            "the running ferry stopped before the transfers ended; run the command again to continue"
        );
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn add(
    args: AddArgs,
    shared: Option<&state::Shared>,
    endpoint: Option<String>,
) -> anyhow::Result<ExitCode> {
    let args = args.resolved()?;
    if let Some(shared) = shared {
        let offline = offline(shared.tasks.clone(), endpoint)?;
        let added = add_tasks(Target::Offline(&offline), &args).await?;
        print_lines(added.into_iter().map(|(id, name)| format!("{id}  {name}")))?;
        return Ok(ExitCode::SUCCESS);
    }
    let home = home()?;
    let added: Vec<(String, String)> = match access(&home).await? {
        Access::Runner(stream) => {
            let reply =
                control::call(stream, &serde_json::json!({"op": "add", "args": args})).await?;
            reply["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    Some((t["id"].as_str()?.to_owned(), t["name"].as_str()?.to_owned()))
                })
                .collect()
        }
        Access::Store(store) => {
            let offline = offline(Arc::new(store), endpoint)?;
            add_tasks(Target::Offline(&offline), &args)
                .await?
                .into_iter()
                .map(|(id, name)| (id.to_string(), name))
                .collect()
        }
    };
    print_lines(added.into_iter().map(|(id, name)| format!("{id}  {name}")))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(
    until_idle: bool,
    opts: &RunnerOpts,
    shared: Option<&state::Shared>,
) -> anyhow::Result<ExitCode> {
    let (session, server) = match start(opts, shared, Arc::new(Announce)).await? {
        Started::Here(session, server) => (session, server),
        Started::Elsewhere(_, home) => bail!(
            "another ferry process is running the session in {}; use `ferry add` to give it work",
            home.display()
        ),
    };
    let mut interrupted = watch_signals(session.clone());
    let idle = async {
        if until_idle {
            session.wait_idle().await
        } else {
            futures::future::pending().await
        }
    };
    let code = tokio::select! {
        // Idle, or the session stopped by itself: either way, nothing left to do.
        _ = idle => ExitCode::SUCCESS,
        _ = interrupted.wait_for(|i| *i) => ExitCode::from(130),
    };
    drop(server);
    session.shutdown().await;
    Ok(code)
}

/// Reads curl's `--resolve` form, `HOST:PORT:ADDR` (ADDR may be an IPv6
/// address, bracketed or not).
fn parse_resolve(s: &str) -> anyhow::Result<(String, std::net::SocketAddr)> {
    let mut parts = s.splitn(3, ':');
    let (Some(host), Some(port), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("three parts separated by ':' are needed");
    };
    anyhow::ensure!(!host.is_empty(), "the host is empty");
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("{port:?} is not a port number"))?;
    let ip: std::net::IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| anyhow::anyhow!("{addr:?} is not an IP address"))?;
    Ok((host.to_owned(), std::net::SocketAddr::new(ip, port)))
}

/// Prints the conditions and, for kinds of task, the default policy's
/// verdict on them now.
fn conditions(sensing: &Sensing) -> anyhow::Result<ExitCode> {
    use transfer_core::{
        Constraints, Demand, Load, NetworkKind, Policy, Priority, Timestamp, Verdict,
    };
    let config = sensing.config();
    let c = scheduler::conditions::read(&config);
    let kind = match c.network.kind {
        NetworkKind::None => "none",
        NetworkKind::Wifi => "Wi-Fi",
        NetworkKind::Ethernet => "Ethernet",
        NetworkKind::Cellular => "cellular",
        NetworkKind::Other => "other or unknown",
    };
    let mut lines = vec![format!(
        "network: {kind}{}{}",
        if c.network.expensive {
            ", expensive"
        } else {
            ""
        },
        if c.network.constrained {
            ", constrained"
        } else {
            ""
        },
    )];
    lines.push(format!(
        "power: {}, {}{}",
        c.power
            .battery
            .map_or_else(|| "no battery".to_owned(), |b| format!("battery {b}%")),
        if c.power.external_power {
            "on external power"
        } else {
            "not charging"
        },
        if c.power.low_power {
            ", low power mode"
        } else {
            ""
        },
    ));
    lines.push("with the default policy:".to_owned());
    let policy = Policy::default();
    let constraints = Constraints::default();
    let kinds = [
        ("a download", Priority::DEFAULT, constraints),
        ("a high-priority download", Priority::HIGH, constraints),
        (
            "a discretionary download",
            Priority::DEFAULT,
            Constraints {
                discretionary: true,
                ..constraints
            },
        ),
        (
            "a download that requires charging",
            Priority::DEFAULT,
            Constraints {
                requires_charging: true,
                ..constraints
            },
        ),
        (
            "a download that requires an unmetered network",
            Priority::DEFAULT,
            Constraints {
                requires_unmetered: true,
                ..constraints
            },
        ),
    ];
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    for (what, priority, constraints) in kinds {
        let demand = Demand {
            priority,
            constraints,
            earliest_begin: None,
            max_rate: None,
            local: false,
        };
        let verdict = match policy.admit(&demand, &c, Load::default(), now) {
            Verdict::Run(t) => format!("runs ({t})"),
            Verdict::Wait(reason) => format!("waits: {reason}"),
            Verdict::Fail(e) => format!("fails: {e}"),
        };
        lines.push(format!("  {what}: {verdict}"));
    }
    print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
}

/// `ferry run`'s delegate: a line on stderr for each task that ends,
/// including those that ended before a restart and were not yet reported
/// (a completion's event id tells a repeat after a kill from a new one).
struct Announce;

#[async_trait::async_trait]
impl Delegate for Announce {
    async fn completed(&self, c: &Completion) {
        let name = c.label.clone().unwrap_or_else(|| c.task.to_string());
        match &c.outcome {
            Outcome::Completed { bytes } => {
                say(format_args!(
                    "{name}: done, {bytes} bytes (event {})",
                    c.event
                ));
            }
            Outcome::Failed { error, .. } => say(format_args!("{name}: failed: {error}")),
            Outcome::Cancelled { .. } => say(format_args!("{name}: cancelled")),
        }
    }

    fn follows_tasks(&self) -> bool {
        false
    }
}

/// The state on disk, for commands run while no `ferry` runs the session.
fn offline(
    store: Arc<dyn transfer_core::TaskStore>,
    endpoint: Option<String>,
) -> anyhow::Result<Offline> {
    let payloads =
        payloads::Payloads::new(FsPayloadStore::new("/").context("payload store")?, endpoint);
    Ok(Offline::new(
        SESSION,
        store,
        Arc::new(payloads),
        SessionConfig::default(),
    )?)
}

#[allow(clippy::print_stdout)]
async fn user(
    id: &str,
    op: &str,
    shared: Option<&state::Shared>,
    endpoint: Option<String>,
) -> anyhow::Result<ExitCode> {
    let task = control::parse_id(id)?;
    let event = match op {
        "pause" => Event::Suspend,
        "resume" => Event::Resume,
        _ => Event::Cancel {
            keep_resume_data: false,
        },
    };
    if let Some(shared) = shared {
        // The process running the task sees the change when it next reads
        // the session, and stops it.
        offline(shared.tasks.clone(), endpoint)?
            .user(task, event)
            .await?;
    } else {
        let home = home()?;
        match access(&home).await? {
            Access::Runner(stream) => {
                let req = serde_json::json!({"op": op, "id": task.to_string()});
                control::call(stream, &req).await?;
            }
            Access::Store(store) => {
                offline(Arc::new(store), endpoint)?
                    .user(task, event)
                    .await?;
            }
        }
    }
    let done = match op {
        "pause" => "paused",
        "resume" => "resumed",
        _ => "cancelled",
    };
    println!("{task}: {done}");
    Ok(ExitCode::SUCCESS)
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

#[allow(clippy::print_stderr)]
fn report(name: &str, outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Completed { .. } => true,
        Outcome::Failed { error, .. } => {
            eprintln!("ferry: {name}: {error}");
            false
        }
        Outcome::Cancelled { .. } => {
            eprintln!("ferry: {name}: cancelled");
            false
        }
    }
}

/// First SIGINT/SIGTERM: checkpoint and stop cleanly. A second: exit now.
fn watch_signals(session: Session) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tokio::spawn(async {
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        });
        session.shutdown().await;
        let _ = tx.send(true);
    });
    rx
}

/// Progress: bars on a terminal, a line per task every few seconds otherwise.
struct Shown {
    bars: Option<MultiProgress>,
    task: tokio::task::JoinHandle<()>,
    /// The downloads whose "done" line was printed.
    said_done: Arc<std::sync::Mutex<HashSet<TaskId>>>,
}

impl Shown {
    /// Stops the display. Without bars, each completed download gets its
    /// "done" line here if the event stream did not bring it: one that
    /// ended while the list was still being queued, or just before this.
    async fn finish(self, outcomes: &[(TaskId, &str, Outcome)]) {
        self.task.abort();
        // Once it has stopped, nothing more is printed by it.
        let _ = self.task.await;
        match self.bars {
            Some(b) => {
                let _ = b.clear();
            }
            None => {
                let said = self.said_done.lock().ok();
                let mut out = String::new();
                for (id, name, outcome) in outcomes {
                    if let Outcome::Completed { bytes } = outcome
                        && !said.as_ref().is_some_and(|s| s.contains(id))
                    {
                        line(&mut out, format_args!("{name}: done, {bytes} bytes"));
                    }
                }
                say_all(&mut out);
            }
        }
    }

    fn abandon(self) {
        self.task.abort();
    }
}

#[allow(clippy::print_stderr)]
fn show_progress(session: &Session, tasks: &[(TaskHandle, String)]) -> Shown {
    let names: HashMap<TaskId, String> = tasks.iter().map(|(h, n)| (h.id(), n.clone())).collect();
    let mut events = Box::pin(session.events());
    if std::io::stderr().is_terminal() {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bars: HashMap<TaskId, ProgressBar> = names
            .iter()
            .map(|(id, name)| {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_message(name.clone());
                (*id, bar)
            })
            .collect();
        let task = tokio::spawn(async move {
            while let Some(e) = events.next().await {
                match e {
                    SessionEvent::Progress { task, progress } => {
                        if let Some(bar) = bars.get(&task) {
                            if let Some(t) = progress.expected {
                                bar.set_length(t);
                            }
                            bar.set_position(progress.total);
                        }
                    }
                    SessionEvent::Waiting { task, reason } => {
                        if let Some(bar) = bars.get(&task) {
                            bar.set_message(format!("{} (waiting: {reason})", names[&task]));
                        }
                    }
                    SessionEvent::Completed(c) => {
                        if let Some(bar) = bars.get(&c.task) {
                            bar.finish();
                        }
                    }
                    _ => {}
                }
            }
        });
        Shown {
            bars: Some(multi),
            task,
            said_done: Arc::default(),
        }
    } else {
        let said_done: Arc<std::sync::Mutex<HashSet<TaskId>>> = Arc::default();
        let mut lines = Lines {
            names,
            last: HashMap::new(),
            said: said_done.clone(),
            out: String::new(),
        };
        let task = tokio::spawn(async move {
            while let Some(e) = events.next().await {
                lines.take(e);
                // The rest of the burst (completions come together, after
                // the commit that made them durable), with no await until
                // its lines are out: a stop in between loses none of them.
                let mut ended = false;
                loop {
                    match futures::FutureExt::now_or_never(events.next()) {
                        Some(Some(e)) => lines.take(e),
                        Some(None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                say_all(&mut lines.out);
                if ended {
                    break;
                }
            }
        });
        Shown {
            bars: None,
            task,
            said_done,
        }
    }
}

/// The lines printed without a terminal, gathered per burst of events.
struct Lines {
    names: HashMap<TaskId, String>,
    /// When each running download last printed its progress.
    last: HashMap<TaskId, Instant>,
    /// The downloads whose "done" line was printed (shared with
    /// [`Shown::finish`]).
    said: Arc<std::sync::Mutex<HashSet<TaskId>>>,
    out: String,
}

impl Lines {
    /// Adds the line `e` calls for, if any.
    fn take(&mut self, e: SessionEvent) {
        let out = &mut self.out;
        match e {
            SessionEvent::Progress { task, progress } => {
                // Every 2 s per download, the first 2 s after its first
                // bytes: one that ends sooner says only done.
                let since = self.last.entry(task).or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(2)
                    && let Some(name) = self.names.get(&task)
                {
                    *since = Instant::now();
                    match progress.expected {
                        Some(t) => {
                            line(out, format_args!("{name}: {} of {t} bytes", progress.total))
                        }
                        None => line(out, format_args!("{name}: {} bytes", progress.total)),
                    }
                }
            }
            SessionEvent::Waiting { task, reason } => {
                if let Some(name) = self.names.get(&task) {
                    line(out, format_args!("{name}: waiting: {reason}"));
                }
            }
            SessionEvent::Restarted { task, reason } => {
                if let Some(name) = self.names.get(&task) {
                    line(out, format_args!("{name}: starting over: {reason:?}"));
                }
            }
            SessionEvent::Completed(c) => {
                self.last.remove(&c.task);
                if let (Some(name), Outcome::Completed { bytes }) =
                    (self.names.get(&c.task), &c.outcome)
                {
                    line(out, format_args!("{name}: done, {bytes} bytes"));
                    if let Ok(mut s) = self.said.lock() {
                        s.insert(c.task);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Writes one line to standard error in one write (`eprintln!` makes one
/// per piece, unbuffered: four for each file done).
fn say(text: std::fmt::Arguments<'_>) {
    let mut out = String::new();
    line(&mut out, text);
    say_all(&mut out);
}

/// Adds a line to `out`, for [`say_all`].
fn line(out: &mut String, text: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    let _ = writeln!(out, "{text}");
}

/// Writes the lines gathered in `out` to standard error in one write, and
/// empties it.
fn say_all(out: &mut String) {
    if !out.is_empty() {
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), out.as_bytes());
        out.clear();
    }
}

/// One row of `ferry ls`, as JSON. `live` says whether a runner holds the
/// session (else a task left running was interrupted, and continues on the
/// next run).
pub(crate) fn ls_row(r: &TaskRecord, live: bool) -> serde_json::Value {
    let detail = match &r.state.phase {
        Phase::Running { .. } if !live => "interrupted: continues on the next run".to_owned(),
        Phase::Waiting(reason) => format!("waiting: {reason}"),
        Phase::Failed(e) => format!("failed: {e}"),
        p => p.name().to_owned(),
    };
    let (direction, dest, source) = match &r.spec.kind {
        TaskKind::Download {
            destination: Destination::Path(p),
        } => ("download", p.display().to_string(), String::new()),
        TaskKind::Download {
            destination: Destination::ObjectKey(k),
        } => ("download", k.clone(), String::new()),
        TaskKind::Upload { source, .. } => ("upload", String::new(), source.display().to_string()),
    };
    serde_json::json!({
        "id": r.id.to_string(),
        "direction": direction,
        "source": source,
        "state": r.state.phase.name(),
        "detail": detail,
        "bytes": r.state.bytes_received,
        "durable": r.state.resume.durable_offset,
        "total": r.state.resume.total_length,
        "url": r.spec.url().to_string(),
        "destination": dest,
    })
}

/// Writes lines to stdout; a reader that stops early (`ferry ls | head`)
/// is not an error.
fn print_lines(lines: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = lines
        .into_iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn ls(
    json: bool,
    shared: Option<&state::Shared>,
    endpoint: Option<String>,
) -> anyhow::Result<ExitCode> {
    let rows: Vec<serde_json::Value> = match shared {
        Some(shared) => offline(shared.tasks.clone(), endpoint)?
            .tasks()
            .await?
            .iter()
            .map(|r| ls_row(r, false))
            .collect(),
        None => {
            let home = home()?;
            match access(&home).await? {
                Access::Runner(stream) => {
                    let reply = control::call(stream, &serde_json::json!({"op": "ls"})).await?;
                    reply["tasks"].as_array().cloned().unwrap_or_default()
                }
                Access::Store(store) => offline(Arc::new(store), endpoint)?
                    .tasks()
                    .await?
                    .iter()
                    .map(|r| ls_row(r, false))
                    .collect(),
            }
        }
    };
    let lines = rows.iter().map(|row| {
        if json {
            return row.to_string();
        }
        let total = row["total"]
            .as_u64()
            .map_or_else(|| "?".to_owned(), |t| t.to_string());
        let rate = row["rate"].as_u64().map_or_else(String::new, |r| {
            format!("{}/s", transfer_core::format_rate(r))
        });
        format!(
            "{}  {:<40}  {:>21}  {:>10}  {}",
            row["id"].as_str().unwrap_or(""),
            row["detail"].as_str().unwrap_or(""),
            format!("{}/{total}", row["bytes"]),
            rate,
            if row["direction"] == "upload" {
                format!(
                    "{} -> {}",
                    row["source"].as_str().unwrap_or(""),
                    row["url"].as_str().unwrap_or("")
                )
            } else {
                row["destination"].as_str().unwrap_or("").to_owned()
            }
        )
    });
    print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
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
