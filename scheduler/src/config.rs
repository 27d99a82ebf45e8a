//! A session's settings ([`SessionConfig`]), with every default in one
//! place.

use std::time::Duration;

use transfer_core::{Policy, RedirectPolicy, RetryPolicy, Timeouts};

/// A session's settings. Every default is here.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Admission policy: networks, power, limits, bandwidth.
    pub policy: Policy,
    /// Retries, backoff and the resource deadline (default 7 days).
    pub retry: RetryPolicy,
    /// Per-request time limits; `idle` is the session's idle timeout (60 s).
    pub timeouts: Timeouts,
    /// Redirect rules.
    pub redirects: RedirectPolicy,
    /// Checkpoint at least this often while data flows (default 1 s).
    pub checkpoint_interval: Duration,
    /// …and at least every this many bytes (default 32 MiB).
    pub checkpoint_bytes: u64,
    /// Progress reports at most this often (default 250 ms).
    pub progress_interval: Duration,
    /// Accept weak ETags as validators for resuming (default false). A weak
    /// tag says two versions are equivalent, not identical; without this, a
    /// partial that has only a weak tag starts again from zero.
    pub allow_weak_etags: bool,
    /// Largest body any task may download (default none).
    pub max_body: Option<u64>,
    /// How much of the server's answer to an upload is kept with its
    /// completion (default 1 MiB; the rest is read and dropped).
    pub upload_response_limit: usize,
    /// Largest append of a resumable upload (default 64 MiB): a server that
    /// keeps only whole appends loses at most this much to an interruption.
    pub upload_chunk_bytes: u64,
    /// Which HTTP version to ask for when a task does not say (default:
    /// whatever the transport and the server agree on).
    pub protocol: transfer_core::ProtocolPreference,
    /// A download whose body comes slower than this many bytes per second,
    /// on average over a window this long, is stalled: the attempt fails
    /// with a low-speed timeout and is retried as a transient error
    /// (curl's `--speed-limit` and `--speed-time`; default under 1024 B/s
    /// for 60 s; `None`: never). Time spent in the session's or task's own
    /// rate limit does not count.
    pub low_speed: Option<(u64, Duration)>,
}

/// The HTTP version a task asks for: its own choice, else the session's.
pub(crate) fn protocol_for(
    spec: &transfer_core::TaskSpec,
    config: &SessionConfig,
) -> transfer_core::ProtocolPreference {
    match spec.protocol {
        transfer_core::ProtocolPreference::Auto => config.protocol,
        asked => asked,
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            policy: Policy::default(),
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            redirects: RedirectPolicy::default(),
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_bytes: 32 << 20,
            progress_interval: Duration::from_millis(250),
            allow_weak_etags: false,
            max_body: None,
            upload_response_limit: 1 << 20,
            upload_chunk_bytes: 64 << 20,
            protocol: transfer_core::ProtocolPreference::Auto,
            low_speed: Some((1024, Duration::from_secs(60))),
        }
    }
}
