//! The command line's argument types: clap's structs for each command, the
//! value parsers for sizes, rates, `--resolve` and task ids, and the checks
//! that turn a `get`, `add` or `put`'s arguments into the request that
//! [`enqueue`](crate::enqueue) carries out.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use transfer_core::{Constraints, ResumableProtocol, TaskId};

use crate::enqueue::{Downloads, Upload};
use crate::payloads;

/// `ferry`'s command line.
#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Background downloads and uploads that survive crashes, kills and restarts"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Keep the session's state in S3 or an S3-compatible server, under
    /// `s3://BUCKET/PREFIX`, instead of `$FERRY_HOME`: several `ferry`
    /// processes, on this machine or others, then share the session, each
    /// task run by one of them at a time.
    #[arg(
        long,
        global = true,
        env = "FERRY_STORE",
        value_name = "s3://BUCKET/PREFIX",
        help_heading = "Sessions"
    )]
    pub(crate) store: Option<String>,
    /// The S3-compatible endpoint for `--store` and `--to s3://…` (default:
    /// `AWS_ENDPOINT_URL`, else AWS). Credentials and region come from the
    /// `AWS_*` variables.
    #[arg(long, global = true, value_name = "URL", help_heading = "Sessions")]
    pub(crate) endpoint: Option<String>,
}

impl Cli {
    /// The command line with a `get`'s URL list read and its arguments
    /// checked (see [`AddArgs::resolved`]): a `get`'s URLs choose the
    /// runtime's size, so they are known before it starts.
    pub(crate) fn resolved(self) -> anyhow::Result<Cli> {
        Ok(match self.command {
            Command::Get(mut args) => {
                args.add = args.add.resolved()?;
                args.opts.check_http3(&args.add.urls)?;
                Cli {
                    command: Command::Get(args),
                    ..self
                }
            }
            Command::Put { put, opts } => {
                opts.check_http3(std::slice::from_ref(&put.url))?;
                Cli {
                    command: Command::Put { put, opts },
                    ..self
                }
            }
            _ => self,
        })
    }

    /// The options of the commands that run the session (`get`, `put`,
    /// `run`).
    pub(crate) fn runner_opts(&self) -> Option<&RunnerOpts> {
        match &self.command {
            Command::Get(args) => Some(&args.opts),
            Command::Put { opts, .. } | Command::Run { opts, .. } => Some(opts),
            _ => None,
        }
    }

    /// The command's `--lease-ttl`, for those that run the session.
    pub(crate) fn lease_ttl(&self) -> Option<&str> {
        match &self.command {
            Command::Get(args) => args.opts.lease_ttl.as_deref(),
            Command::Put { opts, .. } | Command::Run { opts, .. } => opts.lease_ttl.as_deref(),
            _ => None,
        }
    }
}

/// `ferry`'s commands.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Download URLs into a directory and wait until every one ends.
    #[command(after_help = "Examples:
  ferry get https://example.com/big.iso
  ferry get https://example.com/a.iso -o a.iso --limit-rate 2M
  ferry get -i urls.txt --output-dir downloads -j 8 --no-expensive
  HTTPS_PROXY=http://proxy:3128 ferry get https://example.com/big.iso
