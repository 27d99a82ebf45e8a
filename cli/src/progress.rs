//! Progress of the transfers a command waits for (`get`, `put`): bars on a
//! terminal, otherwise a line per task every few seconds and one when it is
//! done; and the line for each transfer that did not complete.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use scheduler::{Session, SessionEvent, TaskHandle};
use transfer_core::{Outcome, TaskId};

use crate::output::{line, say_all};

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

/// Progress: bars on a terminal, a line per task every few seconds otherwise.
pub(crate) struct Shown {
    bars: Option<MultiProgress>,
    task: tokio::task::JoinHandle<()>,
    /// The downloads whose "done" line was printed.
    said_done: Arc<std::sync::Mutex<HashSet<TaskId>>>,
}

impl Shown {
    /// Stops the display. Without bars, each completed download gets its
    /// "done" line here if the event stream did not bring it: one that
    /// ended while the list was still being queued, or just before this.
    pub(crate) async fn finish(self, outcomes: &[(TaskId, &str, Outcome)]) {
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

    /// Stops the display where it is (the command was interrupted).
    pub(crate) fn abandon(self) {
        self.task.abort();
    }
}

/// Starts showing the progress of `tasks` (each with its name) until
/// [`Shown::finish`] or [`Shown::abandon`].
pub(crate) fn show_progress(session: &Session, tasks: &[(TaskHandle, String)]) -> Shown {
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
