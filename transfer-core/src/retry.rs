//! Retry policy and backoff: exponential with jitter, `Retry-After` honoured,
//! bounded by a retry limit and a resource deadline.
//!
//! Randomness is injected ([`RandomSource`]), so the calculation is a pure
//! function that tests can pin down.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// When and how often a task retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries allowed after consecutive transient failures that made no
    /// durable progress; the failure after the last retry fails the task.
    /// A failure after an attempt that advanced the durable offset starts the
    /// count again, so a long transfer over a flaky link is not failed for
    /// failures it recovered from.
    pub retry_limit: u32,
    /// The first backoff delay.
    pub base_delay: Duration,
    /// The largest backoff delay (before `Retry-After`).
    pub max_delay: Duration,
    /// How long a task may take from its first resume before it fails
    /// ([`ErrorKind::DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded)).
    pub resource_timeout: Duration,
    /// Retries start only within this long of the task's first resume
    /// (curl's `--retry-max-time`); a transient failure whose retry would
    /// start later fails the task. `None`: no such window.
    #[serde(default)]
    pub retry_window: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_limit: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            resource_timeout: Duration::from_secs(7 * 24 * 3600),
            retry_window: None,
        }
    }
}

impl RetryPolicy {
    /// The delay before the retry that follows the `failures`-th consecutive
    /// failure (1-based): `base · 2^(failures−1)` capped at `max_delay`, with
    /// "equal jitter" (uniform in its upper half), and never shorter than the
    /// server's `Retry-After`.
    pub fn backoff(
        &self,
        failures: u32,
        retry_after: Option<Duration>,
        random: &mut dyn RandomSource,
    ) -> Duration {
        let exp = failures.saturating_sub(1).min(32);
        let full = self
            .base_delay
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let half = full / 2;
        let span = u64::try_from((full - half).as_millis()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            random.next_u64() % (span + 1)
        };
        let delay = half + Duration::from_millis(jitter);
        retry_after.map_or(delay, |ra| delay.max(ra))
    }
}

/// A source of random 64-bit numbers, injected where the core needs randomness.
pub trait RandomSource {
    /// The next random number.
    fn next_u64(&mut self) -> u64;
}

/// SplitMix64: a tiny, fast, deterministic generator (Steele, Lea, Flood 2014).
/// Not cryptographic; used for jitter and for deriving per-attempt samples.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP-date (a date in the
/// past means zero). Values that are neither give `None`.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Saturate absurd values instead of failing to parse them.
        return Some(Duration::from_secs(
            v.parse::<u64>().unwrap_or(u64::MAX / 1000),
        ));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(Timestamp::from_system_time(at).saturating_since(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);
    impl RandomSource for Fixed {
        fn next_u64(&mut self) -> u64 {
            self.0
        }
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_bounds_and_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let mut lo = Fixed(0);
        let mut hi = Fixed(u64::MAX);
        assert_eq!(p.backoff(1, None, &mut lo), Duration::from_millis(500));
        assert_eq!(p.backoff(3, None, &mut lo), Duration::from_secs(2));
        assert!(p.backoff(3, None, &mut hi) <= Duration::from_secs(4));
        assert_eq!(p.backoff(30, None, &mut lo), Duration::from_secs(30));
        assert!(p.backoff(u32::MAX, None, &mut hi) <= Duration::from_secs(60));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let mut r = SplitMix64::new(1);
        assert!(p.backoff(1, Some(Duration::from_secs(120)), &mut r) >= Duration::from_secs(120));
    }

    #[test]
    fn parses_retry_after_forms() {
        let now = Timestamp::from_millis(1_445_412_480_000); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert!(parse_retry_after("99999999999999999999999", now).is_some());
    }
}