Kill it at any moment: the same command again continues from the last durable byte.")]
    Get(GetArgs),
    /// Add downloads without waiting (a running `ferry` starts them at once).
    #[command(after_help = "Examples:
  ferry add https://example.com/big.iso --discretionary
  ferry add -i urls.txt --output-dir downloads && ferry run --until-idle")]
    Add(AddArgs),
    /// Upload a file (PUT, or a POST of a form) and wait until it ends.
    #[command(after_help = "Examples:
  ferry put report.pdf https://example.com/upload/report.pdf
  ferry put video.mp4 https://example.com/files/ --tus --limit-rate 1M
  ferry put photo.jpg https://example.com/form -F title=Holiday --form-file photo")]
    Put {
        #[command(flatten)]
        put: PutArgs,
        #[command(flatten)]
        opts: RunnerOpts,
    },
    /// Run the session: every queued download, until stopped.
    #[command(after_help = "Examples:
  ferry run --until-idle
  ferry run --schedule \"08:00,512k 19:00,off\" --no-expensive
  ferry run --store s3://bucket/ferry --endpoint http://127.0.0.1:9000")]
    Run {
        /// Stop once nothing is running, queued or waiting to retry.
        #[arg(long, help_heading = "Sessions")]
        until_idle: bool,
        /// Rate limit for the whole session in bytes per second (suffixes
        /// k, M, G: 1024-based).
        #[arg(long, help_heading = "Limits")]
        limit_rate: Option<String>,
        /// Refuse any body larger than SIZE (suffixes k, M, G: 1024-based),
        /// whichever command queued the download.
        #[arg(long, value_name = "SIZE", help_heading = "Limits")]
        max_filesize: Option<String>,
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
    /// Salvage a damaged state database: every task record and completion
    /// that still reads goes into a fresh one, and the damaged file is kept
    /// beside it (`ferry.redb.damaged-<time>`). Stop the running `ferry`
    /// first.
    Repair,
    /// Show the network and power conditions detected, and what the default
    /// policy lets run now (sysfs root from `FERRY_SYSFS_ROOT`, else `/`).
    Conditions {
        #[command(flatten)]
        sensing: Sensing,
    },
    /// Print the shell completions for SHELL on standard output (for
    /// bash: `ferry completions bash > /etc/bash_completion.d/ferry`).
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
    /// Print ferry's manual page (roff) on standard output, or with
    /// COMMAND the page of that command, ferry-COMMAND(1)
    /// (`ferry man get > ferry-get.1; man ./ferry-get.1`).
    Man {
        /// A command (get, add, put, run, ls, …).
        command: Option<String>,
    },
}

/// How network and power conditions are read (`get`, `run`, `conditions`).
#[derive(clap::Args, Debug)]
pub(crate) struct Sensing {
    /// Treat network interface IFACE as metered (expensive), e.g. a phone
    /// tethered over USB; cellular interfaces always are, and so is any
    /// connection NetworkManager calls metered. Repeatable.
    #[arg(long, value_name = "IFACE", help_heading = "Policies")]
    metered: Vec<String>,
}

impl Sensing {
    /// The Linux condition source's settings: the sysfs root from
    /// `FERRY_SYSFS_ROOT` (else `/`) and the metered interfaces.
    /// NetworkManager's metered flag on the system bus counts too, except
    /// under a `FERRY_SYSFS_ROOT`: this machine's NetworkManager says nothing
    /// of another tree's network.
    pub(crate) fn config(&self) -> scheduler::LinuxConditionsConfig {
        let mut config = scheduler::LinuxConditionsConfig::default();
        if let Some(root) = std::env::var_os("FERRY_SYSFS_ROOT") {
            config.root = root.into();
            config.network_manager = scheduler::NetworkManagerBus::Off;
        }
        config.expensive.extend(self.metered.iter().cloned());
        config
    }
}

/// `ferry get`'s arguments: what to download, and how to run the session.
#[derive(clap::Args, Debug)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    pub(crate) add: AddArgs,
    #[command(flatten)]
    pub(crate) opts: RunnerOpts,
}

