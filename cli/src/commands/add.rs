//! `ferry add`: enqueue downloads without waiting for them, into the running
//! ferry if there is one, else into the state, and print each task's id and
//! name.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;

use crate::args::AddArgs;
use crate::control;
use crate::enqueue::{Target, add_downloads};
use crate::output::print_lines;
use crate::session::{self, Access};
use crate::state;
use crate::wire::{Reply, Request};

/// Runs `ferry add`.
pub(crate) async fn add(
    args: AddArgs,
    shared: Option<&state::Shared>,
    endpoint: Option<String>,
) -> anyhow::Result<ExitCode> {
    let downloads = args.resolved()?.downloads()?;
    let added = match shared {
        Some(shared) => {
            let offline = session::offline(shared.tasks.clone(), endpoint)?;
            add_downloads(Target::Offline(&offline), &downloads).await?
        }
        None => match session::access(&session::home()?).await? {
            Access::Runner(stream) => {
                let Reply::Added { tasks } =
                    control::call(stream, &Request::Add(downloads)).await?
                else {
                    bail!("the running ferry answered something else than the tasks it added");
                };
                tasks.into_iter().map(|t| (t.id, t.name)).collect()
            }
            Access::Store(store) => {
                let offline = session::offline(Arc::new(store), endpoint)?;
                add_downloads(Target::Offline(&offline), &downloads).await?
            }
        },
    };
    print_lines(added.into_iter().map(|(id, name)| format!("{id}  {name}")))?;
    Ok(ExitCode::SUCCESS)
}
