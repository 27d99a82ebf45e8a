//! Fewer transfers at once while file descriptors are short: a transfer
//! that fails for want of one (`EMFILE`, `ENFILE`) waits a moment without
//! counting towards its retry limit, and the session halves how many run
//! at once until the shortage has passed.

use std::time::Duration;

use transfer_core::Timestamp;

use super::core::Core;

/// How long a shortage keeps the session squeezed after the last one.
pub(crate) const SQUEEZE_FOR: Duration = Duration::from_secs(30);

/// The squeeze in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Squeeze {
    /// At most this many transfers at once.
    pub(crate) cap: usize,
    /// Until then.
    pub(crate) until: Timestamp,
}

impl<W> Core<W> {
    /// A transfer found no file descriptor: half as many at once as run
    /// now (or as the squeeze allowed), at least one, for [`SQUEEZE_FOR`].
    pub(crate) fn squeeze_descriptors(&mut self) {
        let busy = self.busy_slots().max(1);
        let allowed = self.squeeze.map_or(busy, |s| s.cap.min(busy));
        let cap = (allowed / 2).max(1);
        tracing::warn!(
            cap,
            "out of file descriptors: running fewer transfers at once"
        );
        self.squeeze = Some(Squeeze {
            cap,
            until: self.now.saturating_add(SQUEEZE_FOR),
        });
    }

    /// How many transfers may run at once now.
    pub(crate) fn slot_limit(&mut self) -> usize {
        if self.squeeze.is_some_and(|s| s.until <= self.now) {
            self.squeeze = None;
        }
        let max = self.config.policy.max_concurrent as usize;
        self.squeeze.map_or(max, |s| s.cap.min(max))
    }
}
