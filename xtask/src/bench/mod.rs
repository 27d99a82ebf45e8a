//! `cargo xtask bench`: Ferry side by side with curl, wget2 and aria2c, in
//! one run, against nginx on 127.0.0.1.
//!
//! Each scenario runs Ferry and every peer found on PATH in turn,
//! interleaved, `--runs` times each, and reports medians of wall time,
//! throughput, CPU seconds (user+sys) and peak RSS of the client process,
//! with Ferry/peer ratios. Outputs go to tmpfs (`/dev/shm`) for every tool,
//! so the transfer path is compared and not the disk; Ferry's state
//! directory stays on disk (under `target/bench`). Scenario 5 writes to the
//! disk on purpose: it measures what durability costs. Scenario 7 uploads
//! the large file to the testkit origin, `ferry put` beside `curl -T`.
//! Scenario 9 fetches it through squid and dante, Ferry beside curl.
//!
//! Results: `target/bench/report.json`, `report.md` and `report.svg`.

mod measure;
mod nginx;
mod proxies;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{build_ferry, root};
use measure::Sample;
use nginx::{Nginx, which};
use report::{Report, ScenarioReport, ToolReport, Unit};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Runs of each tool in each scenario (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these scenarios (1, 2, 3, 4, 5, 6, 7, 8, 9); all when absent.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    /// Size of the large file of scenarios 1, 2 and 5, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Number of small files in scenario 3.
    #[arg(long, default_value_t = 2000)]
    files: usize,
    /// Size of each small file in scenario 3, in KiB.
    #[arg(long, default_value_t = 64)]
    file_kib: u64,
    /// Queued tasks in scenario 4.
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Where the tools write (tmpfs, so the disk is not measured).
    #[arg(long, default_value = "/dev/shm/ferry-bench")]
    scratch: PathBuf,
}

/// A client command line for one run: given its output directory and a
/// fresh state directory.
type MakeCommand = Box<dyn Fn(&Path, &Path) -> Command>;

/// One tool in one scenario.
struct Tool {
    name: String,
    make: MakeCommand,
}

/// What a scenario's runs must leave in the output directory.
struct Expect {
    files: usize,
    bytes: u64,
    /// SHA-256 of the single file, when there is one.
    sha256: Option<[u8; 32]>,
}

/// One scenario: its tools, where they write, and what must arrive.
struct Scenario {
    id: String,
    title: String,
    unit: Unit,
    out: PathBuf,
    expect: Expect,
    tools: Vec<Tool>,
    /// For uploads: what the receiving server must have seen after a run
    /// (`Some(why)` when it did not).
    received: Option<Box<dyn Fn() -> Option<String>>>,
}

/// What the run found on this machine.
struct Env {
    ferry: PathBuf,
    nginx: Nginx,
    curl: Option<PathBuf>,
    wget2: Option<PathBuf>,
    aria2c: Option<PathBuf>,
    dd: Option<PathBuf>,
    big: String,
    big_sha256: [u8; 32],
    small: Vec<String>,
    bench: PathBuf,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let wanted = |n: u32| args.only.is_empty() || args.only.contains(&n);
    let bench = root().join("target/bench");
    std::fs::create_dir_all(&bench)?;
    let ferry = build_ferry()?;
    let mut report = Report::new(args.runs);

    let mut missing = Vec::new();
    let mut find = |name: &str, package: &str| {
        let found = which(name);
        if found.is_none() {
            missing.push(format!("{name} (apt-get install {package})"));
        }
        found
    };
    let curl = find("curl", "curl");
    let wget2 = find("wget2", "wget2");
    let aria2c = find("aria2c", "aria2");
    let dd = find("dd", "coreutils");
    for m in missing {
        println!("skipping {m}: not on PATH");
        report.skip(&m, "not on PATH");
    }

