//! `ferry run`: run the session in this process, every queued task, until
//! stopped or (with `--until-idle`) until nothing is left to do, with a line
//! for each task that ends.

use std::process::ExitCode;
use std::sync::Arc;

use std::collections::HashMap;

use anyhow::bail;
use futures::StreamExt;
use scheduler::{Session, SessionEvent};
use transfer_core::{Completion, Delegate, Outcome, format_size};

use crate::args::{RunnerOpts, WhenArgs, parse_rate};
use crate::json_lines::JsonLines;
use crate::output::say;
use crate::progress::{Display, Teller};
use crate::session::{self, Started};
use crate::state;

/// Runs `ferry run`: `limit_rate` and `when` apply to the whole session.
pub(crate) async fn run(
    until_idle: bool,
    limit_rate: Option<&str>,
    when: &WhenArgs,
    mut opts: RunnerOpts,
    shared: Option<&state::Shared>,
) -> anyhow::Result<ExitCode> {
    opts.session_rate = limit_rate.map(parse_rate).transpose()?;
    opts.session_constraints = when.constraints();
    let display = Display::chosen(&opts);
    let announce = Announce {
        done: matches!(display, Display::Lines { .. } | Display::Bars),
        failed: display != Display::Json,
    };
    let (session, server) = match session::start(&opts, shared, Arc::new(announce)).await? {
        Started::Here(session, server) => (session, server),
        Started::Elsewhere(_, home) => bail!(
            "another ferry process is running the session in {}; use `ferry add` to give it work",
            home.display()
        ),
    };
    let mut json = if display == Display::Json {
        Some(JsonFollower::start(&session).await)
    } else {
        None
    };
    let mut interrupted = session::watch_signals(session.clone());
    let idle = async {
        if until_idle {
            session.wait_idle().await
        } else {
            futures::future::pending().await
        }
    };
    let follow = async {
        match &mut json {
            Some(json) => json.follow(&session).await,
            None => futures::future::pending().await,
        }
    };
    let code = tokio::select! {
        // Idle, or the session stopped by itself: either way, nothing left to do.
        _ = idle => ExitCode::SUCCESS,
        _ = interrupted.wait_for(|i| *i) => ExitCode::from(130),
        // The events ended: the session stopped.
        () = follow => ExitCode::SUCCESS,
    };
    if let Some(json) = &mut json {
        // What the session said before it went idle is in the stream:
        // its lines are out before the command ends.
        json.drain(&session).await;
    }
    drop(server);
    session.shutdown().await;
    Ok(code)
}

/// `--json`: the lines of every task the session runs: a `queued` line for
/// each task not ended at the start, or for a task met later before its
/// first event, then its events.
struct JsonFollower {
    events: std::pin::Pin<Box<dyn futures::Stream<Item = SessionEvent> + Send>>,
    lines: JsonLines,
}

impl JsonFollower {
    /// Follows `session`'s events from now, after a `queued` line for each
    /// task queued in it.
    async fn start(session: &Session) -> JsonFollower {
        let events = Box::pin(session.events());
        let mut lines = JsonLines::new(HashMap::new());
        if let Ok(records) = session.tasks().await {
            for r in records.iter().filter(|r| !r.state.phase.is_terminal()) {
                lines.follow(r.id, &r.spec.request.url.to_string());
                lines.queued(r.id, r.spec.label.as_deref().unwrap_or(""));
            }
            lines.flush();
        }
        JsonFollower { events, lines }
    }

    /// Writes the lines of the events as they come, until they end.
    async fn follow(&mut self, session: &Session) {
        while let Some(e) = self.events.next().await {
            self.take(session, e).await;
        }
    }

    /// Writes the lines of the events already there.
    async fn drain(&mut self, session: &Session) {
        while let Some(Some(e)) = futures::FutureExt::now_or_never(self.events.next()) {
            self.take(session, e).await;
        }
    }

    /// Writes the line of `e`, learning the URL of a task met first.
    async fn take(&mut self, session: &Session, e: SessionEvent) {
        let task = match &e {
            SessionEvent::Progress { task, .. }
            | SessionEvent::Waiting { task, .. }
            | SessionEvent::Restarted { task, .. } => Some(*task),
            SessionEvent::Completed(c) => Some(c.task),
            _ => None,
        };
        if let Some(task) = task
            && !self.lines.follows(task)
            && let Ok(Some(r)) = session.task(task).snapshot().await
        {
            // Queued since the start (`ferry add`, another process): its
            // lines begin as every task's do.
            self.lines.follow(task, &r.spec.request.url.to_string());
            self.lines
                .queued(task, r.spec.label.as_deref().unwrap_or(""));
        }
        self.lines.take(e);
        self.lines.flush();
    }
}

/// `ferry run`'s delegate: a line on stderr for each task that ends,
/// including those that ended before a restart and were not yet reported
/// (a completion's event id tells a repeat after a kill from a new one).
struct Announce {
    /// Whether a task that completed says so (not with `--quiet` or
    /// `--json`).
    done: bool,
    /// Whether a task that failed says so (not with `--json`, whose lines
    /// say it).
    failed: bool,
}

#[async_trait::async_trait]
impl Delegate for Announce {
    async fn completed(&self, c: &Completion) {
        let name = c.label.clone().unwrap_or_else(|| c.task.to_string());
        match &c.outcome {
            Outcome::Completed { bytes } if self.done => {
                say(format_args!(
                    "{name}: done, {} (event {})",
                    format_size(*bytes),
                    c.event
                ));
            }
            Outcome::Completed { .. } => {}
            Outcome::Failed { error, .. } if self.failed => {
                say(format_args!("{name}: failed: {error}"))
            }
            Outcome::Cancelled { .. } if self.failed => say(format_args!("{name}: cancelled")),
            Outcome::Failed { .. } | Outcome::Cancelled { .. } => {}
        }
    }

    fn follows_tasks(&self) -> bool {
        false
    }
}
