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
        // The process running the task sees the change when it next reads
        // the session, and stops it.
        session::offline(shared.tasks.clone(), endpoint)?
            .user(task, change.event())
            .await?;
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
