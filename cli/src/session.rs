//! Composing the session: where its state is (the state directory, or a
//! bucket several processes share), who runs it (this process, or the one
//! answering on the control socket), and the session this process runs,
//! with its transports, stores, conditions and configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use scheduler::{Offline, Session, SessionConfig};
use store_fs::{FsPayloadStore, FsTaskStore};
use transfer_core::Delegate;
use transport_http::{HttpConfig, HttpTransport};

use crate::args::{Cli, RunnerOpts, parse_resolve, parse_size};
use crate::{control, payloads, state};

/// The session every `ferry` command uses.
const SESSION: &str = "default";

/// The bucket that holds the session's state, when `--store` names one,
/// with claims that last the command's `--lease-ttl`.
pub(crate) fn shared(cli: &Cli) -> anyhow::Result<Option<state::Shared>> {
    let ttl = match cli.lease_ttl() {
        Some(t) => state::parse_duration(t).with_context(|| format!("--lease-ttl {t:?}"))?,
        None => Duration::from_secs(30),
    };
    cli.store
        .as_deref()
        .map(|url| state::Shared::open(url, cli.endpoint.as_deref(), ttl))
        .transpose()
}

/// The state directory: `$FERRY_HOME`, else the platform data directory.
pub(crate) fn home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("FERRY_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let base = dirs::data_dir().context("no data directory: set FERRY_HOME")?;
    Ok(base.join("ferry"))
}

/// How a command reaches the session.
pub(crate) enum Access {
    /// Another process runs it: talk to it.
    Runner(tokio::net::UnixStream),
    /// Nobody runs it: the store is ours.
    Store(FsTaskStore),
}

