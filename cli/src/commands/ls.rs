//! `ferry ls`: the session's tasks, one row each, from the running ferry if
//! there is one (with each running task's rate), else from the state.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;

use crate::control;
use crate::listing::LsRow;
use crate::output::print_lines;
use crate::session::{self, Access};
use crate::state;
use crate::wire::{Reply, Request};

/// Prints the rows, as JSON objects with `json`, else as columns.
pub(crate) async fn ls(
    json: bool,
    shared: Option<&state::Shared>,
    endpoint: Option<String>,
) -> anyhow::Result<ExitCode> {
    let offline_rows = |records: Vec<transfer_core::TaskRecord>| -> Vec<LsRow> {
        records.iter().map(|r| LsRow::of(r, false)).collect()
    };
    let rows = match shared {
        Some(shared) => offline_rows(
            session::offline(shared.tasks.clone(), endpoint)?
                .tasks()
                .await?,
        ),
        None => match session::access(&session::home()?).await? {
            Access::Runner(stream) => {
                let Reply::Tasks { tasks } = control::call(stream, &Request::Ls).await? else {
                    bail!("the running ferry answered something else than its tasks");
                };
                tasks
            }
            Access::Store(store) => {
                offline_rows(session::offline(Arc::new(store), endpoint)?.tasks().await?)
            }
        },
    };
    let lines: Vec<String> = if json {
        rows.iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()?
    } else {
        rows.iter().map(LsRow::to_string).collect()
    };
    print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
}