/// How the process that runs the session runs it (`get` and `run`).
#[derive(clap::Args, Debug)]
pub(crate) struct RunnerOpts {
    /// More trusted root certificates (PEM), beside the platform's.
    #[arg(long, help_heading = "Network")]
    pub(crate) cacert: Vec<PathBuf>,
    /// Make each download durable every SIZE bytes (suffixes k, M, G;
    /// default 32M) and about once a second: after a kill, a download
    /// continues from its last checkpoint and fetches again what came after
    /// it (at full speed the disk flushes while the next bytes arrive, so
    /// that can be up to two checkpoints' worth); `off`: only when it
    /// completes (a kill may lose it all).
    #[arg(long, value_name = "SIZE|off", help_heading = "Limits")]
    pub(crate) checkpoint: Option<String>,
    /// Transfers at once, in all and to any one server (default 16 in
    /// all, 8 to one server).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    pub(crate) parallel: Option<u32>,
    /// Wait while on a cellular network.
    #[arg(long, help_heading = "Policies")]
    pub(crate) no_cellular: bool,
    /// Wait while on an expensive (metered) network.
    #[arg(long, help_heading = "Policies")]
    pub(crate) no_expensive: bool,
    /// A bandwidth timetable for the session, as rclone writes them:
    /// "08:00,512k 12:00,10M 23:00,off", with weekday forms ("Mon-08:00,512k"),
    /// read in local time (TZ, else /etc/localtime) across daylight-saving
    /// changes. Rates are bytes per second (k, M, G: powers of 1024), off is
    /// no limit and 0 pauses until the next entry.
    #[arg(long, value_name = "TIMETABLE", help_heading = "Policies")]
    pub(crate) schedule: Option<String>,
    /// Connect to ADDR for URLs on HOST and PORT instead of resolving HOST,
    /// as curl's `--resolve` (TLS still checks the certificate for HOST;
    /// other ports of HOST resolve as usual). Several ADDRs for one
    /// HOST:PORT (IPv6 and IPv4; `HOST:PORT:ADDR,ADDR` or the option
    /// repeated) are all tried.
    #[arg(long, value_name = "HOST:PORT:ADDR", help_heading = "Network")]
    pub(crate) resolve: Vec<String>,
    /// Send requests through this proxy: http://HOST:PORT (HTTPS through
    /// CONNECT), https://HOST:PORT, socks5://HOST:PORT (names resolved
    /// here) or socks5h://HOST:PORT (the proxy resolves), with
    /// USER:PASSWORD@ before the host for its credentials. Instead of
    /// http_proxy, https_proxy and ALL_PROXY, which are read otherwise, as
    /// curl reads them. HTTP/3 does not go through proxies.
    #[arg(short = 'x', long, value_name = "URL", help_heading = "Network")]
    pub(crate) proxy: Option<String>,
    /// Hosts reached without the proxy, instead of NO_PROXY: names
    /// (covering their subdomains), addresses and CIDR blocks, separated by
    /// commas, or * for every host.
    #[arg(long, value_name = "LIST", help_heading = "Network")]
    pub(crate) noproxy: Option<String>,
    /// Keep retrying a host name that does not exist, as a name that may
    /// appear later (behind a VPN, after a captive portal). Without it, a
    /// transfer fails at once on it ("cannot resolve HOST"); a resolver that
    /// times out or cannot be reached is retried either way, and no network
    /// at all is waited for.
    #[arg(long, help_heading = "Network")]
    pub(crate) retry_dns: bool,
    #[command(flatten)]
    pub(crate) sensing: Sensing,
    /// With `--store`: how long this process's hold on a task lasts without
    /// a renewal (default 30s; renewed every third of it). If the process
    /// dies, the others take its tasks over after that much silence.
    #[arg(long, value_name = "DURATION", help_heading = "Sessions")]
    pub(crate) lease_ttl: Option<String>,
    /// The global `--endpoint`.
    #[arg(skip)]
    pub(crate) endpoint: Option<String>,
    /// Try HTTP/3 (QUIC) first, and take HTTP/2 or HTTP/1.1 when QUIC does
    /// not answer within 3 s, as curl's --http3 (servers that advertise
    /// HTTP/3 with Alt-Svc get it anyway, without this).
    #[arg(
        long,
        visible_alias = "prefer-http3",
        group = "protocol",
        help_heading = "Network"
    )]
    pub(crate) http3: bool,
    /// HTTP/3 and nothing else (https URLs only), as curl's --http3-only.
    #[arg(long, group = "protocol", help_heading = "Network")]
    pub(crate) http3_only: bool,
    /// HTTP/2 where the server offers it over TLS, else HTTP/1.1; never
    /// HTTP/3, even where advertised. Plain http:// URLs stay HTTP/1.1
    /// (see --http2-prior-knowledge).
    #[arg(long, group = "protocol", help_heading = "Network")]
    pub(crate) http2: bool,
    /// HTTP/2 without negotiation on plain http:// URLs (h2c); never
    /// HTTP/3.
    #[arg(long, group = "protocol", help_heading = "Network")]
    pub(crate) http2_prior_knowledge: bool,
    /// HTTP/1.1 only; never HTTP/2 or HTTP/3.
    #[arg(long = "http1.1", group = "protocol", help_heading = "Network")]
    pub(crate) http1_1: bool,
    /// A download slower than BYTES per second, on average over
    /// `--speed-time`, is stalled: the attempt fails and is retried, as
    /// after a cut (default 1024; 0: no limit).
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub(crate) speed_limit: Option<u64>,
    /// The window `--speed-limit` is measured over, in seconds (default 60).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits")]
    pub(crate) speed_time: Option<u64>,
    /// Retries after transient failures (a cut connection, a 503) that made
    /// no durable progress, as curl's --retry: 0 fails on the first (default
    /// 20, with backoff from 1 s to 15 min).
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub(crate) retry: Option<u32>,
    /// Start no retry later than this long after the first attempt (curl's
    /// --retry-max-time; seconds, or a duration such as 10m).
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    pub(crate) retry_max_time: Option<String>,
    /// The most each connection may take to open, TCP and TLS each
    /// (seconds, or a duration such as 500ms; default 15 s).
    #[arg(long, value_name = "DURATION", help_heading = "Network")]
    pub(crate) connect_timeout: Option<String>,
    /// The most a whole transfer may take, across attempts, waits and
    /// retries (curl's --max-time; seconds, or a duration such as 2h): it
    /// fails when that is spent (default 7 days).
    #[arg(long, short = 'm', value_name = "DURATION", help_heading = "Limits")]
    pub(crate) max_time: Option<String>,
    /// Largest append of a resumable upload (suffixes k, M, G; default
    /// 64M): at most this much is sent again after an interruption.
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub(crate) upload_chunk: Option<String>,
    /// Print nothing but errors: no progress bars, no line per file (the
    /// exit code still tells how it went).
    #[arg(short = 'q', long, conflicts_with = "verbose", help_heading = "Output")]
    pub(crate) quiet: bool,
    /// Show what happens underneath on standard error: requests and
    /// responses, retries, waits, the protocol chosen. Repeat for more:
    /// -v info, -vv debug, -vvv trace. `RUST_LOG` (as `scheduler=debug`),
    /// when set, chooses instead.
    #[arg(short = 'v', long, action = clap::ArgAction::Count, help_heading = "Output")]
    pub(crate) verbose: u8,
    /// No progress bars or progress lines; the line for each file stays.
    #[arg(long, help_heading = "Output")]
    pub(crate) no_progress: bool,
    /// One JSON object per line on standard output for each event
    /// (queued, started, progress, waiting, retry, completed, failed); the
    /// format is stable (see the README).
    #[arg(long, help_heading = "Output")]
    pub(crate) json: bool,
    /// The session's rate limit (`ferry run --limit-rate`).
    #[arg(skip)]
    pub(crate) session_rate: Option<u64>,
    /// The largest body any task of the session accepts (`ferry run
    /// --max-filesize`).
    #[arg(skip)]
    pub(crate) session_max_size: Option<u64>,
    /// Constraints on every task (`ferry run --discretionary`,
    /// `--require-charging`).
    #[arg(skip)]
    pub(crate) session_constraints: Constraints,
}

