//! `ferry`: background downloads that survive crashes, kills and restarts.
//!
//! ```text
//! ferry get URL... [-o DIR] [--sha256 HEX] [--limit-rate RATE] [--cacert PEM]
//! ferry ls [--json]
//! ```
//!
//! State lives in `$FERRY_HOME`, else the platform data directory
//! (`~/.local/share/ferry` on Linux). Running `ferry get` again with the same
//! URL and output directory continues that download where it stopped.

mod names;

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use scheduler::{Session, SessionConfig, SessionEvent, TaskHandle};
use store_fs::{FsPayloadStore, FsTaskStore};
use transfer_core::{Outcome, Phase, SessionId, TaskId, TaskStore};
use transport_http::{HttpConfig, HttpTransport};

/// The session every `ferry` command uses.
const SESSION: &str = "default";

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Background downloads that survive crashes, kills and restarts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download URLs into a directory and wait until every one ends.
    Get(GetArgs),
    /// List the tasks of the session.
    Ls {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::anyhow!("starting the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Get(args) => get(args).await,
            Command::Ls { json } => ls(json).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(e),
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

fn open_store() -> anyhow::Result<FsTaskStore> {
    let home = home()?;
    FsTaskStore::open(&home).map_err(|e| {
        if e.kind() == transfer_core::StoreErrorKind::Unavailable {
            anyhow::anyhow!(
                "another ferry process is using {} ({e}); wait for it to finish",
                home.display()
            )
        } else {
            anyhow::anyhow!("opening the state in {}: {e}", home.display())
        }
    })
}

#[derive(clap::Args, Debug)]
struct GetArgs {
    /// The URLs (http or https).
    #[arg(required = true)]
    urls: Vec<String>,
    /// The output directory (created if missing).
    #[arg(short = 'o', long = "output", default_value = ".")]
    output: PathBuf,
    /// Expected SHA-256 of the payload (64 hex digits; one URL only).
    #[arg(long)]
    sha256: Option<String>,
    /// Rate limit per download in bytes per second (suffixes k, M, G: 1024-based).
    #[arg(long)]
    limit_rate: Option<String>,
    /// More trusted root certificates (PEM), beside the platform's.
    #[arg(long)]
    cacert: Vec<PathBuf>,
    /// Replace existing files instead of choosing a numbered name.
    #[arg(long)]
    overwrite: bool,
}

/// Parses a rate such as `500k`, `2M` or `1048576` (bytes per second).
fn parse_rate(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = digits
        .parse()
        .with_context(|| format!("--limit-rate {s:?} is not a rate such as 500k or 2M"))?;
    if !(n.is_finite() && n > 0.0) {
        bail!("--limit-rate must be above zero");
    }
    Ok((n * mult as f64) as u64)
}

async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    if args.sha256.is_some() && args.urls.len() != 1 {
        bail!("--sha256 applies to one URL; give one URL per command");
    }
    let rate = args.limit_rate.as_deref().map(parse_rate).transpose()?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let output = std::fs::canonicalize(&args.output)
        .with_context(|| format!("resolving {}", args.output.display()))?;

    let mut http = HttpConfig::default();
    for pem in &args.cacert {
        let data = std::fs::read(pem).with_context(|| format!("reading {}", pem.display()))?;
        http = http
            .add_roots_pem(&data)
            .with_context(|| format!("--cacert {}", pem.display()))?;
    }
    let transport = HttpTransport::new(http).context("TLS setup")?;
    let store = open_store()?;
    // Destinations are absolute paths the command chose (sanitized names
    // inside the output directory), so the payload root is `/`.
    let payloads = FsPayloadStore::new("/").context("payload store")?;
    let session = Session::builder(SESSION)?
        .store(Arc::new(store))
        .payloads(Arc::new(payloads))
        .transport(Arc::new(transport))
        .config(SessionConfig::default())
        .build()
        .await?;

    let mut tasks: Vec<(TaskHandle, String)> = Vec::new();
    let mut taken: Vec<PathBuf> = Vec::new();
    for url in &args.urls {
        let key = format!("get {} {url}", output.display());
        let existing = session
            .tasks()
            .await?
            .into_iter()
            .find(|r| r.spec.key.as_deref() == Some(&key) && !r.state.is_terminal());
        let dest = match existing.as_ref().and_then(|r| match &r.spec.kind {
            transfer_core::TaskKind::Download {
                destination: transfer_core::Destination::Path(p),
            } => Some(p.clone()),
            _ => None,
        }) {
            Some(p) => p,
            None => {
                let name = names::file_name(url);
                names::unique(&output, &name, args.overwrite, &taken)
            }
        };
        taken.push(dest.clone());
        let mut b = session
            .download(url)
            .with_context(|| url.clone())?
            .to(&dest)
            .key(key)
            .label(display_name(&dest));
        if let Some(hex) = &args.sha256 {
            b = b.sha256(hex.clone());
        }
        if let Some(r) = rate {
            b = b.max_rate(r);
        }
        let handle = b.enqueue().await.with_context(|| url.clone())?;
        tasks.push((handle, display_name(&dest)));
    }

    let interrupted = watch_signals(session.clone());
    let shown = show_progress(&session, &tasks);
    let mut failures = 0;
    let mut interrupted = interrupted;
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
    }
    shown.finish();
    session.shutdown().await;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
}

