//! # scheduler
//!
//! Ferry's session runtime. A [`Session`] has a stable identifier, one task
//! store, one payload store, transports, a condition source and a delegate.
//! Building it **attaches** to what the store holds: attempts interrupted by a
//! crash are queued again with their resume data, and completions never
//! acknowledged are delivered again.
//!
//! One engine owns every task. Its decisions live in a runtime-free core
//! (queue order, slots, per-host counts, group commits, idle, timers): it
//! applies events with [`transfer_core::apply`] and hands out what to do —
//! commit this batch, start a runner, abort at the next chunk, notify, set a
//! timer, deliver a completion once durable. A thin async driver feeds it
//! and carries those out; runners report back by message.
//! A runner asks from the durable offset (`Range` + `If-Range`) when the
//! partial has a strong validator to resume against, and from zero when it
//! has none (see [`transfer_core::plan_range`]), judges the
//! answer (206 or 200, `Content-Range`, validator), streams through the
//! throttle into the payload store, and checkpoints — data made durable,
//! then the offset recorded — every second or 32 MiB. At the end it checks
//! the length and the SHA-256 (expected, or RFC 9530 `Repr-Digest` /
//! `Content-Digest`), commits atomically, and the completion is recorded in
//! the outbox before the delegate hears of it.
//!
//! Several processes, on one machine or many, can run one session together
//! ([`SessionBuilder::shared`], with a store they all reach, such as
//! store-s3's, and its `S3Claims`): each follows the others' changes in the
//! store, and runs a task only while it holds the task's claim, which the
//! others take over once it has gone unrenewed for its time to live.
//!
//! ```no_run
//! use std::sync::Arc;
//! use scheduler::{Session, SessionConfig};
//! use store_fs::{FsPayloadStore, FsTaskStore};
//! use transport_http::{HttpConfig, HttpTransport};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = Session::builder("com.example.sync")?
//!     .store(Arc::new(FsTaskStore::open("state")?))
//!     .payloads(Arc::new(FsPayloadStore::new("downloads")?))
//!     .transport(Arc::new(HttpTransport::new(HttpConfig::default())?))
//!     .config(SessionConfig::default())
//!     .build()
//!     .await?;
//! let task = session
//!     .download("https://example.com/big.iso")?
//!     .to("big.iso")
//!     .enqueue()
//!     .await?;
//! let outcome = task.wait().await?;
//! println!("{outcome:?}");
//! # Ok(()) }

#![warn(missing_docs)]

// Where each job lives: `session.rs` (the running session and its tasks),
// `session_builder.rs` (attaching and starting), `task_builder.rs`
// (describing a download or upload), `config.rs`, `error.rs`, `event.rs`;
// `engine/` (the core and its driver), `runners/` (one attempt each),
// `command.rs` (what reaches the engine, by sender), `keys.rs` (the
// idempotency-key rule), `offline.rs` (changing state with no session
// running), `conditions.rs`, `throttle.rs`, `clock.rs`.

mod clock;
mod command;
pub mod conditions;
mod config;
mod engine;
mod error;
mod event;
mod keys;
mod offline;
mod runners;
mod session;
mod session_builder;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod task_builder;
pub mod throttle;
mod upload_source;

pub use clock::Clock;
pub use conditions::{
    LinuxConditions, LinuxConditionsConfig, NetworkManagerBus, ScriptedConditions,
};
pub use config::SessionConfig;
pub(crate) use config::protocol_for;
pub use error::SessionError;
pub use event::SessionEvent;
pub use keys::{KeyRule, holder as key_holder, rule as key_rule};
pub use offline::{Offline, UserChange};
pub use session::{Session, TaskHandle};
pub use session_builder::SessionBuilder;
pub use task_builder::{DownloadBuilder, FromFile, TaskBuilder, ToPath, UploadBuilder};
pub use upload_source::stamp_source;
