//! `ferry repair`: salvages a damaged state database in `$FERRY_HOME`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use store_fs::FsTaskStore;

use crate::output::print_lines;
use crate::session;
use crate::state;

/// Salvages the state database and says what was kept and lost: exit 0
/// when nothing was lost, 1 when something was.
pub(crate) fn repair(shared: Option<&state::Shared>) -> anyhow::Result<ExitCode> {
    if shared.is_some() {
        bail!("`ferry repair` mends the state database in $FERRY_HOME; a bucket's state has none");
    }
    let home = session::home()?;
    let report = FsTaskStore::repair(&home)
        .with_context(|| format!("repairing the state in {}", home.display()))?;
    print_lines(report.to_string().lines().map(str::to_owned))?;
    Ok(if report.lost.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
