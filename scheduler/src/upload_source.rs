//! An upload's source file, checked and stamped when the task is
//! described, so an attempt can tell when it changed.

use crate::SessionError;
use transfer_core::TaskSpec;

/// Records what an upload's source file looks like now (size, modification
/// time), after checking that it can be read. Downloads are left alone.
pub async fn stamp_source(spec: &mut TaskSpec) -> Result<(), SessionError> {
    let transfer_core::TaskKind::Upload { source, stamp, .. } = &mut spec.kind else {
        return Ok(());
    };
    let failed = |error: std::io::Error| SessionError::Source {
        path: source.clone(),
        error,
    };
    let file = tokio::fs::File::open(&*source).await.map_err(failed)?;
    let meta = file.metadata().await.map_err(failed)?;
    if !meta.is_file() {
        return Err(failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let now = transfer_core::FileStamp::of(&meta);
    if let Some(before) = stamp
        && let Some(how) = before.changed(&now)
    {
        return Err(failed(std::io::Error::other(format!(
            "changed since the task was described: {how}"
        ))));
    }
    *stamp = Some(now);
    Ok(())
}
