//! `ferry get` and `ferry put`: run the transfers (in this process, or in
//! the ferry already running) and wait until every one ends.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use scheduler::{SessionEvent, TaskHandle};
use transfer_core::{NoDelegate, TaskId, format_size};

use crate::args::RunnerOpts;
use crate::control;
use crate::enqueue::{Downloads, Target, Upload, add_downloads, add_upload};
use crate::json_lines::JsonLines;
use crate::output::say;
use crate::progress::{Display, Teller, report, show_progress};
use crate::session::{self, Started};
use crate::state;
use crate::wire::{Followed, Reply, Request};

/// What `get` and `put` ask for.
pub(crate) enum Job {
    /// Downloads (`get`).
    Get(Downloads),
    /// An upload (`put`).
    Put(Upload),
}

impl Job {
    /// The request that hands the job to a running ferry.
    fn request(self) -> Request {
        match self {
            Job::Get(downloads) => Request::Add(downloads),
            Job::Put(upload) => Request::Put(upload),
        }
    }

    async fn enqueue(&self, target: Target<'_>) -> anyhow::Result<Vec<(TaskId, String)>> {
        match self {
            Job::Get(downloads) => add_downloads(target, downloads).await,
            Job::Put(upload) => add_upload(target, upload).await,
        }
    }
}

/// Runs the job's transfers (here, or in the ferry already running) and
/// waits until every one ends. An upload's answer goes to standard output.
#[allow(clippy::print_stdout)]
pub(crate) async fn transfer(
    job: Job,
    opts: &RunnerOpts,
    shared: Option<&state::Shared>,
) -> anyhow::Result<ExitCode> {
    let (session, server) = match session::start(opts, shared, Arc::new(NoDelegate)).await? {
        Started::Here(session, server) => (session, server),
        Started::Elsewhere(stream, home) => {
            return transfer_through_runner(stream, &home, job, Display::chosen(opts)).await;
        }
    };
    let mut events = Box::pin(session.events());
    let mut store = Box::pin(session.events());
    let added = job.enqueue(Target::Live(&session)).await?;
    let tasks: Vec<(TaskHandle, String)> = added
        .into_iter()
        .map(|(id, name)| (session.task(id), name))
        .collect();

    let display = Display::chosen(opts);
    let urls = if display == Display::Json {
        let ids: std::collections::HashSet<TaskId> = tasks.iter().map(|(h, _)| h.id()).collect();
        session
            .tasks()
            .await?
            .into_iter()
            .filter(|r| ids.contains(&r.id))
            .map(|r| (r.id, r.spec.request.url.to_string()))
            .collect()
    } else {
        HashMap::new()
    };
    let mut ended_before = std::collections::HashSet::new();
    if matches!(job, Job::Put(_)) {
        for (handle, _) in &tasks {
            if handle.outcome().await?.is_some() {
                ended_before.insert(handle.id());
            }
        }
    }
    let mut interrupted = session::watch_signals(session.clone());
    let shown = show_progress(&session, &tasks, urls.clone(), display);
    let mut codes = Vec::with_capacity(tasks.len());
    let mut answers = Vec::new();
    let mut outcomes = Vec::with_capacity(tasks.len());
    for (handle, name) in &tasks {
        let next = tokio::select! {
            o = handle.wait() => Ok(o?),
            _ = interrupted.wait_for(|i| *i) => {
                shown.abandon();
                return Ok(ExitCode::from(130));
            }
            why = state_disk_full(&mut store) => Err(why),
        };
        let outcome = match next {
            Ok(o) => o,
            Err(why) => {
                // Nothing more can be recorded: what is done is on disk,
                // and the same command continues from there.
                shown.abandon();
                say(format_args!("ferry: {why}"));
                drop(server);
                session.shutdown().await;
                return Ok(ExitCode::from(2));
            }
        };
        report(name, &outcome);
        codes.push(crate::exit::code_of_outcome(&outcome));
        outcomes.push((handle.id(), name.as_str(), outcome));
    }
    shown.finish(&outcomes).await;
    if matches!(job, Job::Put(_)) {
        // Each completion was recorded before `wait` returned, but its
        // event may still be on its way to the stream (the session
        // delivers events on a task of its own): wait for those of the
        // uploads that completed, a few seconds at most. An upload that
        // had ended before (sent already, the file unchanged) brings no
        // event.
        let mut awaited: std::collections::HashSet<TaskId> = outcomes
            .iter()
            .filter(|(id, _, o)| o.is_completed() && !ended_before.contains(id))
            .map(|(id, _, _)| *id)
            .collect();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let next = if awaited.is_empty() {
                // What is there already.
                match futures::FutureExt::now_or_never(events.next()) {
                    Some(e) => e,
                    None => break,
                }
            } else {
                tokio::time::timeout_at(deadline, events.next())
                    .await
                    .ok()
                    .flatten()
            };
            let Some(e) = next else {
                break;
            };
            if let SessionEvent::Completed(c) = e {
                awaited.remove(&c.task);
                if let Some(r) = c.response
                    && c.outcome.is_completed()
                {
                    answers.push((c.task, r));
                }
            }
        }
    }
    drop(server);
    session.shutdown().await;
    if display == Display::Json {
        // The answer is a line of its own, not raw bytes among the lines.
        let mut lines = JsonLines::new(urls);
        for (task, r) in answers {
            lines.response(task, r.status.as_u16(), &r.body);
        }
        lines.flush();
    } else {
        for (_, r) in answers {
            std::io::Write::write_all(&mut std::io::stdout(), &r.body)?;
        }
    }
    Ok(crate::exit::exit(codes))
}

