//! `ferry pause`, `ferry resume` and `ferry cancel`: change one task,
//! through the running ferry if there is one, else in the state.

use std::process::ExitCode;
use std::sync::Arc;

use crate::args::parse_id;
use crate::control;
use crate::session::{self, Access};
use crate::state;
use crate::wire::{Change, Request};

/// Makes `change` to the task `id` names, and says so.
#[allow(clippy::print_stdout)]
pub(crate) async fn change(
    id: &str,
    change: Change,
    shared: Option<&state::Shared>,
    endpoint: Option<String>,
) -> anyhow::Result<ExitCode> {
    let task = parse_id(id)?;
    if let Some(shared) = shared {
        // Made under the task's claim, or asked of the process that holds
        // it: that one carries it out when it next reads the session.
        let made = session::offline(shared.tasks.clone(), endpoint)?
            .shared(shared.claims())
            .user(task, change.event())
            .await?;
        if made == scheduler::UserChange::Requested {
            println!("{task}: {} by the process running it", change.asked());
            return Ok(ExitCode::SUCCESS);
        }
    } else {
        match session::access(&session::home()?).await? {
            Access::Runner(stream) => {
                control::call(stream, &Request::Change { id: task, change }).await?;
            }
            Access::Store(store) => {
                session::offline(Arc::new(store), endpoint)?
                    .user(task, change.event())
                    .await?;
            }
        }
    }
    println!("{task}: {}", change.done());
    Ok(ExitCode::SUCCESS)
}
