//! Admission: may this task run now, and how fast? A pure function of the
//! task, the session's [`Policy`], the [`Conditions`], the load and the time.
//!
//! When it may not, the answer is a [`WaitReason`] that prints as plain words
//! (`ferry ls` shows them). Admission is *monotone*: conditions that are at
//! least as good (see [`Conditions::at_least_as_good_as`]) never turn `Run`
//! into `Wait`, and never lower the rate.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::conditions::{Conditions, NetworkPath};
use crate::error::TransferError;
use crate::schedule::{Bandwidth, Timetable};
use crate::spec::{Constraints, Priority, TaskSpec};
use crate::time::Timestamp;
use crate::units::format_rate;

/// Why a task is waiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WaitReason {
    /// There is no network.
    NoNetwork,
    /// The network is cellular and the session does not allow cellular.
    CellularNotAllowed,
    /// The network is metered (cellular or expensive) and the session or the
    /// task does not allow that.
    ExpensiveNetwork,
    /// The network is constrained (low data mode) and that is not allowed.
    ConstrainedNetwork,
    /// The task requires external power.
    NeedsCharging,
    /// The battery is below a threshold and not charging.
    BatteryLow {
        /// The charge now, in percent.
        level: u8,
        /// The threshold it is under.
        threshold: u8,
    },
    /// Low power mode is on and the task is discretionary.
    LowPowerMode,
    /// The task's earliest begin time has not come.
    NotBefore(Timestamp),
    /// Backing off after a transient error.
    BackingOff {
        /// When the next attempt may start.
        until: Timestamp,
        /// The error that caused the backoff.
        error: TransferError,
    },
    /// The bandwidth timetable pauses transfers.
    Schedule {
        /// When the timetable changes next.
        until: Timestamp,
    },
    /// The per-host limit of concurrent transfers is reached.
    HostLimit,
    /// The session's limit of concurrent transfers is reached.
    SessionLimit,
    /// Suspended by the user.
    SuspendedByUser,
}

impl WaitReason {
    /// When waiting ends by itself, for reasons that end at a known time.
    pub fn wake_at(&self) -> Option<Timestamp> {
        match self {
            WaitReason::NotBefore(t) | WaitReason::BackingOff { until: t, .. } => Some(*t),
            // `MAX`: paused until someone changes the rate.
            WaitReason::Schedule { until: t } => (*t != Timestamp::MAX).then_some(*t),
            _ => None,
        }
    }

    /// Whether admission decides this reason (as opposed to the user or a backoff).
    pub fn is_policy(&self) -> bool {
        !matches!(
            self,
            WaitReason::BackingOff { .. } | WaitReason::SuspendedByUser
        )
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::NoNetwork => f.write_str("waiting for a network connection"),
            WaitReason::CellularNotAllowed => f.write_str("cellular networks are not allowed"),
            WaitReason::ExpensiveNetwork => {
                f.write_str("waiting for an unmetered network (this one is cellular or expensive)")
            }
            WaitReason::ConstrainedNetwork => {
                f.write_str("waiting for an unconstrained network (low data mode is on)")
            }
            WaitReason::NeedsCharging => f.write_str("waiting for external power"),
            WaitReason::BatteryLow { level, threshold } => {
                write!(f, "battery low ({level}% < {threshold}%) and not charging")
            }
            WaitReason::LowPowerMode => f.write_str("low power mode is on"),
            WaitReason::NotBefore(t) => write!(f, "not before {t}"),
            WaitReason::BackingOff { until, error } => {
                write!(f, "retrying at {until} after: {error}")
            }
            WaitReason::Schedule { until } if *until == Timestamp::MAX => {
                f.write_str("paused: the session's rate limit is zero")
            }
            WaitReason::Schedule { until } => {
                write!(f, "paused by the bandwidth timetable until {until}")
            }
            WaitReason::HostLimit => f.write_str("waiting for a free slot on this host"),
            WaitReason::SessionLimit => f.write_str("waiting for a free transfer slot"),
            WaitReason::SuspendedByUser => f.write_str("paused by the user"),
        }
    }
}