impl RunnerOpts {
    /// Refuses `--http3-only` with a plain-http URL, which would otherwise
    /// go over TCP: HTTP/3 runs only over QUIC, which carries TLS.
    pub(crate) fn check_http3(&self, urls: &[String]) -> anyhow::Result<()> {
        if !self.http3_only {
            return Ok(());
        }
        let plain = urls
            .iter()
            .find(|u| url::Url::parse(u).is_ok_and(|u| u.scheme() == "http"));
        if let Some(url) = plain {
            bail!(
                "--http3-only needs https:// URLs (HTTP/3 runs over QUIC with TLS): {}",
                transfer_core::echo(url)
            );
        }
        Ok(())
    }
}

/// When a task may run: shared by `get`, `add` and `put` (and `run`, for
/// every task it runs).
#[derive(clap::Args, Debug)]
pub(crate) struct WhenArgs {
    /// Background work: runs only on an unmetered, unconstrained network,
    /// outside low power mode, and charging or above 30% battery.
    #[arg(long, help_heading = "Policies")]
    discretionary: bool,
    /// Runs only while on external power.
    #[arg(long, help_heading = "Policies")]
    require_charging: bool,
}

impl WhenArgs {
    /// The constraints these flags ask for.
    pub(crate) fn constraints(&self) -> Constraints {
        Constraints {
            discretionary: self.discretionary,
            requires_charging: self.require_charging,
            requires_unmetered: false,
        }
    }
}

