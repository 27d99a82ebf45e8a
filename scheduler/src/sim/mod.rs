//! A seeded simulation of a session: the engine's core, driven on
//! simulated time against a model origin, a model store and model runners,
//! with faults chosen by the seed; invariants checked after every step.
//!
//! One seed decides everything (which tasks, which faults, which crashes,
//! in which order), so a failing seed replays exactly: the trace digest
//! printed with each result shows it. `cargo xtask sim --seeds N` runs
//! many; `--seed S` replays one. Each seed runs twice: a session of one
//! process, then a shared session of two.
//!
//! What is modelled:
//! - an origin whose files change, with or without a validator (an ETag
//!   per version), honouring `If-Range` like a real server;
//! - runners that ask from the durable offset, judge the answer with the
//!   same [`transfer_core::judge_response`] the real runner uses, write
//!   bytes tagged with the version they came from, checkpoint, get cut,
//!   see 503s, and commit the file;
//! - a store whose commits fail, and a process that crashes: everything
//!   not durable is dropped and a new core attaches to what is;
//! - users who enqueue clashing names, pause, resume and cancel;
//! - in a shared session, two processes on one store (a log read back in
//!   order, keeping nothing written under an older claim epoch than it
//!   has, as the S3 store does) with claims that live a time to live:
//!   renewed at a third of it while the process runs, taken over by the
//!   other once silent for all of it. A process is paused (stopped, or its
//!   machine asleep) for up to three times the time to live and wakes with
//!   its renewals, its commits and its runners in any order.
//!
//! The invariants (DESIGN §8): a delivered completion's record and outbox
//! entry are durable; a completed file is byte-exact with one version of
//! its source; no two unfinished tasks own one destination; nothing starts
//! before its record is durable; a completion acknowledged durably is not
//! delivered again; every task ends once faults stop; no partial remains
//! of a task that ended. In a shared session also: no task runs in two
//! places at once (no runner writes or puts a file in place while another
//! process holds a newer claim), and a task ends with one completion (one
//! event id, whichever process delivers it).

mod check;
mod shared;
mod world;

use world::World;

/// What one seed's run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Steps taken.
    pub steps: u64,
    /// Tasks enqueued (accepted).
    pub tasks: u64,
    /// Process crashes (everything not durable dropped).
    pub crashes: u64,
    /// Faults injected: failed commits, cut bodies, 503s, changed files,
    /// paused processes.
    pub faults: u64,
    /// Completions delivered.
    pub completions: u64,
    /// Claims taken over from a process that fell silent (shared sessions).
    pub takeovers: u64,
    /// A digest of the trace: the same seed gives the same digest.
    pub digest: u64,
}

impl Report {
    /// Adds `other`'s counts to these (the digests are chained).
    pub fn add(&mut self, other: &Report) {
        self.steps += other.steps;
        self.tasks += other.tasks;
        self.crashes += other.crashes;
        self.faults += other.faults;
        self.completions += other.completions;
        self.takeovers += other.takeovers;
        self.digest = (self.digest ^ other.digest).wrapping_mul(0x100_0000_01b3);
    }
}

/// An invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed that found it.
    pub seed: u64,
    /// The step at which it was seen.
    pub step: u64,
    /// What broke, in words.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} step {}: {}", self.seed, self.step, self.what)
    }
}

/// Runs one seed: a session of one process, then a shared session of two,
/// each for `steps` random steps (faults on) and then until every task
/// ends (faults off), checking the invariants throughout.
pub fn run(seed: u64, steps: u64) -> Result<Report, Violation> {
    let mut total = Report::default();
    for shared in [false, true] {
        let mut w = World::new(seed, shared);
        for _ in 0..steps {
            w.step(true)?;
        }
        w.check_all_end()?;
        w.report.steps = w.step;
        w.report.digest = w.trace;
        total.add(&w.report);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_exactly() {
        let a = run(7, 400).unwrap();
        let b = run(7, 400).unwrap();
        assert_eq!(a, b);
        assert_ne!(run(8, 400).unwrap().digest, a.digest);
    }

    #[test]
    fn forty_seeds_hold_every_invariant() {
        for seed in 0..40 {
            if let Err(v) = run(seed, 400) {
                panic!("{v}");
            }
        }
    }

    #[test]
    fn shared_sessions_see_takeovers() {
        let mut total = Report::default();
        for seed in 0..20 {
            total.add(&run(seed, 400).unwrap());
        }
        assert!(total.takeovers > 0, "{total:?}");
    }
}
