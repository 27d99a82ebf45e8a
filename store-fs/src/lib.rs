//! # store-fs
//!
//! Ferry's embedded persistence, the default for one machine:
//!
//! - [`FsTaskStore`]: task records and the completion outbox in one redb
//!   database (pure Rust, ACID, checksummed) per store directory. Concurrent
//!   commits are grouped into one durable write; each caller returns only once
//!   its own batch is durable. A damaged database is refused at open in
//!   words that name it, never with a panic; an entry that does not decode
//!   is set aside, not fatal to the rest; [`FsTaskStore::repair`] salvages
//!   what still reads into a fresh database. Every state file is owner-only.
//! - [`FsPayloadStore`]: partial payloads as owner-only files beside their
//!   destinations, cut back to the durable offset on open, synced at
//!   checkpoints and renamed into place with the directory synced. The move
//!   never replaces what is at the destination (a file the task did not
//!   write, a symlink, a directory) unless the task may overwrite. Nothing
//!   is written outside the root directory it was given.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use store_fs::{FsPayloadStore, FsTaskStore};
//! use transfer_core::{Destination, PayloadStore, ResumeData, SessionId, TaskId, TaskStore};
//!
//! let dir = tempfile::tempdir()?;
//! let tasks = FsTaskStore::open(dir.path().join("state"))?;
//! let session = SessionId::new("com.example.sync")?;
//! assert!(tasks.load(&session).await?.records.is_empty());
//!
//! let payloads = FsPayloadStore::new(dir.path().join("downloads"))?;
//! let dest = Destination::Path("file.bin".into());
//! let mut partial = payloads.open(&session, TaskId::from_u64(1), &dest, &ResumeData::default()).await?;
//! partial.write(bytes::Bytes::from_static(b"hello")).await?;
//! let (durable, _location) = partial.sync().await?;
//! assert_eq!(durable, 5);
//! partial.commit(false).await?;
//! assert_eq!(std::fs::read(dir.path().join("downloads/file.bin"))?, b"hello");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod damaged;
mod final_move;
mod owner_only;
mod payload;
mod repair;
mod tasks;

pub use payload::{FsPartial, FsPayloadStore};
pub use repair::{Lost, RepairReport};
pub use tasks::{DATABASE_FILE, FsTaskStore};
