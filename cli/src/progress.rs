//! Progress of the transfers a command waits for (`get`, `put`): bars on a
//! terminal, otherwise a line per task every few seconds and one when it is
//! done, or JSON lines (`--json`), or nothing (`--quiet`); and the line for
//! each transfer that did not complete.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use scheduler::{Session, SessionEvent, TaskHandle};
use transfer_core::{Outcome, TaskId, Timestamp, WaitReason, format_size};

use crate::args::RunnerOpts;
use crate::json_lines::JsonLines;
use crate::logging;
use crate::output::{format_duration, line, rate_over, say_all};

/// Says why `name` did not complete, if it did not: `false` then.
#[allow(clippy::print_stderr)]
pub(crate) fn report(name: &str, outcome: &Outcome) -> bool {
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

/// How a command shows the transfers it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Display {
    /// Nothing but errors (`--quiet`).
    Quiet,
    /// A line per file when it ends, and (with `progress`) one every 2 s
    /// while it runs: without a terminal, or with `--no-progress`.
    Lines {
        /// Whether running transfers say how far they are.
        progress: bool,
    },
    /// Bars on the terminal, and a summary when they end.
    Bars,
    /// JSON lines on standard output (`--json`).
    Json,
}

impl Display {
    /// The display the options ask for, on this standard error.
    pub(crate) fn chosen(opts: &RunnerOpts) -> Display {
        if opts.json {
            Display::Json
        } else if opts.quiet {
            Display::Quiet
        } else if opts.no_progress {
            Display::Lines { progress: false }
        } else if std::io::stderr().is_terminal() && !logging::on(opts.verbose) {
            // Log lines would tear the bars apart: with them, lines.
            Display::Bars
        } else {
            Display::Lines { progress: true }
        }
    }
}

/// What a waiting task waits for, in words: a wait that ends at a known
/// time says how long it has left.
pub(crate) fn wait_words(reason: &WaitReason) -> String {
    let left = |until: &Timestamp| {
        format_duration(until.saturating_since(Timestamp::from_system_time(SystemTime::now())))
    };
    match reason {
        WaitReason::BackingOff { until, error } => {
            format!("retrying in {} after: {error}", left(until))
        }
        WaitReason::NotBefore(until) => format!("starting in {}", left(until)),
        WaitReason::Schedule { until } if *until != Timestamp::MAX => {
            format!("paused by the bandwidth timetable for {}", left(until))
        }
        other => other.to_string(),
    }
}

/// What turns session events into lines: the lines for people, or JSON.
pub(crate) trait Teller: Send {
    /// Adds the lines `e` calls for, if any.
    fn take(&mut self, e: SessionEvent);
    /// Adds the end of each transfer of `outcomes` that the events did not
    /// bring (one that ended while the list was still being queued, or
    /// just before the display stopped).
    fn missed(&mut self, outcomes: &[(TaskId, &str, Outcome)]);
    /// Writes the lines gathered so far.
    fn flush(&mut self);
}

/// Progress: bars on a terminal, lines or JSON otherwise, or nothing.
pub(crate) struct Shown {
    bars: Option<MultiProgress>,
    task: Option<tokio::task::JoinHandle<()>>,
    teller: Option<Arc<Mutex<dyn Teller>>>,
    /// Whether a summary ends the display.
    summary: bool,
    began: Instant,
}

impl Shown {
    /// Stops the display, with what the events did not bring and (bars and
    /// lines) the summary: files, bytes, time and average rate.
    pub(crate) async fn finish(self, outcomes: &[(TaskId, &str, Outcome)]) {
        if let Some(task) = self.task {
            task.abort();
            // Once it has stopped, nothing more is printed by it.
            let _ = task.await;
        }
        if let Some(b) = &self.bars {
            let _ = b.clear();
        }
        if let Some(teller) = &self.teller
            && let Ok(mut teller) = teller.lock()
        {
            teller.missed(outcomes);
            teller.flush();
        }
        // A summary of nothing would say only zeros: the errors said it.
        if self.summary && outcomes.iter().any(|(_, _, o)| o.is_completed()) {
            let mut out = String::new();
            line(
                &mut out,
                format_args!("{}", summary(outcomes, self.began.elapsed())),
            );
            say_all(&mut out);
        }
    }

