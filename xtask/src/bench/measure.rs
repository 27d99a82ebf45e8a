//! One timed run of a client: wall time, and from the kernel's rusage (read
//! through GNU time, which waits for the child) its user+sys CPU seconds and
//! peak resident set.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What one run of one tool cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// Wall-clock seconds from spawn to exit.
    pub(crate) wall_s: f64,
    /// User plus system CPU seconds of the client process.
    pub(crate) cpu_s: f64,
    /// Peak resident set of the client process, KiB.
    pub(crate) peak_rss_kib: u64,
    /// Why the run does not count (non-zero exit, missing or short output).
    pub(crate) error: Option<String>,
}

/// Runs `cmd` to its end under `/usr/bin/time`, its stdout and stderr going
/// to `log`.
pub(crate) fn run(cmd: &Command, log: &Path) -> anyhow::Result<Sample> {
    let usage = log.with_extension("rusage");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%U %S %M")
        .arg("-o")
        .arg(&usage)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    let out = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    timed
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let start = Instant::now();
    let status = timed
        .status()
        .context("running /usr/bin/time (apt-get install time)")?;
    let wall_s = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&usage).unwrap_or_default();
    // GNU time writes "Command exited with non-zero status N" before the figures.
    let figures: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let (cpu_s, peak_rss_kib) = match figures[..] {
        [user, sys, rss] => (user + sys, rss as u64),
        _ => (f64::NAN, 0),
    };
    let error = (!status.success()).then(|| {
        let tail = std::fs::read_to_string(log).unwrap_or_default();
        let tail: String = tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        format!("{status}: {tail}")
    });
    Ok(Sample {
        wall_s,
        cpu_s,
        peak_rss_kib,
        error,
    })
}

/// The median of `values` (NaN if empty).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
