//! Scenario 9: the large file through real proxies, Ferry beside curl:
//! squid carrying a plain request (absolute form), squid tunnelling TLS
//! HTTP/2 (`CONNECT`), and dante's SOCKS5 (names resolved by the proxy).

use std::process::Command;

use super::{Args, Env, Scenario, Tool, Unit, ferry, one_file, tool};

/// The proxies scenario 9 goes through, kept running while it is measured.
pub(super) struct Proxies {
    _squid: testkit::Squid,
    _dante: testkit::Dante,
}

/// Scenario 9's three parts, and the proxies they need.
pub(super) fn scenarios(
    env: &Env,
    args: &Args,
    len: u64,
) -> anyhow::Result<(Vec<Scenario>, Proxies)> {
    let squid = testkit::Squid::start(None)?;
    let dante = testkit::Dante::start(false)?;
    let ca = env.nginx.ca_pem.display().to_string();
    let plain = env.nginx.http(&env.big);
    let tls = env.nginx.https(&env.big);
    let parts = [
        (
            "9-squid-http",
            "plain HTTP/1.1 through squid",
            squid.url(),
            &plain,
        ),
        (
            "9-squid-connect",
            "TLS HTTP/2 through squid (CONNECT)",
            squid.url(),
            &tls,
        ),
        (
            "9-dante",
            "TLS HTTP/2 through dante (SOCKS5)",
            dante.url(),
            &tls,
        ),
    ];
    let mib = args.size_mib;
    let scenarios = parts
        .into_iter()
        .map(|(id, what, proxy, url)| {
            let https = url.starts_with("https:");
            let mut tools = vec![tool(
                "ferry",
                ferry(env, &["get", url, "-x", &proxy, "--cacert", &ca], &[]),
            )];
            if let Some(curl) = env.curl.clone() {
                tools.push(curl_via(curl, &proxy, url, &ca, https));
            }
            Scenario {
                id: id.into(),
                title: format!("one {mib} MiB file, {what}"),
                unit: Unit::MegabytesPerSecond(len),
                out: args.scratch.join("out"),
                expect: one_file(env, len),
                tools,
                received: None,
            }
        })
        .collect();
    Ok((
        scenarios,
        Proxies {
            _squid: squid,
            _dante: dante,
        },
    ))
}

fn curl_via(curl: std::path::PathBuf, proxy: &str, url: &str, ca: &str, https: bool) -> Tool {
    let (proxy, url, ca) = (proxy.to_owned(), url.to_owned(), ca.to_owned());
    let name = if https { "curl --http2 -x" } else { "curl -x" };
    tool(
        name,
        Box::new(move |out, _| {
            let mut c = Command::new(&curl);
            c.args(["-sS", "--fail", "-x", &proxy, "-o"])
                .arg(out.join("big.bin"));
            if https {
                c.args(["--http2", "--cacert", &ca]);
            }
            c.arg(&url);
            c
        }),
    )
}
