//! # transfer-core
//!
//! Ferry's model of background transfers, with no IO and no runtime: what
//! `quinn-proto` is to `quinn`, this crate is to Ferry's scheduler.
//!
//! - [`TaskSpec`]: what a task does (download to a path or object key, upload
//!   a file), validated when built: a bad URL is refused with a [`SpecError`].
//! - [`apply`]: the task state machine, `(state, event, now) -> (state, effects)`.
//! - [`Policy::admit`]: may a task run under these [`Conditions`], and how
//!   fast; otherwise a [`WaitReason`] in plain words.
//! - [`ResumeData`] and [`judge_response`]: resuming downloads without ever
//!   splicing two representations.
//! - [`TransferError`] and [`RetryPolicy`]: classified errors, backoff with
//!   injected jitter, `Retry-After` honoured.
//! - The plug-in traits: [`Transport`], [`TaskStore`], [`PayloadStore`],
//!   [`ConditionSource`] and [`Delegate`].
//! - What every transport does alike, whatever the HTTP version:
//!   [`redirect::follow`], the one redirect loop, and the request-header
//!   rules in [`headers`].
//!
//! Time is always an argument ([`Timestamp`]), so every function here is
//! deterministic and property-tested.
//!
//! ## Example: one download's life, driven by hand
//!
//! ```
//! use transfer_core::*;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = TaskSpec::download("https://example.com/big.iso", Destination::Path("big.iso".into()))
//!     .priority(0.8)
//!     .expected_size(1000)
//!     .build()?;
//! let now = Timestamp::from_millis(1_700_000_000_000);
//! let state = TaskState::new(RetryPolicy::default(), 42);
//!
//! // resume: the task is queued
//! let (state, _) = apply(&state, Event::Resume, now)?;
//! assert_eq!(state.phase, Phase::Queued);
//!
//! // admission on a metered network with a session that refuses expensive networks
//! let policy = Policy { allows_expensive: false, ..Policy::default() };
//! let cellular = Conditions { network: NetworkPath::CELLULAR, power: Power::on_battery(80) };
//! let verdict = policy.admit(&Demand::from(&spec), &cellular, Load::default(), now);
//! assert_eq!(verdict.to_string_reason().as_deref(),
//!            Some("waiting for an unmetered network (this one is cellular or expensive)"));
//! let (state, _) = apply(&state, Event::Admission(verdict), now)?;
//!
//! // Wi-Fi arrives: the task runs from byte 0
//! let wifi = Conditions { network: NetworkPath::WIFI, ..cellular };
//! let verdict = policy.admit(&Demand::from(&spec), &wifi, Load::default(), now);
//! let (state, effects) = apply(&state, Event::Admission(verdict), now)?;
//! assert!(effects.iter().any(|e| matches!(e, Effect::Start { attempt: 1, offset: 0, .. })));
//!
//! // the runner reports; the connection drops after a checkpoint at 600 bytes
//! let (state, _) = apply(&state, Event::Responded { attempt: 1, validator: None, total: Some(1000) }, now)?;
//! let (state, _) = apply(&state, Event::Progress { attempt: 1, received: 700 }, now)?;
//! let (state, _) = apply(&state, Event::Checkpoint { attempt: 1, durable: 600, partial: None }, now)?;
//! let lost = TransferError::new(ErrorKind::ConnectionLost, "reset by peer");
//! let (state, effects) = apply(&state, Event::AttemptFailed { attempt: 1, error: lost }, now)?;
//! let Phase::Waiting(WaitReason::BackingOff { until, .. }) = state.phase.clone() else { panic!() };
//! assert!(effects.contains(&Effect::SetTimer(until)));
//!
//! // the timer fires, admission runs it again: attempt 2 resumes at the durable offset
//! let (state, _) = apply(&state, Event::Timer, until)?;
//! let run = Verdict::Run(Throttle::default());
//! let (state, effects) = apply(&state, Event::Admission(run), until)?;
//! assert!(effects.iter().any(|e| matches!(e, Effect::Start { attempt: 2, offset: 600, .. })));
//! let (state, effects) = apply(&state, Event::Finished { attempt: 2, bytes: 1000 }, until)?;
//! assert_eq!(state.phase, Phase::Completed);
//! assert!(effects.contains(&Effect::Complete(Outcome::Completed { bytes: 1000 })));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod admission;
mod conditions;
mod delegate;
mod error;
pub mod headers;
mod id;
mod machine;
mod record;
pub mod redirect;
mod resume;
mod retry;
mod schedule;
mod serde_http;
mod spec;
mod store;
mod time;
mod transport;
mod units;

pub use admission::{Demand, Load, Policy, Throttle, Verdict, WaitReason};
pub use conditions::{ConditionSource, Conditions, NetworkKind, NetworkPath, Power};
pub use delegate::{BeginDecision, Delegate, Direction, NoDelegate, Progress};
pub use error::{ECHO_LIMIT, ErrorClass, ErrorKind, TimeoutKind, TlsFailure, TransferError, echo};
pub use id::{EventId, SessionId, TaskId, random_u64};
pub use machine::{
    Effect, Event, InvalidTransition, Notification, Outcome, Phase, TaskState, Transition, apply,
};
pub use record::{Completion, Request, ResponseSummary, TaskRecord, merge_saved};
pub use resume::{
    AttemptRecord, ContentRange, Continuation, DecodeError, PartRecord, PartialLocation, RangePlan,
    RestartReason, ResumableProtocol, ResumeData, Validator, judge_response, plan_range,
};
pub use retry::{RandomSource, RetryPolicy, SplitMix64, parse_retry_after};
pub use schedule::{Bandwidth, ScheduleError, Timetable};
pub use spec::{
    Constraints, Destination, Priority, RequestSpec, Sha256Digest, SpecError, TaskKind, TaskSpec,
    TaskSpecBuilder, UploadBody, Url, uri_port,
};
pub use store::{
    Batch, Claim, Claims, EntryKind, MemoryTaskStore, Partial, PayloadStore, Quarantined, Snapshot,
    StoreError, StoreErrorKind, TaskStore, is_out_of_descriptors,
};
pub use time::{Timestamp, since_boot};
pub use transport::{
    BodyPart, ByteCount, FileStamp, Pacer, Protocol, ProtocolPreference, RedirectDecision,
    RedirectHook, RedirectPolicy, RequestBody, RequestMetrics, RequestOptions, ResponseBody,
    SentProgress, Timeouts, Transport, TransportRequest, TransportResponse,
};
pub use units::{SizeError, format_duration, format_rate, format_size, parse_size};