impl Shown {
    fn finish(self) {
        self.task.abort();
        if let Some(b) = self.bars {
            let _ = b.clear();
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
        }
    } else {
        let task = tokio::spawn(async move {
            let mut last: HashMap<TaskId, Instant> = HashMap::new();
            while let Some(e) = events.next().await {
                match e {
                    SessionEvent::Progress { task, progress } => {
                        let due = last
                            .get(&task)
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
                        if due && let Some(name) = names.get(&task) {
                            last.insert(task, Instant::now());
                            match progress.expected {
                                Some(t) => eprintln!("{name}: {} of {} bytes", progress.total, t),
                                None => eprintln!("{name}: {} bytes", progress.total),
                            }
                        }
                    }
                    SessionEvent::Waiting { task, reason } => {
                        if let Some(name) = names.get(&task) {
                            eprintln!("{name}: waiting: {reason}");
                        }
                    }
                    SessionEvent::Restarted { task, reason } => {
                        if let Some(name) = names.get(&task) {
                            eprintln!("{name}: starting over: {reason:?}");
                        }
                    }
                    SessionEvent::Completed(c) => {
                        if let (Some(name), Outcome::Completed { bytes }) =
                            (names.get(&c.task), &c.outcome)
                        {
                            eprintln!("{name}: done, {bytes} bytes");
                        }
                    }
                    _ => {}
                }
            }
        });
        Shown { bars: None, task }
    }
}

#[allow(clippy::print_stdout)]
async fn ls(json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let snap = store.load(&SessionId::new(SESSION)?).await?;
    let mut records = snap.records;
    records.sort_by_key(|r| (r.seq, r.id));
    for r in &records {
        let state = match &r.state.phase {
            Phase::Waiting(reason) => format!("waiting: {reason}"),
            Phase::Failed(e) => format!("failed: {e}"),
            p => p.name().to_owned(),
        };
        let dest = match &r.spec.kind {
            transfer_core::TaskKind::Download {
                destination: transfer_core::Destination::Path(p),
            } => p.display().to_string(),
            _ => String::new(),
        };
        let total = r.state.resume.total_length;
        if json {
            let line = serde_json::json!({
                "id": r.id.to_string(),
                "state": r.state.phase.name(),
                "detail": state,
                "bytes": r.state.bytes_received,
                "durable": r.state.resume.durable_offset,
                "total": total,
                "url": r.spec.url().to_string(),
                "destination": dest,
            });
            println!("{line}");
        } else {
            let total = total.map_or_else(|| "?".to_owned(), |t| t.to_string());
            println!(
                "{}  {:<40}  {}/{}  {}",
                r.id, state, r.state.bytes_received, total, dest
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
