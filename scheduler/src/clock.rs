//! The session's wall clock.
//!
//! Admission reads the time of day (bandwidth timetables, earliest begin,
//! backoff, deadlines). The clock starts at the system's time and advances
//! with tokio's clock, so a test on a paused tokio clock sees an hour of
//! backoff pass at once. It can also start at a chosen time and be moved
//! forward by hand: a simulation of what a timetable does at 23:00, or an
//! app that learns from its platform that the machine slept.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use transfer_core::Timestamp;

/// Wall-clock time for a session; see the module docs. Clones share one
/// clock.
#[derive(Clone, Debug)]
pub struct Clock {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    base: Timestamp,
    start: tokio::time::Instant,
    /// Milliseconds added by [`Clock::advance`].
    advanced_ms: AtomicU64,
    /// Bumped on every jump, so sessions look at their timers again.
    jumps: watch::Sender<u64>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// A clock reading the system's time now, then advancing with tokio's
    /// clock.
    pub fn system() -> Clock {
        Clock::starting_at(SystemTime::now())
    }

    /// A clock that reads `start` now, then advances with tokio's clock.
    pub fn starting_at(start: SystemTime) -> Clock {
        Clock {
            shared: Arc::new(Shared {
                base: Timestamp::from_system_time(start),
                start: tokio::time::Instant::now(),
                advanced_ms: AtomicU64::new(0),
                jumps: watch::channel(0).0,
            }),
        }
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        let s = &self.shared;
        s.base
            .saturating_add(s.start.elapsed())
            .saturating_add(Duration::from_millis(s.advanced_ms.load(Ordering::Acquire)))
    }

    /// Moves this clock forward by `by` at once, as when the machine wakes
    /// from sleep. Sessions on this clock judge their timers, timetables
    /// and waiting tasks again straight away.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let s = &self.shared;
        let _ = s
            .advanced_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                Some(m.saturating_add(ms))
            });
        s.jumps.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How long until `t` on this clock (zero if it has passed).
    pub(crate) fn until(&self, t: Timestamp) -> Duration {
        t.saturating_since(self.now())
    }

    /// Changes whenever the clock jumps.
    pub(crate) fn jumps(&self) -> watch::Receiver<u64> {
        self.shared.jumps.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn advances_with_tokio_and_by_hand() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = Clock::starting_at(start);
        let mut jumps = clock.jumps();
        assert_eq!(clock.now(), Timestamp::from_system_time(start));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            clock.now(),
            Timestamp::from_system_time(start + Duration::from_secs(5))
        );
        clock.clone().advance(Duration::from_secs(3600));
        assert!(jumps.has_changed().unwrap(), "a jump is announced");
        jumps.borrow_and_update();
        assert_eq!(
            clock.now(),
            Timestamp::from_system_time(start + Duration::from_secs(3605))
        );
        let later = Timestamp::from_system_time(start + Duration::from_secs(3610));
        assert_eq!(clock.until(later), Duration::from_secs(5));
        assert_eq!(
            clock.until(Timestamp::from_system_time(start)),
            Duration::ZERO
        );
    }
}
