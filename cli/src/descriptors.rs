//! File descriptors: the process raises its soft limit to the hard limit
//! at start, and `-j` asks no more transfers at once than that limit can
//! hold (each needs a socket, its partial file and that file's directory).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors one transfer may hold at once: its connection, its partial
/// file and the directory that file is in.
const PER_TRANSFER: u64 = 3;

/// Descriptors kept for the rest of the process: the runtime, the state
/// database and its lock, the control socket and its clients, standard
/// streams, name resolution.
const RESERVED: u64 = 48;

/// Raises the soft limit on open files to the hard limit (many transfers
/// at once need many); returns the soft limit in force after.
pub(crate) fn raise_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "could not raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// How many transfers at once the open-file limit `limit` holds (`None`:
/// no limit); at least one.
pub(crate) fn transfers_allowed(limit: Option<u64>) -> u32 {
    let Some(limit) = limit else {
        return u32::MAX;
    };
    let n = limit.saturating_sub(RESERVED) / PER_TRANSFER;
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_a_few_descriptors_per_transfer() {
        assert_eq!(transfers_allowed(None), u32::MAX);
        assert_eq!(transfers_allowed(Some(1024)), (1024 - 48) / 3);
        assert_eq!(transfers_allowed(Some(64)), 5);
        // Never none at all, however low the limit.
        assert_eq!(transfers_allowed(Some(10)), 1);
    }
}