    let www = args.scratch.join("www");
    println!("writing the bodies into {}…", www.display());
    let big_len = args.size_mib << 20;
    let big_sha256 = write_body(&www.join("big.bin"), 1, big_len)?;
    let mut small = Vec::new();
    std::fs::create_dir_all(www.join("small"))?;
    for i in 0..args.files {
        let name = format!("small/{i:05}.bin");
        write_body(&www.join(&name), 100 + i as u64, args.file_kib << 10)?;
        small.push(name);
    }
    let nginx = Nginx::start(&bench.join("nginx"), &www)?;
    println!(
        "nginx on 127.0.0.1:{} (HTTP/1.1) and :{} (TLS, HTTP/2)",
        nginx.http_port, nginx.https_port
    );
    let env = Env {
        ferry,
        nginx,
        curl,
        wget2,
        aria2c,
        dd,
        big: "big.bin".into(),
        big_sha256,
        small,
        bench: bench.clone(),
    };

    let mut scenarios = Vec::new();
    if wanted(1) {
        scenarios.push(scenario_1(&env, &args, big_len));
    }
    if wanted(2) {
        scenarios.push(scenario_2(&env, &args, big_len));
    }
    if wanted(3) {
        scenarios.push(scenario_3(&env, &args, false)?);
        scenarios.push(scenario_3(&env, &args, true)?);
    }
    if wanted(5) {
        scenarios.extend(scenario_5(&env, &args, big_len)?);
    }
    for s in &scenarios {
        report.scenarios.push(measure_scenario(&env, s, args.runs)?);
    }
    if wanted(4) {
        report.queue = Some(scenario_4(&env, &args)?);
    }
    // Kept until the report is written: scenario 7's server.
    let mut upload_origin = None;
    if wanted(7) {
        let origin = std::sync::Arc::new(testkit::Origin::start().await?);
        let s = scenario_7(&env, &www.join(&env.big), big_len, origin.clone());
        report
            .scenarios
            .push(measure_scenario(&env, &s, args.runs)?);
        upload_origin = Some(origin);
    }
    if wanted(6) {
        let origin = testkit::Origin::start().await?;
        origin.resource("/big.bin", testkit::Resource::seeded(1, big_len));
        let s = scenario_6_origin(&env, &args, &origin, big_len)?;
        report
            .scenarios
            .push(measure_scenario(&env, &s, args.runs)?);
        match which("caddy") {
            None => {
                println!("skipping scenario 6 against caddy: not on PATH");
                report.skip(
                    "scenario 6 against caddy (apt-get install caddy)",
                    "not on PATH",
                );
            }
            Some(_) => {
                let caddy = testkit::Caddy::start(&www)?;
                let gtlsclient = which("gtlsclient");
                if gtlsclient.is_none() {
                    report.skip("gtlsclient (apt-get install ngtcp2-client)", "not on PATH");
                }
                let s = scenario_6_caddy(&env, &args, &caddy, gtlsclient)?;
                report
                    .scenarios
                    .push(measure_scenario(&env, &s, args.runs)?);
            }
        }
        let stalls = migration_stalls(&origin, args.runs).await?;
        let line = format!(
            "QUIC connection migration (rebind of the client socket mid-download from the testkit origin): \
             stall median {:.1} ms (longest gap between body frames in the 0.5 s after the rebind; runs: {}), \
             against a median gap of {:.0} µs elsewhere",
            stalls.0,
            stalls
                .2
                .iter()
                .map(|s| format!("{s:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            stalls.1 * 1000.0
        );
        println!("{line}");
        report.notes.push(line);
    }
    if wanted(8) {
        match s3_costs(&args, big_len).await {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                    report.notes.push(line);
                }
            }
            Err(e) => {
                println!("scenario 8 (S3): skipped: {e:#}");
                report.skip("scenario 8 (downloads into S3 on moto)", &format!("{e:#}"));
            }
        }
    }
    if wanted(9) {
        match proxies::scenarios(&env, &args, big_len) {
            Ok((scenarios, running)) => {
                for s in &scenarios {
                    report.scenarios.push(measure_scenario(&env, s, args.runs)?);
                }
                drop(running);
            }
            Err(e) => {
                println!("scenario 9 (proxies): skipped: {e:#}");
                report.skip(
                    "scenario 9 (through squid and dante; apt-get install squid dante-server)",
                    &format!("{e:#}"),
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&args.scratch);
    drop(upload_origin);

    report.write(&bench)?;
    println!();
    println!("{}", std::fs::read_to_string(bench.join("report.md"))?);
    println!(
        "wrote {}, report.md and report.svg",
        bench.join("report.json").display()
    );
    Ok(())
}

fn ferry(env: &Env, args: &[&str], extra: &[String]) -> MakeCommand {
    let ferry = env.ferry.clone();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let extra = extra.to_vec();
    Box::new(move |out, state| {
        let mut c = Command::new(&ferry);
        c.args(&args).args(&extra).arg("--output-dir").arg(out);
        c.env("FERRY_HOME", state);
        c
    })
}

fn tool(name: &str, make: MakeCommand) -> Tool {
    Tool {
        name: name.to_owned(),
        make,
    }
}

/// curl, wget2 and aria2c fetching one file into `out/big.bin`.
fn single_file_peers(env: &Env, url: &str, tls: bool) -> Vec<Tool> {
    let ca = env.nginx.ca_pem.display().to_string();
    let mut tools = Vec::new();
    if let Some(curl) = env.curl.clone() {
        let (url, ca) = (url.to_owned(), ca.clone());
        let name = if tls { "curl --http2" } else { "curl" };
        tools.push(tool(
            name,
            Box::new(move |out, _| {
                let mut c = Command::new(&curl);
                c.args(["-sS", "--fail", "-o"]).arg(out.join("big.bin"));
                if tls {
                    c.args(["--http2", "--cacert", &ca]);
                }
                c.arg(&url);
                c
            }),
        ));
    }
    if let Some(wget2) = env.wget2.clone() {
        let (url, ca) = (url.to_owned(), ca.clone());
        tools.push(tool(
            "wget2",
            Box::new(move |out, _| {
                let mut c = Command::new(&wget2);
                c.args(["-q", "--no-config", "-O"]).arg(out.join("big.bin"));
                if tls {
                    c.arg(format!("--ca-certificate={ca}"));
                }
                c.arg(&url);
                c
            }),
        ));
    }
    if !tls && let Some(aria2c) = env.aria2c.clone() {
        for split in [1, 8] {
            let url = url.to_owned();
            let aria2c = aria2c.clone();
            let name = if split == 1 {
                "aria2c".to_owned()
            } else {
                format!("aria2c -x{split} -s{split}")
            };
            tools.push(tool(
                &name,
                Box::new(move |out, _| {
                    let mut c = Command::new(&aria2c);
                    c.args(aria2_common())
                        .arg("-d")
                        .arg(out)
                        .args(["-o", "big.bin"])
                        .arg(format!("-x{split}"))
                        .arg(format!("-s{split}"))
                        .arg("-k1M")
                        .arg(&url);
                    c
                }),
            ));
        }
    }
    tools
}

/// aria2c flags for a quiet, fair run: no console output, no preallocation
/// (tmpfs), overwrite what is there.
fn aria2_common() -> [&'static str; 5] {
    [
        "-q",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
        "--console-log-level=error",
    ]
}

fn one_file(env: &Env, len: u64) -> Expect {
    Expect {
        files: 1,
        bytes: len,
        sha256: Some(env.big_sha256),
    }
}

fn scenario_1(env: &Env, args: &Args, len: u64) -> Scenario {
    let url = env.nginx.http(&env.big);
    let mut tools = vec![tool("ferry", ferry(env, &["get", &url], &[]))];
    tools.extend(single_file_peers(env, &url, false));
    Scenario {
        id: "1".into(),
        title: format!("one {} MiB file, plain HTTP/1.1", args.size_mib),
        unit: Unit::MegabytesPerSecond(len),
        out: args.scratch.join("out"),
        expect: one_file(env, len),
        tools,
        received: None,
    }
}

fn scenario_2(env: &Env, args: &Args, len: u64) -> Scenario {
    let url = env.nginx.https(&env.big);
    let ca = env.nginx.ca_pem.display().to_string();
    let mut tools = vec![tool(
        "ferry",
        ferry(env, &["get", &url, "--cacert", &ca], &[]),
    )];
    tools.extend(single_file_peers(env, &url, true));
    Scenario {
        id: "2".into(),
        title: format!("one {} MiB file, TLS HTTP/2", args.size_mib),
        unit: Unit::MegabytesPerSecond(len),
        out: args.scratch.join("out"),
        expect: one_file(env, len),
        tools,
        received: None,
    }
}

fn scenario_3(env: &Env, args: &Args, tls: bool) -> anyhow::Result<Scenario> {
    let lists = env.bench.join("lists");
    std::fs::create_dir_all(&lists)?;
    let tag = if tls { "h2" } else { "h1" };
    let urls: Vec<String> = env
        .small
        .iter()
        .map(|p| {
            if tls {
                env.nginx.https(p)
            } else {
                env.nginx.http(p)
            }
        })
        .collect();
    let plain = lists.join(format!("urls-{tag}.txt"));
    std::fs::write(&plain, urls.join("\n"))?;
    let ca = env.nginx.ca_pem.display().to_string();
    let plain_s = plain.display().to_string();
    // As many at once as the peers are given.
    let mut ferry_args = vec!["get", "-i", &plain_s, "--parallel", "16"];
    if tls {
        ferry_args.extend(["--cacert", &ca]);
    }
    let mut tools = vec![tool("ferry", ferry(env, &ferry_args, &[]))];
    let name_of = |u: &str| u.rsplit('/').next().unwrap_or("x").to_owned();
    if let Some(curl) = env.curl.clone() {
        // curl's config names each output; it is written per output dir.
        let urls = urls.clone();
        let ca = ca.clone();
        let lists = lists.clone();
        tools.push(tool(
            "curl --parallel",
            Box::new(move |out, _| {
                let config = lists.join(format!("curl-{tag}.txt"));
                let text: String = urls
                    .iter()
                    .map(|u| {
                        format!(
                            "url = \"{u}\"\noutput = \"{}\"\n",
                            out.join(name_of(u)).display()
                        )
                    })
                    .collect();
                let _ = std::fs::write(&config, text);
                let mut c = Command::new(&curl);
                c.args([
                    "--parallel",
                    "--parallel-max",
                    "16",
                    "--no-progress-meter",
                    "--fail",
                ]);
                if tls {
                    c.args(["--http2", "--cacert", &ca]);
                }
                c.arg("-K").arg(config);
                c
            }),
        ));
    }
    if let Some(aria2c) = env.aria2c.clone() {
        let list = lists.join(format!("aria2-{tag}.txt"));
        std::fs::write(&list, urls.join("\n"))?;
        let ca = ca.clone();
        tools.push(tool(
            "aria2c -j16",
            Box::new(move |out, _| {
                let mut c = Command::new(&aria2c);
                c.args(aria2_common()).arg("-d").arg(out).args(["-j", "16"]);
                if tls {
                    c.arg(format!("--ca-certificate={ca}"));
                }
                c.arg("-i").arg(&list);
                c
            }),
        ));
    }
    if let Some(wget2) = env.wget2.clone() {
        let ca = ca.clone();
        let list = plain.clone();
        tools.push(tool(
            "wget2 --max-threads=16",
            Box::new(move |out, _| {
                let mut c = Command::new(&wget2);
                c.args(["-q", "--no-config", "--max-threads=16", "-P"])
                    .arg(out);
                if tls {
                    c.arg(format!("--ca-certificate={ca}"));
                }
                c.arg("-i").arg(&list);
                c
            }),
        ));
    }
    Ok(Scenario {
        id: format!("3-{tag}"),
        title: format!(
            "{} files of {} KiB, {}",
            args.files,
            args.file_kib,
            if tls { "TLS HTTP/2" } else { "plain HTTP/1.1" }
        ),
        unit: Unit::FilesPerSecond(args.files as u64),
        out: args.scratch.join("out"),
        expect: Expect {
            files: args.files,
            bytes: args.files as u64 * (args.file_kib << 10),
            sha256: None,
        },
        tools,
        received: None,
    })
}

/// Scenario 5: what durability costs. On the disk: `dd … conv=fdatasync`
/// (the ceiling), Ferry with checkpoints, Ferry without. On tmpfs: Ferry with
/// and without checkpoints.
fn scenario_5(env: &Env, args: &Args, len: u64) -> anyhow::Result<Vec<Scenario>> {
    let url = env.nginx.http(&env.big);
    let mib = len >> 20;
    let disk = env.bench.join("disk");
    let mut on_disk = vec![
        tool("ferry", ferry(env, &["get", &url], &[])),
        tool(
            "ferry --checkpoint off",
            ferry(env, &["get", &url, "--checkpoint", "off"], &[]),
        ),
    ];
    if let Some(dd) = env.dd.clone() {
        on_disk.push(tool(
            "dd conv=fdatasync",
            Box::new(move |out, _| {
                let mut c = Command::new(&dd);
                c.arg("if=/dev/zero")
                    .arg(format!("of={}", out.join("big.bin").display()))
                    .args([
                        "bs=1M",
                        &format!("count={mib}"),
                        "conv=fdatasync",
                        "status=none",
                    ]);
                c
            }),
        ));
    }
    let on_tmpfs = vec![
        tool("ferry", ferry(env, &["get", &url], &[])),
        tool(
            "ferry --checkpoint off",
            ferry(env, &["get", &url, "--checkpoint", "off"], &[]),
        ),
    ];
    Ok(vec![
        Scenario {
            id: "5-disk".into(),
            title: format!("durability: {mib} MiB onto the disk"),
            unit: Unit::MegabytesPerSecond(len),
            out: disk,
            // dd writes zeros: only sizes are compared here.
            expect: Expect {
                files: 1,
                bytes: len,
                sha256: None,
            },
            tools: on_disk,
            received: None,
        },
        Scenario {
            id: "5-tmpfs".into(),
            title: format!("durability: {mib} MiB onto tmpfs"),
            unit: Unit::MegabytesPerSecond(len),
            out: args.scratch.join("out"),
            expect: one_file(env, len),
            tools: on_tmpfs,
            received: None,
        },
    ])
}

/// Scenario 6 from the testkit origin: the large file over HTTP/3 and over
/// TLS HTTP/2, both by ferry.
fn scenario_6_origin(
    env: &Env,
    args: &Args,
    origin: &testkit::Origin,
    len: u64,
) -> anyhow::Result<Scenario> {
    let ca = env.bench.join("origin-root.pem");
    std::fs::write(&ca, origin.root_cert_pem())?;
    let ca = ca.display().to_string();
    let url = origin.https_url("/big.bin");
    let tools = vec![
        tool(
            "ferry --http3-only",
            ferry(env, &["get", &url, "--http3-only", "--cacert", &ca], &[]),
        ),
        tool(
            "ferry (HTTP/2)",
            ferry(env, &["get", &url, "--cacert", &ca], &[]),
        ),
    ];
    Ok(Scenario {
        id: "6-origin".into(),
        title: format!(
            "one {} MiB file from the testkit origin, HTTP/3 vs TLS HTTP/2",
            args.size_mib
        ),
        unit: Unit::MegabytesPerSecond(len),
        out: args.scratch.join("out"),
        expect: Expect {
            files: 1,
            bytes: len,
            sha256: Some(testkit::body::sha256(1, 0, len)),
        },
        tools,
        received: None,
    })
}

/// Scenario 6 against caddy: 256 MiB over HTTP/3, ferry and gtlsclient.
fn scenario_6_caddy(
    env: &Env,
    args: &Args,
    caddy: &testkit::Caddy,
    gtlsclient: Option<PathBuf>,
) -> anyhow::Result<Scenario> {
    let len = 256u64 << 20;
    let file = "h3.bin";
    let sha256 = write_body(&args.scratch.join("www").join(file), 6, len)?;
    let ca = env.bench.join("caddy-root.pem");
    std::fs::write(&ca, caddy.root_pem())?;
    let ca = ca.display().to_string();
    let url = caddy.url(&format!("/{file}"));
    let mut tools = vec![tool(
        "ferry --http3-only",
        ferry(env, &["get", &url, "--http3-only", "--cacert", &ca], &[]),
    )];
    if let Some(client) = gtlsclient {
        let port = caddy.port().to_string();
        tools.push(tool(
            "gtlsclient",
            Box::new(move |out, _| {
                let mut c = Command::new(&client);
                c.args(["-q", "--exit-on-all-streams-close", "--download"])
                    .arg(out)
                    .args(["localhost", &port, &url]);
                c
            }),
        ));
    }
    Ok(Scenario {
        id: "6-caddy".into(),
        title: "one 256 MiB file from caddy over HTTP/3".into(),
        unit: Unit::MegabytesPerSecond(len),
        out: args.scratch.join("out"),
        expect: Expect {
            files: 1,
            bytes: len,
            sha256: Some(sha256),
        },
        tools,
        received: None,
    })
}

/// The cost of a QUIC migration: 256 MiB from the testkit origin over
/// HTTP/3 in this process, the client socket rebound a third of the way
/// in; the longest gap between body frames in the half second after the
/// rebind, per run (ms).
/// Returns the median stall, the median ordinary gap (ms) and every stall.
async fn migration_stalls(
    origin: &testkit::Origin,
    runs: usize,
) -> anyhow::Result<(f64, f64, Vec<f64>)> {
    use http_body_util::BodyExt;
    use transfer_core::Transport;
    let len = 256u64 << 20;
    origin.resource("/move.bin", testkit::Resource::seeded(2, len));
    let http = transport_http::HttpConfig::default()
        .roots(transport_http::Roots::Webpki)
        .add_root(origin.root_cert_der());
    let mut stalls = Vec::new();
    let mut gaps = Vec::new();
    for _ in 0..runs {
        let quic = transport_quic::QuicTransport::new(
            transport_quic::QuicConfig::default().http(http.clone()),
        )?;
        let request = http::Request::get(origin.https_url("/move.bin"))
            .body(transfer_core::RequestBody::empty())?;
        let r = quic
            .send(transfer_core::TransportRequest::new(request))
            .await?;
        let mut body = r.response.into_body();
        let (mut got, mut moved) = (0u64, None::<std::time::Instant>);
        let mut last = std::time::Instant::now();
        let mut ordinary = Vec::new();
        let mut stall = 0f64;
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let gap = last.elapsed().as_secs_f64() * 1000.0;
            last = std::time::Instant::now();
            got += frame.data_ref().map_or(0, |d| d.len() as u64);
            match moved {
                // The half second after the move: the new path's validation.
                Some(at) if at.elapsed() < std::time::Duration::from_millis(500) => {
                    stall = stall.max(gap);
                }
                Some(_) => {}
                None => ordinary.push(gap),
            }
            if moved.is_none() && got > len / 3 {
                quic.rebind()?;
                last = std::time::Instant::now();
                moved = Some(last);
            }
        }
        if got != len {
            bail!("the migrated download got {got} of {len} bytes");
        }
        stalls.push(stall);
        ordinary.sort_by(f64::total_cmp);
        gaps.push(ordinary.get(ordinary.len() / 2).copied().unwrap_or(0.0));
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Ok((median(&stalls), median(&gaps), stalls))
}

/// Scenario 8: the large file from the testkit origin through a session
/// whose task records are in S3 (moto, from PyPI), its payload into a
/// bucket and, for comparison, into a file on tmpfs; what each costs in
/// time and in S3 requests (each one billed on AWS). In process: the
/// session is the library's, as a service embedding Ferry runs it.
async fn s3_costs(args: &Args, len: u64) -> anyhow::Result<Vec<String>> {
    use std::sync::Arc;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = testkit::Moto::start(&["ferry-bench"])?;
    let origin = testkit::Origin::start().await?;
    origin.resource("/big.bin", testkit::Resource::seeded(8, len));
    let s3 = Arc::new(
        store_s3::s3_builder("ferry-bench", Some(&moto.endpoint()))
            .with_access_key_id("ferry")
            .with_secret_access_key("ferry")
            .build()?,
    );
    let out = args.scratch.join("s3-out");
    std::fs::create_dir_all(&out)?;
    let mut lines = Vec::new();
    let mut rates = Vec::new();
    for into_bucket in [true, false] {
        let tasks = Arc::new(store_s3::S3TaskStore::new(
            s3.clone(),
            &format!("bench-{into_bucket}"),
        ));
        let bucket = Arc::new(store_s3::S3PayloadStore::new(s3.clone()));
        let payloads: Arc<dyn transfer_core::PayloadStore> = if into_bucket {
            bucket.clone()
        } else {
            Arc::new(store_fs::FsPayloadStore::new(&out)?)
        };
        let session = scheduler::Session::builder("bench.s3")?
            .store(tasks.clone())
            .payloads(payloads)
            .transport(Arc::new(transport_http::HttpTransport::new(
                transport_http::HttpConfig::default(),
            )?))
            .build()
            .await?;
        let destination = if into_bucket {
            transfer_core::Destination::ObjectKey("big.bin".into())
        } else {
            transfer_core::Destination::Path("big.bin".into())
        };
        let spec =
            transfer_core::TaskSpec::download(&origin.http_url("/big.bin"), destination).build()?;
        let started = std::time::Instant::now();
        let task = session.enqueue(spec, true).await?;
        let outcome = task.wait().await?;
        let took = started.elapsed();
        session.shutdown().await;
        if !outcome.is_completed() {
            bail!("the download into S3 ended {outcome:?}");
        }
        let rate = len as f64 / took.as_secs_f64() / 1e6;
        rates.push(rate);
        let what = if into_bucket {
            "into a bucket (multipart, 8 MiB parts)"
        } else {
            "into a file on tmpfs"
        };
        lines.push(format!(
            "{} MiB {what}, task records in S3 (moto): {rate:.0} MB/s ({:.2} s); {} task-record writes \
             (log entries and checkpoints) and {} payload requests",
            len >> 20,
            took.as_secs_f64(),
            tasks.writes(),
            bucket.requests()
        ));
    }
    lines.push(format!(
        "bucket ÷ file: {:.2}× (moto is a Python server on the same 2 cores; AWS would be another bound)",
        rates[0] / rates[1]
    ));
    let _ = std::fs::remove_dir_all(&out);
    Ok(lines)
}

/// Scenario 7: uploading the large file (from tmpfs) to the testkit
/// origin's sink over plain HTTP/1.1: `ferry put` and `curl -T`. The sink
/// hashes what it receives; each run must have delivered every byte.
fn scenario_7(
    env: &Env,
    file: &Path,
    len: u64,
    origin: std::sync::Arc<testkit::Origin>,
) -> Scenario {
    let url = origin.http_url("/upload/bench");
    let file_arg = file.display().to_string();
    let mut tools = vec![tool("ferry put", ferry_put(env, &file_arg, &url))];
    if let Some(curl) = env.curl.clone() {
        let (url, file) = (url.clone(), file_arg.clone());
        tools.push(tool(
            "curl -T",
            Box::new(move |_, _| {
                let mut c = Command::new(&curl);
                c.args(["-sS", "--fail", "-o", "/dev/null", "-T", &file, &url]);
                c
            }),
        ));
    }
    Scenario {
        id: "7".into(),
        title: format!("upload of one {} MiB file, plain HTTP/1.1", len >> 20),
        unit: Unit::MegabytesPerSecond(len),
        out: env.bench.join("upload-out"),
        expect: Expect {
            files: 0,
            bytes: 0,
            sha256: None,
        },
        tools,
        received: Some(Box::new(move || {
            let log = origin.log();
            let last = log.last()?;
            let ok = last.status == 200 && last.bytes_received == len && last.finished;
            origin.clear_log();
            (!ok).then(|| {
                format!(
                    "the server got {} of {len} bytes (status {})",
                    last.bytes_received, last.status
                )
            })
        })),
    }
}

/// `ferry put FILE URL` with the run's state directory.
fn ferry_put(env: &Env, file: &str, url: &str) -> MakeCommand {
    let ferry = env.ferry.clone();
    let (file, url) = (file.to_owned(), url.to_owned());
    Box::new(move |_, state| {
        let mut c = Command::new(&ferry);
        c.args(["put", &file, &url]).env("FERRY_HOME", state);
        c
    })
}

/// Runs every tool of `s` `runs` times, interleaved, and checks each run's
/// output.
fn measure_scenario(env: &Env, s: &Scenario, runs: usize) -> anyhow::Result<ScenarioReport> {
    println!();
    println!("scenario {}: {}", s.id, s.title);
    let logs = env.bench.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); s.tools.len()];
    for run in 0..runs {
        for (i, t) in s.tools.iter().enumerate() {
            let _ = std::fs::remove_dir_all(&s.out);
            std::fs::create_dir_all(&s.out)?;
            let state = env.bench.join("state");
            let _ = std::fs::remove_dir_all(&state);
            std::fs::create_dir_all(&state)?;
            let log = logs.join(format!(
                "{}-{}-{run}.log",
                s.id,
                t.name.replace([' ', '/'], "_")
            ));
            let cmd = (t.make)(&s.out, &state);
            let mut sample = measure::run(&cmd, &log)?;
            if sample.error.is_none() {
                sample.error = check_output(&s.out, &s.expect, run == 0)?;
            }
            if sample.error.is_none()
                && let Some(received) = &s.received
            {
                sample.error = received();
            }
            println!(
                "  run {run} {:<24} {:>7.3} s  {:>9}  cpu {:>6.2} s  rss {:>7.1} MiB{}",
                t.name,
                sample.wall_s,
                s.unit.format(s.unit.rate(sample.wall_s)),
                sample.cpu_s,
                sample.peak_rss_kib as f64 / 1024.0,
                sample
                    .error
                    .as_deref()
                    .map(|e| format!("  FAILED: {e}"))
                    .unwrap_or_default()
            );
            samples[i].push(sample);
        }
    }
    let _ = std::fs::remove_dir_all(&s.out);
    Ok(ScenarioReport::new(
        &s.id,
        &s.title,
        s.unit,
        s.tools
            .iter()
            .zip(samples)
            .map(|(t, samples)| ToolReport::new(&t.name, s.unit, samples))
            .collect(),
    ))
}

/// Checks that a run left exactly what was expected; `Some(why)` if not.
fn check_output(dir: &Path, expect: &Expect, hash: bool) -> anyhow::Result<Option<String>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    let bytes: u64 = files.iter().map(|(_, len)| len).sum();
    if files.len() != expect.files || bytes != expect.bytes {
        return Ok(Some(format!(
            "left {} files, {bytes} bytes; expected {} files, {} bytes",
            files.len(),
            expect.files,
            expect.bytes
        )));
    }
    if hash && let (Some(want), [(path, _)]) = (expect.sha256, &files[..]) {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        if h.finalize()[..] != want[..] {
            return Ok(Some(format!("{} has the wrong SHA-256", path.display())));
        }
    }
    Ok(None)
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect_files(&entry.path(), out)?;
        } else {
            out.push((entry.path(), meta.len()));
        }
    }
    Ok(())
}