/// A session's admission policy. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Whether cellular networks may be used (default true).
    pub allows_cellular: bool,
    /// Whether expensive networks may be used (default true).
    pub allows_expensive: bool,
    /// Whether constrained (low data mode) networks may be used (default true).
    pub allows_constrained: bool,
    /// Without a network, wait for one (true, the default) or fail at once.
    pub waits_for_connectivity: bool,
    /// Keep retrying, backing off, a host name that does not exist while the
    /// network is up (it may appear once a VPN or a captive portal lets the
    /// resolver through) instead of failing the task at once (false, the
    /// default: a mistyped host fails in seconds, in words). See
    /// [`Policy::judge_failure`].
    #[serde(default)]
    pub retries_missing_hosts: bool,
    /// Concurrent transfers in the session (default 16).
    pub max_concurrent: u32,
    /// Concurrent transfers to one origin (default 8).
    pub max_per_host: u32,
    /// Total bandwidth of the session in bytes/s (default unlimited; 0 pauses).
    pub rate_limit: Option<u64>,
    /// Total bandwidth on a cellular network (default unlimited).
    pub cellular_rate_limit: Option<u64>,
    /// Total bandwidth in low power mode (default 1 MiB/s).
    pub low_power_rate_limit: Option<u64>,
    /// A weekly bandwidth timetable (default none).
    pub timetable: Option<Timetable>,
    /// Below this charge, on battery, discretionary work waits (default 30%).
    pub battery_threshold: u8,
    /// Below this charge, on battery, all but high-priority work waits (default 10%).
    pub battery_floor: u8,
    /// Tasks at or above this priority are high-priority (default 0.75).
    pub high_priority: Priority,
    /// Constraints every task of the session meets on top of its own
    /// (default none): a session that only does background work makes all
    /// its tasks discretionary here.
    #[serde(default)]
    pub constraints: Constraints,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allows_cellular: true,
            allows_expensive: true,
            allows_constrained: true,
            waits_for_connectivity: true,
            retries_missing_hosts: false,
            max_concurrent: 16,
            max_per_host: 8,
            rate_limit: None,
            cellular_rate_limit: None,
            low_power_rate_limit: Some(1 << 20),
            timetable: None,
            battery_threshold: 30,
            battery_floor: 10,
            high_priority: Priority::HIGH_DEFAULT,
            constraints: Constraints::default(),
        }
    }
}

/// What admission needs to know about a task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demand {
    /// The task's priority.
    pub priority: Priority,
    /// The task's constraints.
    pub constraints: Constraints,
    /// The task's earliest begin time.
    pub earliest_begin: Option<Timestamp>,
    /// The task's own rate limit.
    pub max_rate: Option<u64>,
    /// The origin is this machine: the network path neither helps nor
    /// costs, so network conditions and constraints do not apply.
    pub local: bool,
}

impl From<&TaskSpec> for Demand {
    fn from(spec: &TaskSpec) -> Self {
        Demand {
            priority: spec.priority,
            constraints: spec.constraints,
            earliest_begin: spec.earliest_begin,
            max_rate: spec.max_rate,
            local: spec.url().is_loopback(),
        }
    }
}

/// Transfers already running, not counting the task being judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Running in the session.
    pub running: u32,
    /// Running against the task's origin.
    pub running_on_host: u32,
}

/// Rate limits for a running task, in bytes per second (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// The session-wide limit, shared by all its transfers.
    pub session: Option<u64>,
    /// The task's own limit.
    pub task: Option<u64>,
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.session, self.task) {
            (None, None) => f.write_str("unlimited"),
            (Some(s), None) => write!(f, "session {}/s", format_rate(s)),
            (None, Some(t)) => write!(f, "task {}/s", format_rate(t)),
            (Some(s), Some(t)) => {
                write!(f, "session {}/s, task {}/s", format_rate(s), format_rate(t))
            }
        }
    }
}