/// What to download and where: shared by `get` and `add`.
#[derive(clap::Args, Debug)]
pub(crate) struct AddArgs {
    /// The URLs (http or https).
    #[arg(required_unless_present = "input_file")]
    pub(crate) urls: Vec<String>,
    /// Read more URLs from this file, one per line (`-` for standard
    /// input); blank lines and lines starting with `#` are skipped.
    #[arg(
        short = 'i',
        long = "input-file",
        value_name = "LIST",
        help_heading = "Output"
    )]
    input_file: Option<PathBuf>,
    /// Write the download of the URL in the same place of the list to FILE
    /// (curl's rule: one -o per URL, in order; URLs beyond the last -o keep
    /// their own names). A relative FILE is in --output-dir. FILE is
    /// replaced if it is there, as curl does.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        help_heading = "Output"
    )]
    output: Vec<PathBuf>,
    /// The directory downloads go into (created if missing; default the
    /// current one), each under its URL's name unless -o names it.
    #[arg(
        long = "output-dir",
        value_name = "DIR",
        default_value = ".",
        help_heading = "Output"
    )]
    output_dir: PathBuf,
    /// Name each file after its URL, as curl's -O (what Ferry does
    /// anyway): accepted for scripts written for curl.
    #[arg(short = 'O', long = "remote-name", action = clap::ArgAction::Count, help_heading = "Output")]
    remote_name: u8,
    /// Download into an object instead of a file: `s3://BUCKET/KEY` (one
    /// URL), or `s3://BUCKET/PREFIX/` (any number: each URL's file name
    /// after the prefix), through a multipart upload whose parts are the
    /// checkpoints.
    #[arg(long, value_name = "s3://BUCKET/KEY", help_heading = "Output")]
    pub(crate) to: Option<String>,
    /// Expected SHA-256 of the payload (64 hex digits; one URL only).
    #[arg(long, help_heading = "Limits")]
    sha256: Option<String>,
    /// Rate limit per download in bytes per second (suffixes k, M, G: 1024-based).
    #[arg(long, help_heading = "Limits")]
    limit_rate: Option<String>,
    /// Replace existing files instead of choosing a numbered name.
    #[arg(long, help_heading = "Output")]
    overwrite: bool,
    /// Refuse a body larger than SIZE (suffixes k, M, G: 1024-based): a
    /// download whose server announces or sends more fails and leaves
    /// nothing behind.
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    max_filesize: Option<String>,
    #[command(flatten)]
    when: WhenArgs,
}

impl AddArgs {
    /// Reads the URL list, checks the arguments and makes the output
    /// directory absolute (creating it).
    pub(crate) fn resolved(mut self) -> anyhow::Result<AddArgs> {
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
        if let Some(s) = &self.max_filesize {
            parse_max_filesize(s)?;
        }
        if !self.output.is_empty() && self.to.is_some() {
            bail!("-o names a file and --to an object: give one of them");
        }
        if self.output.len() > self.urls.len() {
            bail!(
                "{} -o for {} URL{}: -o names the file of one URL, in order (curl's rule)",
                self.output.len(),
                self.urls.len(),
                if self.urls.len() == 1 { "" } else { "s" }
            );
        }
        std::fs::create_dir_all(&self.output_dir)
            .with_context(|| format!("creating {}", self.output_dir.display()))?;
        self.output_dir = std::fs::canonicalize(&self.output_dir)
            .with_context(|| format!("resolving {}", self.output_dir.display()))?;
        let files = std::mem::take(&mut self.output);
        for file in files {
            let path = output_file(&self.output_dir, &file)?;
            if self.output.contains(&path) {
                bail!("-o {} is given twice", file.display());
            }
            self.output.push(path);
        }
        Ok(self)
    }

