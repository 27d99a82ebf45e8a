//! Servers this crate starts as processes (caddy, moto): output discarded,
//! killed when dropped.

use std::process::{Child, Command, Stdio};

use crate::Error;

/// A running server process, killed on drop.
#[derive(Debug)]
pub(crate) struct Spawned(pub(crate) Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with its output discarded; `what` says how to install
/// it when it is missing.
pub(crate) fn spawn(command: &mut Command, what: &str) -> Result<Spawned, Error> {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Spawned)
        .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("{what}: {e}"))))
}