/// Scenario 4: 100,000 queued tasks. The `queue` bench (xtask/benches) measures
/// durable enqueue, attach and RSS per task in one process; `ferry add` of
/// the same number of URLs shows the command-line path end to end.
fn scenario_4(env: &Env, args: &Args) -> anyhow::Result<report::QueueReport> {
    println!();
    println!("scenario 4: {} queued tasks", args.tasks);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let state = env.bench.join("state");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let out = Command::new(&cargo)
        .current_dir(root())
        .args(["bench", "--quiet", "-p", "xtask", "--bench", "queue"])
        .env("FERRY_BENCH_DIR", &state)
        .env("FERRY_BENCH_TASKS", args.tasks.to_string())
        .output()
        .context("running the queue bench")?;
    if !out.status.success() {
        bail!(
            "the queue bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("json: "))
        .context("the queue bench printed no json line")?;
    let mut queue: report::QueueReport = serde_json::from_str(json)?;

    // The same number of URLs through `ferry add`, one process, on disk.
    let list = env.bench.join("lists/queue.txt");
    let urls: String = (0..args.tasks)
        .map(|i| format!("https://example.com/photos/2026/IMG_{i:06}.jpg\n"))
        .collect();
    std::fs::write(&list, urls)?;
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let mut add = Command::new(&env.ferry);
    add.arg("add")
        .arg("-i")
        .arg(&list)
        .arg("--output-dir")
        .arg(args.scratch.join("queue-out"))
        .env("FERRY_HOME", &state);
    let sample = measure::run(&add, &env.bench.join("logs/4-ferry-add.log"))?;
    if let Some(e) = &sample.error {
        bail!("ferry add of {} URLs failed: {e}", args.tasks);
    }
    println!(
        "ferry add -i (one process, {} URLs): {:.2} s, cpu {:.2} s, peak RSS {:.1} MiB",
        args.tasks,
        sample.wall_s,
        sample.cpu_s,
        sample.peak_rss_kib as f64 / 1024.0
    );
    queue.ferry_add = Some(sample);
    let _ = std::fs::remove_dir_all(&state);
    Ok(queue)
}

/// Writes `len` bytes of a seeded pseudo-random stream to `path` (kept if
/// already there with the right length) and returns its SHA-256.
fn write_body(path: &Path, seed: u64, len: u64) -> anyhow::Result<[u8; 32]> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut hash = Sha256::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        hash.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(hash.finalize().into())
}