/// Waits until the session says its state disk is full (its commits are
/// retried, but nothing is recorded until space is freed), and says so in
/// words.
async fn state_disk_full(
    events: &mut (impl futures::Stream<Item = SessionEvent> + Unpin),
) -> String {
    while let Some(e) = events.next().await {
        if let SessionEvent::StoreFailed {
            kind: transfer_core::StoreErrorKind::Full,
            message,
            ..
        } = e
        {
            return format!(
                "state disk full: {message}; downloads stop until there is room (run the same command again then)"
            );
        }
    }
    std::future::pending().await
}

/// The job while another process runs the session: hand it the tasks and
/// follow them until they end.
#[allow(clippy::print_stderr)]
async fn transfer_through_runner(
    stream: tokio::net::UnixStream,
    home: &Path,
    job: Job,
    display: Display,
) -> anyhow::Result<ExitCode> {
    // What the running ferry relays is said in lines for people; quiet
    // (and JSON, whose lines it does not relay) keeps to the errors.
    let say_lines = matches!(display, Display::Lines { .. } | Display::Bars);
    let say_progress = matches!(display, Display::Lines { progress: true } | Display::Bars);
    let Reply::Added { tasks } = control::call(stream, &job.request()).await? else {
        bail!("the running ferry answered something else than the tasks it added");
    };
    let names: HashMap<TaskId, String> = tasks.into_iter().map(|t| (t.id, t.name)).collect();
    if say_lines {
        eprintln!(
            "ferry: handed {} transfer(s) to the running ferry",
            names.len()
        );
    }
    let stream = control::connect(home)
        .await
        .context("the running ferry went away")?;
    let ids = names.keys().copied().collect();
    let mut lines = control::request(stream, &Request::Follow { ids }).await?;
    let name = |id: &TaskId| names.get(id).cloned().unwrap_or_default();
    let mut codes = Vec::new();
    let mut ended = 0;
    while let Some(line) = lines.next().await? {
        match line {
            Followed::Progress { id, bytes, .. } => {
                if say_progress {
                    say(format_args!("{}: {}", name(&id), format_size(bytes)))
                }
            }
            Followed::Waiting { id, reason } => {
                if say_lines {
                    say(format_args!("{}: {reason}", name(&id)))
                }
            }
            Followed::Completed { .. } => ended += 1,
            Followed::Failed { id, error, code } => {
                ended += 1;
                codes.push(code);
                eprintln!("ferry: {}: {error}", name(&id));
            }
            // What is left unended says the rest, below.
            Followed::Error { .. } => {}
        }
    }
    if ended < names.len() {
        bail!(
            "the running ferry stopped before the transfers ended; run the command again to continue"
        );
    }
    Ok(crate::exit::exit(codes))
}
