//! The scheduling engine: one owner of every task record of a session,
//! in the shape of quinn-proto and quinn: a runtime-free core that decides,
//! and a thin async driver that does.
//!
//! The core (no tokio, no IO, no `.await`):
//! - `core.rs`: the state (records, queue, slots, per-host counts, timers,
//!   idle) and the pass that admits queued tasks;
//! - `handlers.rs`: what the core is told (requests, reports, news, time);
//! - `commit.rs`, `pending.rs`: group commit, and what waits for it;
//! - `effect.rs`: the state machine's effects, once committed;
//! - `squeeze.rs`: fewer transfers at once while file descriptors are short;
//! - `follow.rs`, `claims.rs`: sessions that several processes share;
//! - `action.rs`: what the core hands out; `record.rs`, `ids.rs`: helpers.
//!
//! Around it:
//! - `driver.rs`: feeds the core, writes its commits, carries out its
//!   actions (runners, discards, deliveries, replies);
//! - `leases.rs`: claims held and the store followed, in the background;
//! - `delivery.rs`: events and completions to the delegate and the stream,
//!   and their acknowledgement.

mod action;
mod claims;
mod commit;
pub(crate) mod core;
mod delivery;
mod driver;
mod effect;
mod follow;
mod handlers;
mod ids;
mod leases;
mod pending;
mod record;
mod squeeze;
#[cfg(test)]
mod tests;

pub(crate) use self::core::{Core, IdleLevel, new_record};
pub(crate) use delivery::Deliverer;
pub(crate) use driver::{Driver, Parts, SharedIo};
pub(crate) use leases::follow;