    /// Stops the display where it is (the command was interrupted).
    pub(crate) fn abandon(self) {
        if let Some(task) = self.task {
            task.abort();
        }
    }
}

/// "3 files, 12.3 MiB in 4.1 s (3.0 MiB/s)": what completed, and how fast.
fn summary(outcomes: &[(TaskId, &str, Outcome)], took: Duration) -> String {
    let (files, bytes) = outcomes
        .iter()
        .fold((0u64, 0u64), |(n, b), (_, _, o)| match o {
            Outcome::Completed { bytes } => (n + 1, b + bytes),
            _ => (n, b),
        });
    let failed = outcomes.len() as u64 - files;
    let mut text = format!(
        "{files} file{}, {} in {} ({})",
        if files == 1 { "" } else { "s" },
        format_size(bytes),
        format_duration(took),
        rate_over(bytes, took)
    );
    if failed > 0 {
        text.push_str(&format!(", {failed} failed"));
    }
    text
}

/// Starts showing the progress of `tasks` (each with its name, and its
/// URL in `urls`) as `display` says, until [`Shown::finish`] or
/// [`Shown::abandon`].
pub(crate) fn show_progress(
    session: &Session,
    tasks: &[(TaskHandle, String)],
    urls: HashMap<TaskId, String>,
    display: Display,
) -> Shown {
    let names: HashMap<TaskId, String> = tasks.iter().map(|(h, n)| (h.id(), n.clone())).collect();
    let began = Instant::now();
    let events = Box::pin(session.events());
    let teller: Arc<Mutex<dyn Teller>> = match display {
        Display::Quiet => {
            return Shown {
                bars: None,
                task: None,
                teller: None,
                summary: false,
                began,
            };
        }
        Display::Bars => return show_bars(events, names, began),
        Display::Lines { progress } => Arc::new(Mutex::new(Lines {
            names,
            progress,
            last: HashMap::new(),
            said: HashSet::new(),
            out: String::new(),
        })),
        Display::Json => {
            let mut json = JsonLines::new(urls);
            for (handle, name) in tasks {
                json.queued(handle.id(), name);
            }
            json.flush();
            Arc::new(Mutex::new(json))
        }
    };
    Shown {
        bars: None,
        task: Some(tokio::spawn(tell(events, teller.clone()))),
        teller: Some(teller),
        summary: matches!(display, Display::Lines { .. }),
        began,
    }
}