/// Admission's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Run, within these limits.
    Run(Throttle),
    /// Wait, for this reason.
    Wait(WaitReason),
    /// Fail now (no network and the session fails fast).
    Fail(TransferError),
}

impl fmt::Display for Verdict {
    /// The verdict in words: `runs (LIMITS)`, `waits: REASON` or `fails:
    /// ERROR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Run(throttle) => write!(f, "runs ({throttle})"),
            Verdict::Wait(reason) => write!(f, "waits: {reason}"),
            Verdict::Fail(error) => write!(f, "fails: {error}"),
        }
    }
}

impl Verdict {
    /// Whether the verdict is `Run`.
    pub fn is_run(&self) -> bool {
        matches!(self, Verdict::Run(_))
    }

    /// Why the task may not run, in words (`None` for `Run`).
    pub fn to_string_reason(&self) -> Option<String> {
        match self {
            Verdict::Run(_) => None,
            Verdict::Wait(r) => Some(r.to_string()),
            Verdict::Fail(e) => Some(e.to_string()),
        }
    }
}

impl Policy {
    /// A failed attempt's error as the session treats it: a host name that
    /// does not exist ([`ErrorKind::NoSuchHost`](crate::ErrorKind::NoSuchHost),
    /// permanent on its own) is retried like any other name that did not
    /// resolve ([`ErrorKind::Dns`](crate::ErrorKind::Dns)) in a session that
    /// [retries missing hosts](Policy::retries_missing_hosts). Every other
    /// error is as it came.
    pub fn judge_failure(&self, error: TransferError) -> TransferError {
        if self.retries_missing_hosts && error.kind() == crate::ErrorKind::NoSuchHost {
            TransferError::new(crate::ErrorKind::Dns, error.detail())
                .with_retry_after(error.retry_after())
        } else {
            error
        }
    }

    /// The session-wide bandwidth under `conditions` at `now`: the smallest of
    /// the total limit, the cellular limit on cellular, the low-power limit in
    /// low power mode, and the timetable's rate.
    pub fn session_bandwidth(&self, conditions: &Conditions, now: Timestamp) -> Bandwidth {
        let mut limit = self.rate_limit;
        let mut tighten = |l: Option<u64>| {
            if let Some(l) = l {
                limit = Some(limit.map_or(l, |x| x.min(l)));
            }
        };
        if conditions.network.kind == crate::conditions::NetworkKind::Cellular {
            tighten(self.cellular_rate_limit);
        }
        if conditions.power.low_power {
            tighten(self.low_power_rate_limit);
        }
        if let Some(t) = &self.timetable {
            match t.at(now).0 {
                Bandwidth::Paused => return Bandwidth::Paused,
                b => tighten(b.bytes_per_sec()),
            }
        }
        match limit {
            None => Bandwidth::Unlimited,
            Some(0) => Bandwidth::Paused,
            Some(n) => Bandwidth::Limited(n),
        }
    }

    /// What the network path says of a task with constraints `c`, when it
    /// says no.
    fn network_verdict(&self, net: &NetworkPath, c: Constraints) -> Option<Verdict> {
        if !net.is_connected() {
            return Some(if self.waits_for_connectivity {
                Verdict::Wait(WaitReason::NoNetwork)
            } else {
                Verdict::Fail(TransferError::new(
                    crate::ErrorKind::NoConnectivity,
                    "the session does not wait for connectivity",
                ))
            });
        }
        if net.kind == crate::conditions::NetworkKind::Cellular && !self.allows_cellular {
            return Some(Verdict::Wait(WaitReason::CellularNotAllowed));
        }
        if (net.expensive && !self.allows_expensive)
            || (net.is_metered() && (c.requires_unmetered || c.discretionary))
        {
            return Some(Verdict::Wait(WaitReason::ExpensiveNetwork));
        }
        if net.constrained && (!self.allows_constrained || c.discretionary) {
            return Some(Verdict::Wait(WaitReason::ConstrainedNetwork));
        }
        None
    }

