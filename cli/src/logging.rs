//! The library's `tracing` events on standard error, for `-v` and
//! `RUST_LOG`: what a transfer does underneath (requests and responses,
//! retries, waits, the protocol chosen) when the lines for people are not
//! enough.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Ferry's own crates, whose events `-v` shows; the libraries under them
/// (hyper, h2, quinn, rustls) say only their warnings.
const CRATES: [&str; 7] = [
    "ferry",
    "scheduler",
    "transfer_core",
    "transport_http",
    "transport_quic",
    "store_fs",
    "store_s3",
];

/// The filter for `verbose` (the count of `-v`), unless `rust_log` (the
/// value of `RUST_LOG`) is set and not empty: then it chooses. `None`:
/// nothing is logged.
pub(crate) fn filter(verbose: u8, rust_log: Option<&str>) -> Option<String> {
    if let Some(directives) = rust_log.filter(|d| !d.trim().is_empty()) {
        return Some(directives.to_owned());
    }
    let level = match verbose {
        0 => return None,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let mut directives = String::from("warn");
    for krate in CRATES {
        directives.push_str(&format!(",{krate}={level}"));
    }
    Some(directives)
}

/// Whether events are logged, for `verbose` and the environment.
pub(crate) fn on(verbose: u8) -> bool {
    filter(verbose, std::env::var("RUST_LOG").ok().as_deref()).is_some()
}

/// Sends the events [`filter`] lets through to standard error. A
/// `RUST_LOG` that does not parse is said, and `-v`'s filter used.
#[allow(clippy::print_stderr)]
pub(crate) fn start(verbose: u8) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let Some(directives) = filter(verbose, rust_log.as_deref()) else {
        return;
    };
    let filter = match EnvFilter::try_new(&directives) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ferry: RUST_LOG {directives:?} is not a filter ({e}); ignored");
            match filter(verbose, None).map(EnvFilter::try_new) {
                Some(Ok(f)) => f,
                _ => return,
            }
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn rust_log_wins_over_the_count_of_v() {
        assert_eq!(filter(0, None), None);
        assert_eq!(filter(0, Some("  ")), None);
        assert_eq!(
            filter(3, Some("scheduler=debug")).as_deref(),
            Some("scheduler=debug")
        );
        let info = filter(1, None).unwrap();
        assert!(info.starts_with("warn,") && info.contains("transport_http=info"));
        assert!(filter(2, None).unwrap().contains("scheduler=debug"));
        assert!(filter(5, None).unwrap().contains("ferry=trace"));
    }
}