/// Hands `events` to `teller` until they end, writing its lines after
/// each burst.
async fn tell(
    mut events: impl futures::Stream<Item = SessionEvent> + Unpin,
    teller: Arc<Mutex<dyn Teller>>,
) {
    while let Some(e) = events.next().await {
        let Ok(mut teller) = teller.lock() else {
            return;
        };
        teller.take(e);
        // The rest of the burst (completions come together, after the
        // commit that made them durable), with no await until its lines
        // are out: a stop in between loses none of them.
        let mut ended = false;
        loop {
            match futures::FutureExt::now_or_never(events.next()) {
                Some(Some(e)) => teller.take(e),
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        teller.flush();
        if ended {
            return;
        }
    }
}

/// Bars on the terminal, one per task.
fn show_bars(
    mut events: impl futures::Stream<Item = SessionEvent> + Unpin + Send + 'static,
    names: HashMap<TaskId, String>,
    began: Instant,
) -> Shown {
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
                        if let Some(name) = names.get(&task) {
                            bar.set_message(name.clone());
                        }
                    }
                }
                SessionEvent::Waiting { task, reason } => {
                    if let (Some(bar), Some(name)) = (bars.get(&task), names.get(&task)) {
                        bar.set_message(format!("{name} ({})", wait_words(&reason)));
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
        task: Some(task),
        teller: None,
        summary: true,
        began,
    }
}

/// The lines printed for people without bars, gathered per burst of
/// events.
struct Lines {
    names: HashMap<TaskId, String>,
    /// Whether running downloads say how far they are.
    progress: bool,
    /// When each running download last printed its progress, and how far
    /// it was then.
    last: HashMap<TaskId, (Instant, u64)>,
    /// The downloads whose "done" line was printed.
    said: HashSet<TaskId>,
    out: String,
}

impl Teller for Lines {
    fn take(&mut self, e: SessionEvent) {
        let out = &mut self.out;
        match e {
            SessionEvent::Progress { task, progress } => {
                // Every 2 s per download, the first 2 s after its first
                // bytes: one that ends sooner says only done.
                let (since, from) = self
                    .last
                    .entry(task)
                    .or_insert_with(|| (Instant::now(), progress.total));
                let took = since.elapsed();
                if self.progress
                    && took >= Duration::from_secs(2)
                    && let Some(name) = self.names.get(&task)
                {
                    let rate = rate_over(progress.total.saturating_sub(*from), took);
                    *since = Instant::now();
                    *from = progress.total;
                    let done = format_size(progress.total);
                    match progress.expected {
                        Some(t) if t > 0 => line(
                            out,
                            format_args!(
                                "{name}: {done} of {} ({}%), {rate}",
                                format_size(t),
                                progress.total.saturating_mul(100) / t
                            ),
                        ),
                        _ => line(out, format_args!("{name}: {done}, {rate}")),
                    }
                }
            }
            SessionEvent::Waiting { task, reason } => {
                if let Some(name) = self.names.get(&task) {
                    line(out, format_args!("{name}: {}", wait_words(&reason)));
                }
            }
            SessionEvent::Restarted { task, reason } => {
                if let Some(name) = self.names.get(&task) {
                    line(out, format_args!("{name}: starting over: {reason}"));
                }
            }
            SessionEvent::Completed(c) => {
                self.last.remove(&c.task);
                if let (Some(name), Outcome::Completed { bytes }) =
                    (self.names.get(&c.task), &c.outcome)
                {
                    line(out, format_args!("{name}: done, {}", format_size(*bytes)));
                    self.said.insert(c.task);
                }
            }
            _ => {}
        }
    }

    fn missed(&mut self, outcomes: &[(TaskId, &str, Outcome)]) {
        for (id, name, outcome) in outcomes {
            if let Outcome::Completed { bytes } = outcome
                && self.said.insert(*id)
            {
                line(
                    &mut self.out,
                    format_args!("{name}: done, {}", format_size(*bytes)),
                );
            }
        }
    }

    fn flush(&mut self) {
        say_all(&mut self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_what_completed() {
        let outcomes = [
            (
                TaskId::from_u64(1),
                "a",
                Outcome::Completed { bytes: 3 << 20 },
            ),
            (
                TaskId::from_u64(2),
                "b",
                Outcome::Completed { bytes: 3 << 20 },
            ),
        ];
        assert_eq!(
            summary(&outcomes, Duration::from_secs(2)),
            "2 files, 6.0 MiB in 2.0 s (3.0 MiB/s)"
        );
        assert_eq!(
            summary(&outcomes[..1], Duration::from_millis(500)),
            "1 file, 3.0 MiB in 500 ms (6.0 MiB/s)"
        );
    }

    #[test]
    fn a_wait_reads_as_one_phrase() {
        let words = wait_words(&WaitReason::NoNetwork);
        assert_eq!(words, "waiting for a network connection");
        let retry = wait_words(&WaitReason::BackingOff {
            until: Timestamp::from_system_time(SystemTime::now())
                .saturating_add(Duration::from_secs(5)),
            error: transfer_core::TransferError::new(
                transfer_core::ErrorKind::ConnectFailed,
                "refused",
            ),
        });
        assert!(retry.starts_with("retrying in "), "{retry}");
        assert!(retry.contains(" s after: "), "{retry}");
    }
}