    /// The downloads these arguments ask for, once [`resolved`](Self::resolved).
    pub(crate) fn downloads(self) -> anyhow::Result<Downloads> {
        Ok(Downloads {
            rate: self.limit_rate.as_deref().map(parse_rate).transpose()?,
            urls: self.urls,
            output: self.output_dir,
            files: self.output,
            to: self.to,
            sha256: self.sha256,
            overwrite: self.overwrite,
            max_size: self
                .max_filesize
                .as_deref()
                .map(parse_max_filesize)
                .transpose()?,
            when: self.when.constraints(),
        })
    }
}

/// What to upload and where (`put`).
#[derive(clap::Args, Debug)]
pub(crate) struct PutArgs {
    /// The file to upload.
    file: PathBuf,
    /// Where to send it (http or https).
    pub(crate) url: String,
    /// Send a multipart/form-data form: a text field NAME=VALUE before the
    /// file (repeatable).
    #[arg(
        short = 'F',
        long = "form",
        value_name = "NAME=VALUE",
        help_heading = "Request"
    )]
    form: Vec<String>,
    /// Send a form whose file part is the field NAME (default `file` when
    /// `--form` is given).
    #[arg(long, value_name = "NAME", help_heading = "Request")]
    form_file: Option<String>,
    /// The method (default PUT; POST for a form).
    #[arg(short = 'X', long, help_heading = "Request")]
    method: Option<String>,
    /// The file's content type (default application/octet-stream).
    #[arg(long, help_heading = "Request")]
    content_type: Option<String>,
    /// Resumable: IETF "Resumable Uploads for HTTP" (draft -12, interop
    /// version 9); an interrupted upload continues from the server's offset.
    /// A server that does not offer it gets a plain upload.
    #[arg(long, conflicts_with_all = ["form", "form_file", "tus"], help_heading = "Request")]
    resumable: bool,
    /// Resumable with tus 1.0 (URL: the server's creation endpoint).
    #[arg(long, conflicts_with_all = ["form", "form_file"], help_heading = "Request")]
    tus: bool,
    /// Rate limit of this upload in bytes per second (suffixes k, M, G:
    /// 1024-based).
    #[arg(long, help_heading = "Limits")]
    limit_rate: Option<String>,
    #[command(flatten)]
    when: WhenArgs,
}

impl PutArgs {
    /// Checks the arguments and makes the file's path absolute: the upload
    /// they ask for.
    pub(crate) fn resolved(self) -> anyhow::Result<Upload> {
        let file = std::fs::canonicalize(&self.file)
            .with_context(|| format!("upload source {}", self.file.display()))?;
        let mut fields = Vec::with_capacity(self.form.len());
        for f in &self.form {
            let Some((name, value)) = f.split_once('=') else {
                bail!("--form {f:?}: NAME=VALUE");
            };
            fields.push((name.to_owned(), value.to_owned()));
        }
        let method = self
            .method
            .as_deref()
            .map(|m| {
                http::Method::from_bytes(m.as_bytes())
                    .map_err(|_| anyhow::anyhow!("--method {m:?} is not a method"))
            })
            .transpose()?;
        let rate = self.limit_rate.as_deref().map(parse_rate).transpose()?;
        transfer_core::Url::parse(&self.url).with_context(|| self.url.clone())?;
        let form_file = self
            .form_file
            .or_else(|| (!self.form.is_empty()).then(|| "file".to_owned()));
        let resumable = if self.tus {
            Some(ResumableProtocol::Tus)
        } else if self.resumable {
            Some(ResumableProtocol::IetfDraft)
        } else {
            None
        };
        Ok(Upload {
            file,
            url: self.url,
            form_file,
            fields,
            method,
            content_type: self.content_type,
            resumable,
            rate,
            when: self.when.constraints(),
        })
    }
}

/// Parses a rate such as `500k`, `2M` or `1048576` (bytes per second).
pub(crate) fn parse_rate(s: &str) -> anyhow::Result<u64> {
    parse_size(s).with_context(|| format!("--limit-rate {s:?} is not a rate such as 500k or 2M"))
}