    /// Decides whether a task may run now. Checks, in order: earliest begin,
    /// network (unless the origin is local), the task's and the session's
    /// network constraints, power, the timetable, then the session and host
    /// limits.
    pub fn admit(
        &self,
        task: &Demand,
        conditions: &Conditions,
        load: Load,
        now: Timestamp,
    ) -> Verdict {
        if let Some(t) = task.earliest_begin
            && t > now
        {
            return Verdict::Wait(WaitReason::NotBefore(t));
        }
        let c = task.constraints.and(self.constraints);
        if !task.local
            && let Some(wait) = self.network_verdict(&conditions.network, c)
        {
            return wait;
        }
        let power = &conditions.power;
        if c.requires_charging && !power.external_power {
            return Verdict::Wait(WaitReason::NeedsCharging);
        }
        if let Some(level) = power.battery
            && !power.external_power
        {
            if level < self.battery_floor && task.priority < self.high_priority {
                return Verdict::Wait(WaitReason::BatteryLow {
                    level,
                    threshold: self.battery_floor,
                });
            }
            if level < self.battery_threshold && c.discretionary {
                return Verdict::Wait(WaitReason::BatteryLow {
                    level,
                    threshold: self.battery_threshold,
                });
            }
        }
        if power.low_power && c.discretionary {
            return Verdict::Wait(WaitReason::LowPowerMode);
        }
        let session = match self.session_bandwidth(conditions, now) {
            Bandwidth::Paused => {
                let until = self
                    .timetable
                    .as_ref()
                    .filter(|t| t.at(now).0 == Bandwidth::Paused)
                    .map_or(Timestamp::MAX, |t| t.at(now).1);
                return Verdict::Wait(WaitReason::Schedule { until });
            }
            b => b.bytes_per_sec(),
        };
        if load.running >= self.max_concurrent {
            return Verdict::Wait(WaitReason::SessionLimit);
        }
        if load.running_on_host >= self.max_per_host {
            return Verdict::Wait(WaitReason::HostLimit);
        }
        Verdict::Run(Throttle {
            session,
            task: task.max_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_read_as_words() {
        assert_eq!(
            Verdict::Run(Throttle::default()).to_string(),
            "runs (unlimited)"
        );
        let limited = Throttle {
            session: Some(2048),
            task: None,
        };
        assert_eq!(Verdict::Run(limited).to_string(), "runs (session 2K/s)");
        assert_eq!(
            Verdict::Wait(WaitReason::NeedsCharging).to_string(),
            "waits: waiting for external power"
        );
        let e = TransferError::new(crate::ErrorKind::NoConnectivity, "no network");
        assert_eq!(Verdict::Fail(e.clone()).to_string(), format!("fails: {e}"));
    }

    #[test]
    fn a_name_that_does_not_exist_is_retried_only_by_a_session_that_asks() {
        use crate::{ErrorClass, ErrorKind};
        let missing = TransferError::new(ErrorKind::NoSuchHost, "cannot resolve a.invalid");
        let fails = Policy::default();
        assert!(!fails.retries_missing_hosts, "the documented default");
        assert_eq!(fails.judge_failure(missing.clone()), missing);
        let waits = Policy {
            retries_missing_hosts: true,
            ..Policy::default()
        };
        let judged = waits.judge_failure(missing.clone());
        assert_eq!(judged.kind(), ErrorKind::Dns);
        assert_eq!(judged.class(), ErrorClass::Transient);
        assert_eq!(judged.detail(), "cannot resolve a.invalid");
        let lost = TransferError::new(ErrorKind::ConnectionLost, "cut");
        assert_eq!(waits.judge_failure(lost.clone()), lost);
    }
}
