//! `ferry run`: run the session in this process, every queued task, until
//! stopped or (with `--until-idle`) until nothing is left to do, with a line
//! for each task that ends.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use transfer_core::{Completion, Delegate, Outcome};

use crate::args::{RunnerOpts, WhenArgs, parse_rate};
use crate::output::say;
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
    let (session, server) = match session::start(&opts, shared, Arc::new(Announce)).await? {
        Started::Here(session, server) => (session, server),
        Started::Elsewhere(_, home) => bail!(
            "another ferry process is running the session in {}; use `ferry add` to give it work",
            home.display()
        ),
    };
    let mut interrupted = session::watch_signals(session.clone());
    let idle = async {
        if until_idle {
            session.wait_idle().await
        } else {
            futures::future::pending().await
        }
    };
    let code = tokio::select! {
        // Idle, or the session stopped by itself: either way, nothing left to do.
        _ = idle => ExitCode::SUCCESS,
        _ = interrupted.wait_for(|i| *i) => ExitCode::from(130),
    };
    drop(server);
    session.shutdown().await;
    Ok(code)
}

/// `ferry run`'s delegate: a line on stderr for each task that ends,
/// including those that ended before a restart and were not yet reported
/// (a completion's event id tells a repeat after a kill from a new one).
struct Announce;

#[async_trait::async_trait]
impl Delegate for Announce {
    async fn completed(&self, c: &Completion) {
        let name = c.label.clone().unwrap_or_else(|| c.task.to_string());
        match &c.outcome {
            Outcome::Completed { bytes } => {
                say(format_args!(
                    "{name}: done, {bytes} bytes (event {})",
                    c.event
                ));
            }
            Outcome::Failed { error, .. } => say(format_args!("{name}: failed: {error}")),
            Outcome::Cancelled { .. } => say(format_args!("{name}: cancelled")),
        }
    }

    fn follows_tasks(&self) -> bool {
        false
    }
}