/// Parses `--max-filesize`.
pub(crate) fn parse_max_filesize(s: &str) -> anyhow::Result<u64> {
    parse_size(s).with_context(|| format!("--max-filesize {s:?} is not a size such as 500k or 2G"))
}

/// Where `-o FILE` writes: FILE in `dir` when relative, its directory made
/// if missing and named by its real path. Refuses a directory (the old
/// meaning of -o, now --output-dir's) and standard output.
fn output_file(dir: &std::path::Path, file: &std::path::Path) -> anyhow::Result<PathBuf> {
    if file.as_os_str() == "-" {
        bail!("-o - (standard output) is not supported: Ferry downloads into files");
    }
    let path = dir.join(file);
    if path.is_dir() || file.as_os_str().to_string_lossy().ends_with('/') {
        bail!(
            "-o {} is a directory: -o names a file; use --output-dir {0} to download into it",
            file.display()
        );
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("-o {}: not a file name", file.display());
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let parent =
        std::fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
    Ok(parent.join(name))
}

/// Parses a size as every option takes one ([`transfer_core::parse_size`]:
/// bytes, or with k, M, G, T as powers of 1024; at least one byte).
pub(crate) fn parse_size(s: &str) -> anyhow::Result<u64> {
    Ok(transfer_core::parse_size(s)?)
}

/// Reads curl's `--resolve` form, `HOST:PORT:ADDR[,ADDR]...` (an ADDR may
/// be an IPv6 address, bracketed or not): the host and each address on
/// the port.
pub(crate) fn parse_resolve(s: &str) -> anyhow::Result<(String, Vec<std::net::SocketAddr>)> {
    let mut parts = s.splitn(3, ':');
    let (Some(host), Some(port), Some(addrs)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("three parts separated by ':' are needed");
    };
    anyhow::ensure!(!host.is_empty(), "the host is empty");
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow::anyhow!("{port:?} is not a port number"))?;
    addrs
        .split(',')
        .map(|addr| {
            let ip: std::net::IpAddr =
                addr.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{addr:?} is not an IP address"))?;
            Ok(std::net::SocketAddr::new(ip, port))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(|addrs| (host.to_owned(), addrs))
}

/// A task id as `ferry ls` prints it (16 hex digits).
pub(crate) fn parse_id(s: &str) -> anyhow::Result<TaskId> {
    let v = u64::from_str_radix(s.trim(), 16)
        .with_context(|| format!("{s:?} is not a task id (16 hex digits, as `ferry ls` shows)"))?;
    Ok(TaskId::from_u64(v))
}

#[cfg(test)]
mod tests {
    use super::{parse_resolve, parse_size};

    /// curl's forms: one address, bracketed or bare IPv6, a list.
    #[test]
    fn resolve_takes_one_address_or_a_list_on_the_port() {
        let addrs = |list: &[&str]| -> Vec<std::net::SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        assert_eq!(
            parse_resolve("a.test:443:127.0.0.1").unwrap(),
            ("a.test".to_owned(), addrs(&["127.0.0.1:443"]))
        );
        assert_eq!(
            parse_resolve("a.test:8443:[::1],127.0.0.2").unwrap(),
            (
                "a.test".to_owned(),
                addrs(&["[::1]:8443", "127.0.0.2:8443"])
            )
        );
        assert_eq!(
            parse_resolve("a.test:80:::1").unwrap(),
            ("a.test".to_owned(), addrs(&["[::1]:80"]))
        );
        assert!(parse_resolve("a.test:80:127.0.0.1,").is_err());
        assert!(parse_resolve("a.test:80:127.0.0.1,localhost").is_err());
    }

    #[test]
    fn sizes_take_decimals_and_never_come_to_zero() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("500k").unwrap(), 500 << 10);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("0.5k").unwrap(), 512);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        // A fraction of a byte is refused, not rounded to zero (a rate of
        // zero would pause forever, a chunk of zero would send nothing).
        for zero in [
            "0.1",
            "0.5",
            "0",
            "0k",
            "0.0000001M",
            "-1",
            "nan",
            "inf",
            "k",
            "",
        ] {
            assert!(parse_size(zero).is_err(), "{zero:?} was taken");
        }
        assert!(parse_size("1e30G").is_err());
    }
}
