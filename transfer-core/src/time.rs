//! Wall-clock time as a plain value.
//!
//! The core never reads a clock: every function that needs the time takes a
//! [`Timestamp`] argument, so tests drive time explicitly and persisted records
//! (earliest begin, backoff deadlines) mean the same thing after a restart.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Time since the machine booted, suspended time included
/// (`CLOCK_BOOTTIME`): what lease lifetimes are measured on, because a
/// lease runs on while the machine sleeps and `Instant` (`CLOCK_MONOTONIC`)
/// does not.
pub fn since_boot() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The far future ("never"); formats as `never`.
    pub const MAX: Timestamp = Timestamp(u64::MAX);
    /// The last millisecond an HTTP-date can express (9999-12-31T23:59:59.999Z).
    const LAST_HTTP_DATE: u64 = 253_402_300_799_999;

    /// A timestamp `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Converts a [`SystemTime`]; times before the epoch clamp to the epoch.
    pub fn from_system_time(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// This timestamp as a [`SystemTime`] (saturating where the platform's
    /// `SystemTime` cannot reach).
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_millis(self.0))
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(i32::MAX as u64))
    }

    /// This timestamp plus `d`, saturating at the far future.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// Time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    /// Formats as an HTTP-date in UTC (e.g. `Tue, 24 Nov 2026 08:00:00 GMT`),
    /// or `never` past the year 9999.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 > Self::LAST_HTTP_DATE {
            return f.write_str("never");
        }
        f.write_str(&httpdate::fmt_http_date(self.to_system_time()))
    }
}