/// The running ferry's socket if one answers, else the store. A store held
/// for a moment by a command that is not a runner (`ls`, `add`) is tried
/// again for a few seconds; a runner shows up on its socket meanwhile.
pub(crate) async fn access(home: &Path) -> anyhow::Result<Access> {
    let start = Instant::now();
    loop {
        if let Some(s) = control::connect(home).await {
            return Ok(Access::Runner(s));
        }
        match FsTaskStore::open(home) {
            Ok(store) => {
                warn_quarantined(&store).await;
                return Ok(Access::Store(store));
            }
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

/// Says, on stderr, which stored entries do not decode: the session loads
/// without them, and `ferry repair` sets them aside for good.
#[allow(clippy::print_stderr)]
async fn warn_quarantined(store: &FsTaskStore) {
    let Ok(session) = transfer_core::SessionId::new(SESSION) else {
        return;
    };
    let set_aside = match transfer_core::TaskStore::quarantined(store, &session).await {
        Ok(q) => q,
        Err(e) => {
            eprintln!("ferry: warning: could not list the entries the state could not decode: {e}");
            return;
        }
    };
    for q in &set_aside {
        eprintln!("ferry: warning: skipped {q} (run `ferry repair` to set it aside for good)");
    }
}

/// Runs no more transfers at once than the open-file limit holds: `-j`
/// beyond it is lowered, with a note (`asked`: the user gave `-j`).
#[allow(clippy::print_stderr)]
fn clamp_to_descriptors(config: &mut SessionConfig, asked: bool) {
    let limit = crate::descriptors::raise_limit();
    let allowed = crate::descriptors::transfers_allowed(limit);
    if config.policy.max_concurrent > allowed {
        if asked {
            eprintln!(
                "ferry: -j {} is more than the open-file limit ({}) allows; running {allowed} at once",
                config.policy.max_concurrent,
                limit.unwrap_or(0)
            );
        }
        config.policy.max_concurrent = allowed;
        config.policy.max_per_host = config.policy.max_per_host.min(allowed);
    }
}

/// The low-speed limit `--speed-limit` and `--speed-time` ask for: each
/// replaces its half of `default`; a limit of 0 turns the check off.
fn low_speed(
    default: Option<(u64, Duration)>,
    limit: Option<u64>,
    time: Option<u64>,
) -> Option<(u64, Duration)> {
    if limit.is_none() && time.is_none() {
        return default;
    }
    // With the check off by default, curl's defaults fill the other half.
    let (default_limit, default_time) = default.unwrap_or((1, Duration::from_secs(30)));
    let limit = limit.unwrap_or(default_limit);
    let time = time.map_or(default_time, Duration::from_secs);
    (limit > 0).then_some((limit, time))
}

/// The session configuration the runner's options ask for.
fn config(opts: &RunnerOpts) -> anyhow::Result<SessionConfig> {
    let mut config = SessionConfig::default();
    match opts.checkpoint.as_deref() {
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
    if let Some(size) = &opts.upload_chunk {
        config.upload_chunk_bytes = parse_size(size)
            .with_context(|| format!("--upload-chunk {size:?}: a size such as 8M"))?;
    }
    config.protocol = if opts.http3_only {
        transfer_core::ProtocolPreference::RequireHttp3
    } else if opts.http3 {
        transfer_core::ProtocolPreference::PreferHttp3
    } else if opts.http2 || opts.http1_1 || opts.http2_prior_knowledge {
        transfer_core::ProtocolPreference::TcpOnly
    } else {
        transfer_core::ProtocolPreference::Auto
    };
    if let Some(n) = opts.retry {
        config.retry.retry_limit = n;
    }
    let duration = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| crate::state::parse_duration(s).with_context(|| format!("--{flag} {s:?}")))
            .transpose()
    };
    config.retry.retry_window = duration("retry-max-time", &opts.retry_max_time)?;
    if let Some(d) = duration("connect-timeout", &opts.connect_timeout)? {
        config.timeouts.connect = d;
        config.timeouts.tls = d;
    }
    if let Some(d) = duration("max-time", &opts.max_time)? {
        config.retry.resource_timeout = d;
    }
    config.low_speed = low_speed(config.low_speed, opts.speed_limit, opts.speed_time);
    if let Some(n) = opts.parallel {
        config.policy.max_concurrent = n;
        config.policy.max_per_host = n;
    }
    clamp_to_descriptors(&mut config, opts.parallel.is_some());
    config.policy.rate_limit = opts.session_rate;
    config.max_body = opts.session_max_size;
    config.policy.constraints = opts.session_constraints;
    config.policy.allows_cellular = !opts.no_cellular;
    config.policy.allows_expensive = !opts.no_expensive;
    // A name that does not exist fails in seconds, as in curl, unless
    // asked; no network at all is still waited for.
    config.policy.retries_missing_hosts = opts.retry_dns;
    if let Some(t) = &opts.schedule {
        config.policy.timetable = Some(
            transfer_core::Timetable::parse_local(t)
                .with_context(|| format!("--schedule {t:?}"))?,
        );
    }
    Ok(config)
}

/// The proxies `-x`, `--noproxy` and the environment ask for (curl's
/// rules: `-x` replaces the variables' proxies, `NO_PROXY` still applies
/// unless `--noproxy` replaces it).
fn proxies(opts: &RunnerOpts) -> anyhow::Result<transport_http::Proxies> {
    let mut proxies = transport_http::Proxies::from_env()?;
    if let Some(url) = &opts.proxy {
        proxies = proxies.all(url).context("-x/--proxy")?;
    }
    if let Some(list) = &opts.noproxy {
        proxies = proxies.no_proxy(list);
    }
    Ok(proxies)
}

/// Opens the session as the runner of this state directory.
async fn runner(
    store: Arc<dyn transfer_core::TaskStore>,
    shared: Option<&state::Shared>,
    opts: &RunnerOpts,
    delegate: Arc<dyn Delegate>,
) -> anyhow::Result<(Session, PathBuf)> {
    let config = config(opts)?;
    let mut http = HttpConfig::default();
    for pem in &opts.cacert {
        let data = std::fs::read(pem).with_context(|| format!("reading {}", pem.display()))?;
        http = http
            .add_roots_pem(&data)
            .with_context(|| format!("--cacert {}", pem.display()))?;
    }
    for r in &opts.resolve {
        let (host, addrs) = parse_resolve(r).with_context(|| {
            format!("--resolve {r:?}: HOST:PORT:ADDR, such as example.com:443:127.0.0.1")
        })?;
        for addr in addrs {
            http = http.resolve(&host, addr);
        }
    }
    http = http.proxies(proxies(opts)?);
    // One per-host limit: the session's (`-j`), for the pool's HTTP/1.1
    // connections too.
    http = http.max_connections_per_host(usize::try_from(config.policy.max_per_host).unwrap_or(1));
    if opts.http1_1 {
        http = http.http1_only();
    }
    if opts.http2_prior_knowledge {
        http = http.http2_prior_knowledge();
    }
    let home = home()?;
    let tcp = HttpTransport::new(http.clone()).context("TLS setup")?;
    let quic = transport_quic::QuicTransport::new(transport_quic::QuicConfig::default().http(http))
        .context("TLS setup")?;
    // What servers advertised (Alt-Svc) outlives the process, as the session does.
    let transport = transport_quic::ProtocolChoice::new(Arc::new(tcp), quic)
        .remember_in(home.join("alt-svc.json"));
    let sensing = opts.sensing.config();
    // Destinations are real, absolute paths the queuing command chose
    // (sanitized names inside the output directory), so the payload root is
    // `/`; a directory swapped for a symlink since is not written through.
    let payloads = payloads::Payloads::new(
        FsPayloadStore::new("/")
            .context("payload store")?
            .exact_paths(),
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
pub(crate) enum Started {
    /// In this process (with the state directory's control socket, unless
    /// the session is shared through a bucket).
    Here(Session, Option<control::Listening>),
    /// In the process answering on this state directory's socket.
    Elsewhere(tokio::net::UnixStream, PathBuf),
}

/// Runs the session in this process: one of those sharing it through the
/// bucket, or the state directory's only runner, unless another process
/// already is.
pub(crate) async fn start(
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

/// Whether the file at `path` is the one task `id` of the session wrote
/// (not one put there since, by hand or by another program): the finished
/// file carries its task's mark. Where the filesystem keeps no marks, a
/// file there is taken for the task's.
pub(crate) fn wrote(id: transfer_core::TaskId, path: &Path) -> bool {
    let Ok(session) = transfer_core::SessionId::new(SESSION) else {
        return false;
    };
    let destination = transfer_core::Destination::Path(path.to_owned());
    match FsPayloadStore::new("/").and_then(|s| s.written_by(&session, id, &destination)) {
        Ok(Some(ours)) => ours,
        Ok(None) => path.exists(),
        Err(_) => false,
    }
}

/// The state on disk, for commands run while no `ferry` runs the session.
pub(crate) fn offline(
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

/// First SIGINT/SIGTERM: checkpoint and stop cleanly. A second: exit now.
pub(crate) fn watch_signals(session: Session) -> tokio::sync::watch::Receiver<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--speed-limit` and `--speed-time` each replace their half of the
    /// default; `--speed-limit 0` turns the check off.
    #[test]
    fn speed_flags_replace_their_half_of_the_low_speed_limit() {
        let default = SessionConfig::default().low_speed;
        let (limit, time) = default.expect("on by default");
        assert_eq!(low_speed(default, None, None), default);
        assert_eq!(low_speed(default, Some(10), None), Some((10, time)));
        assert_eq!(
            low_speed(default, None, Some(5)),
            Some((limit, Duration::from_secs(5)))
        );
        assert_eq!(low_speed(default, Some(0), Some(5)), None);
    }
}
