//! A seeded simulation of a session: the engine's core, driven on
//! simulated time against a model origin, a model store and model runners,
//! with faults chosen by the seed; invariants checked after every step.
//!
//! One seed decides everything (which tasks, which faults, which crashes,
//! in which order), so a failing seed replays exactly: the trace digest
//! printed with each result shows it. `cargo xtask sim --seeds N` runs
//! many; `--seed S` replays one.
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
//! - users who enqueue clashing names, pause, resume and cancel.
//!
//! The invariants (DESIGN §8): a delivered completion's record and outbox
//! entry are durable; a completed file is byte-exact with one version of
//! its source; no two unfinished tasks own one destination; nothing starts
//! before its record is durable; a completion acknowledged durably is not
//! delivered again; every task ends once faults stop; no partial remains
//! of a task that ended.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use transfer_core::{
    Batch, Completion, Conditions, Continuation, Destination, ErrorKind, Event, EventId, Outcome,
    Phase, RandomSource, RangePlan, SplitMix64, StoreError, StoreErrorKind, TaskId, TaskKind,
    TaskRecord, TaskSpec, Timestamp, TransferError, judge_response, plan_range,
};

use crate::SessionConfig;
use crate::engine::Core;
use crate::engine::core::{Action, Delivery};

/// What one seed's run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Steps taken.
    pub steps: u64,
    /// Tasks enqueued (accepted).
    pub tasks: u64,
    /// Process crashes (everything not durable dropped).
    pub crashes: u64,
    /// Faults injected: failed commits, cut bodies, 503s, changed files.
    pub faults: u64,
    /// Completions delivered.
    pub completions: u64,
    /// A digest of the trace: the same seed gives the same digest.
    pub digest: u64,
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

/// A file at the origin.
struct Source {
    len: u64,
    version: u32,
    /// It sends an ETag (one per version).
    validated: bool,
}

/// An attempt in progress: the bytes of the partial, each run tagged with
/// the version it came from.
struct Runner {
    attempt: u32,
    /// The version its response carries (one response, one version).
    version: u32,
    written: Vec<(u64, u64, u32)>,
    len: u64,
    url: usize,
}

/// What the store holds durably.
#[derive(Default)]
struct Disk {
    records: BTreeMap<TaskId, TaskRecord>,
    outbox: BTreeMap<EventId, Completion>,
}

impl Disk {
    fn apply(&mut self, b: &Batch) {
        for r in &b.save {
            self.records.insert(r.id, r.clone());
        }
        for id in &b.remove {
            self.records.remove(id);
        }
        for c in &b.complete {
            self.outbox.insert(c.event, c.clone());
        }
        for e in &b.acknowledge {
            self.outbox.remove(e);
        }
    }
}

const URLS: usize = 6;
const NAMES: usize = 4;

struct World {
    seed: u64,
    rng: SplitMix64,
    now: Timestamp,
    core: Core<u64>,
    disk: Disk,
    sources: Vec<Source>,
    runners: HashMap<TaskId, Runner>,
    /// Durable bytes of each task's partial (what survives a crash).
    partials: HashMap<TaskId, Vec<(u64, u64, u32)>>,
    /// Files moved into place by finished attempts.
    files: HashMap<TaskId, Vec<(u64, u64, u32)>>,
    acked: HashSet<EventId>,
    /// Tasks whose record has been durable at least once.
    recorded: HashSet<TaskId>,
    fail_commits: u32,
    report: Report,
    trace: u64,
    step: u64,
}

fn config() -> SessionConfig {
    let mut c = SessionConfig::default();
    c.policy.max_concurrent = 3;
    c.policy.max_per_host = 2;
    c.retry.retry_limit = 50;
    c.retry.base_delay = Duration::from_millis(50);
    c.retry.max_delay = Duration::from_secs(2);
    c
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = SplitMix64::new(seed);
        let now = Timestamp::from_millis(1_700_000_000_000);
        let sources = (0..URLS)
            .map(|_| Source {
                len: 1 + rng.next_u64() % 400,
                version: 0,
                validated: rng.next_u64().is_multiple_of(2),
            })
            .collect();
        World {
            seed,
            core: Core::new(
                Arc::new(config()),
                Conditions::default(),
                true,
                now,
                None,
                seed,
            ),
            rng,
            now,
            disk: Disk::default(),
            sources,
            runners: HashMap::new(),
            partials: HashMap::new(),
            files: HashMap::new(),
            acked: HashSet::new(),
            recorded: HashSet::new(),
            fail_commits: 0,
            report: Report::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            step: 0,
        }
    }

    fn roll(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn note(&mut self, s: String) {
        if std::env::var_os("FERRY_SIM_TRACE").is_some() {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{:>5} {s}", self.step);
            }
        }
        for b in s.bytes() {
            self.trace = (self.trace ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.seed,
            step: self.step,
            what,
        }
    }

    fn url(i: usize) -> String {
        format!("https://o{}.example/file{i}", i % 3)
    }

    /// One random step, then the engine settles.
    fn step(&mut self, faults: bool) -> Result<(), Violation> {
        self.step += 1;
        let pick = self.roll(100);
        match pick {
            0..=14 => self.enqueue(),
            15..=54 => self.run_some(faults),
            55..=59 if faults => self.change_source(),
            60..=64 => self.user(),
            65..=69 if faults => {
                self.fail_commits += 1 + self.roll(3) as u32;
                self.report.faults += 1;
            }
            70..=72 if faults => self.crash(),
            _ => {
                let ms = 1 + self.roll(500);
                self.advance(ms);
            }
        }
        self.settle()
    }

    fn enqueue(&mut self) {
        let u = self.roll(URLS as u64) as usize;
        let name = self.roll(NAMES as u64);
        let Ok(spec) = TaskSpec::download(
            &World::url(u),
            Destination::Path(format!("name{name}").into()),
        )
        .build() else {
            return;
        };
        match self.core.handle_enqueue(spec, true) {
            Ok(id) => {
                self.report.tasks += 1;
                self.note(format!("enqueue {id} u{u} n{name}"));
                self.core.after_enqueue(id, self.step);
            }
            Err(e) => self.note(format!("refused {e}")),
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now.saturating_add(Duration::from_millis(ms));
        self.core.handle_time(self.now);
        self.core.handle_timers();
    }

    fn change_source(&mut self) {
        let u = self.roll(URLS as u64) as usize;
        self.sources[u].version += 1;
        self.report.faults += 1;
        self.note(format!("change u{u} to v{}", self.sources[u].version));
    }

    fn user(&mut self) {
        let ids: Vec<TaskId> = self.core.records.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        let mut sorted = ids;
        sorted.sort_unstable();
        let id = sorted[self.roll(sorted.len() as u64) as usize];
        let event = match self.roll(3) {
            0 => Event::Suspend,
            1 => Event::Resume,
            _ => Event::Cancel {
                keep_resume_data: false,
            },
        };
        self.note(format!("user {id} {event:?}"));
        self.core.handle_user(id, event);
        self.core.after_commit(self.step);
    }

    /// Moves one running attempt forward: bytes, a checkpoint, a fault or
    /// the end.
    fn run_some(&mut self, faults: bool) {
        let mut ids: Vec<TaskId> = self.runners.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        ids.sort_unstable();
        let id = ids[self.roll(ids.len() as u64) as usize];
        let fault = faults && self.roll(10) == 0;
        let Some(r) = self.runners.get_mut(&id) else {
            return;
        };
        let attempt = r.attempt;
        if fault {
            // Cut, or a 503: what was written before the cut is checkpointed.
            // One fault in eight fails the task for good (the body grew past
            // its cap): its partial must go.
            let durable = r.len;
            self.partials.insert(id, r.written.clone());
            self.report.faults += 1;
            let error = if self.rng.next_u64().is_multiple_of(8) {
                TransferError::new(ErrorKind::SizeLimitExceeded, "over the cap")
            } else {
                TransferError::new(ErrorKind::ConnectionLost, "cut")
            };
            self.note(format!("cut {id} at {durable}: {error}"));
            self.core.handle_report(
                id,
                Event::Checkpoint {
                    attempt,
                    durable,
                    partial: None,
                },
            );
            self.core
                .handle_report(id, Event::AttemptFailed { attempt, error });
            self.runners.remove(&id);
            self.core.handle_runner_done(id, attempt);
            return;
        }
        let total = self.sources[r.url].len;
        let chunk = (1 + self.rng.next_u64() % 150).min(total - r.len);
        if chunk > 0 {
            r.written.push((r.len, r.len + chunk, r.version));
            r.len += chunk;
            let received = r.len;
            self.core
                .handle_report(id, Event::Progress { attempt, received });
            if self.rng.next_u64().is_multiple_of(3) {
                let written = r.written.clone();
                self.partials.insert(id, written);
                self.core.handle_report(
                    id,
                    Event::Checkpoint {
                        attempt,
                        durable: received,
                        partial: None,
                    },
                );
            }
            return;
        }
        // The whole body: committed into place, then the ending reported.
        let written = r.written.clone();
        self.partials.remove(&id);
        self.files.insert(id, written);
        self.note(format!("finish {id}"));
        self.core.handle_report(
            id,
            Event::Finished {
                attempt,
                bytes: total,
            },
        );
        self.runners.remove(&id);
        self.core.handle_runner_done(id, attempt);
    }

    /// A crash: the process and everything not durable is gone; a new one
    /// attaches to the store.
    fn crash(&mut self) {
        self.report.crashes += 1;
        self.note("crash".to_owned());
        self.runners.clear();
        // A new process starts a moment later (ids are counted from its
        // start time).
        self.now = self.now.saturating_add(Duration::from_secs(1));
        self.fail_commits = 0;
        let mut core = Core::new(
            Arc::new(config()),
            Conditions::default(),
            true,
            self.now,
            None,
            self.rng.next_u64(),
        );
        core.attach(self.disk.records.values().cloned().collect());
        core.redeliver(self.disk.outbox.values().cloned().collect());
        self.core = core;
        // Partials keep what was checkpointed (the resume data's offset).
        let durable: HashMap<TaskId, u64> = self
            .disk
            .records
            .values()
            .map(|r| (r.id, r.state.resume.durable_offset))
            .collect();
        self.partials.retain(|id, w| {
            let keep = durable.get(id).copied().unwrap_or(0);
            w.retain_mut(|s| {
                s.1 = s.1.min(keep);
                s.0 < s.1
            });
            keep > 0
        });
    }

    /// The answer a real server gives to the runner's request.
    fn answer(
        &self,
        url: usize,
        offset: u64,
        resume: &transfer_core::ResumeData,
    ) -> (StatusCode, HeaderMap) {
        let s = &self.sources[url];
        let mut h = HeaderMap::new();
        let etag = format!("\"v{}\"", s.version);
        if s.validated
            && let Ok(v) = HeaderValue::from_str(&etag)
        {
            h.insert(header::ETAG, v);
        }
        let if_range_holds = match &resume.validator {
            Some(transfer_core::Validator::StrongETag(t)) => s.validated && *t == etag,
            Some(_) => false,
            None => true, // a bare Range: served whatever changed
        };
        if offset > 0 && offset < s.len && if_range_holds {
            let range = format!("bytes {offset}-{}/{}", s.len - 1, s.len);
            if let Ok(v) = HeaderValue::from_str(&range) {
                h.insert(header::CONTENT_RANGE, v);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(s.len - offset));
            (StatusCode::PARTIAL_CONTENT, h)
        } else {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(s.len));
            (StatusCode::OK, h)
        }
    }

    /// A runner starts: it asks from the durable offset and judges the
    /// answer as the real one does.
    fn start(&mut self, s: &crate::engine::core::Start) -> Result<(), Violation> {
        let id = s.record.id;
        if !self.recorded.contains(&id) {
            return Err(self.violation(format!("{id} started before its record was durable")));
        }
        let url = (0..URLS)
            .find(|u| World::url(*u) == s.record.spec.url().to_string())
            .unwrap_or(0);
        let resume = &s.record.state.resume;
        let mut written = self.partials.get(&id).cloned().unwrap_or_default();
        // The payload store opens the partial at the durable offset, or
        // from zero when the partial is not there (or shorter).
        let held = written.last().map_or(0, |w| w.1);
        let offset = if held >= resume.durable_offset {
            resume.durable_offset
        } else {
            0
        };
        written.retain_mut(|w| {
            w.1 = w.1.min(offset);
            w.0 < w.1
        });
        let attempt = s.attempt;
        let mut offset = offset;
        // As the runner: bytes no validator vouches for are not continued.
        if let RangePlan::Restart { reason } = plan_range(resume, offset, false) {
            self.core
                .handle_report(id, Event::Restarted { attempt, reason });
            written.clear();
            offset = 0;
        }
        let (status, headers) = self.answer(url, offset, resume);
        let judged = judge_response(resume, offset, status, &headers, false, self.now);
        let (len, validator, total) = match judged {
            Ok(Continuation::Append {
                total, validator, ..
            }) => (offset, validator, total),
            Ok(Continuation::RestartWithBody {
                reason,
                total,
                validator,
            }) => {
                self.core
                    .handle_report(id, Event::Restarted { attempt, reason });
                written.clear();
                (0, validator, total)
            }
            Ok(Continuation::Rerequest { reason }) => {
                self.core
                    .handle_report(id, Event::Restarted { attempt, reason });
                written.clear();
                let fresh = transfer_core::ResumeData::default();
                let (status, headers) = self.answer(url, 0, &fresh);
                let Ok(Continuation::Append {
                    total, validator, ..
                }) = judge_response(&fresh, 0, status, &headers, false, self.now)
                else {
                    return Ok(());
                };
                (0, validator, total)
            }
            Ok(Continuation::AlreadyComplete { .. }) | Err(_) => {
                self.core.handle_report(
                    id,
                    Event::AttemptFailed {
                        attempt,
                        error: TransferError::new(ErrorKind::Protocol, "odd answer"),
                    },
                );
                self.core.handle_runner_done(id, attempt);
                return Ok(());
            }
        };
        self.core.handle_report(
            id,
            Event::Responded {
                attempt,
                validator,
                total,
            },
        );
        self.note(format!(
            "start {id} a{attempt} at {len} (durable {offset}, v{} {}validated, had {:?})",
            self.sources[url].version,
            if self.sources[url].validated {
                ""
            } else {
                "not "
            },
            self.partials.get(&id)
        ));
        self.runners.insert(
            id,
            Runner {
                attempt,
                version: self.sources[url].version,
                written,
                len,
                url,
            },
        );
        Ok(())
    }

    /// One pass of the driver: admit, commit (or fail to), carry out.
    fn settle(&mut self) -> Result<(), Violation> {
        for _ in 0..8 {
            self.core.pump();
            let busy = self.core.busy();
            self.core.check_busy(busy);
            self.act()?;
            if let Some(batch) = self.core.begin_commit() {
                self.act()?;
                if self.fail_commits > 0 {
                    self.fail_commits -= 1;
                    self.note("commit fails".to_owned());
                    self.core
                        .end_commit(Err(StoreError::new(StoreErrorKind::Full, "full")));
                } else {
                    self.disk.apply(&batch);
                    self.recorded.extend(batch.save.iter().map(|r| r.id));
                    self.core.end_commit(Ok(()));
                }
            }
            self.core.check_idle(busy);
            if !self.act()? {
                break;
            }
        }
        self.check_owners()
    }

    /// Carries out the core's actions; whether there were any.
    fn act(&mut self) -> Result<bool, Violation> {
        let mut any = false;
        while let Some(a) = self.core.poll_action() {
            any = true;
            match a {
                Action::Start(s) => self.start(&s)?,
                Action::Release(t) | Action::Stop(t) => {
                    if let Some(r) = self.runners.remove(&t) {
                        self.core.handle_runner_done(t, r.attempt);
                    }
                }
                Action::Abort { task, attempt }
                    if self
                        .runners
                        .get(&task)
                        .is_some_and(|r| r.attempt == attempt) =>
                {
                    self.runners.remove(&task);
                    self.core.handle_runner_done(task, attempt);
                }
                Action::Discard(r) => {
                    self.note(format!("discard {}", r.id));
                    self.partials.remove(&r.id);
                }
                Action::Deliver(Delivery::Completion(c)) => self.delivered(&c)?,
                _ => {}
            }
        }
        Ok(any)
    }

    fn delivered(&mut self, c: &Completion) -> Result<(), Violation> {
        self.report.completions += 1;
        self.note(format!("completed {} {:?}", c.task, c.event));
        if self.acked.contains(&c.event) {
            return Err(self.violation(format!(
                "{} delivered again after its acknowledgement was durable",
                c.task
            )));
        }
        if !self.disk.outbox.contains_key(&c.event) {
            return Err(self.violation(format!(
                "{}'s completion delivered before it was durable",
                c.task
            )));
        }
        let durable_end = self
            .disk
            .records
            .get(&c.task)
            .is_some_and(|r| r.state.is_terminal());
        if !durable_end {
            return Err(self.violation(format!(
                "{}'s completion delivered while its record says it has not ended",
                c.task
            )));
        }
        if let Outcome::Completed { bytes } = &c.outcome {
            let written = self.files.get(&c.task).cloned().unwrap_or_default();
            let mut versions: Vec<u32> = written.iter().map(|w| w.2).collect();
            versions.dedup();
            let contiguous = written.windows(2).all(|p| p[0].1 == p[1].0)
                && written.first().is_none_or(|w| w.0 == 0)
                && written.last().map_or(0, |w| w.1) == *bytes;
            if versions.len() > 1 || !contiguous {
                return Err(self.violation(format!(
                    "{} completed as a splice of versions {versions:?} ({written:?})",
                    c.task
                )));
            }
        }
        // The delegate returns: the acknowledgement is written (durably,
        // at the latest with the next commit).
        self.disk.outbox.remove(&c.event);
        self.acked.insert(c.event);
        Ok(())
    }

    fn check_owners(&self) -> Result<(), Violation> {
        let mut seen: HashMap<&Destination, TaskId> = HashMap::new();
        for r in self.core.records.values() {
            if r.state.is_terminal() {
                continue;
            }
            if let TaskKind::Download { destination } = &r.spec.kind
                && let Some(other) = seen.insert(destination, r.id)
            {
                return Err(
                    self.violation(format!("{other} and {} both own {destination:?}", r.id))
                );
            }
        }
        Ok(())
    }

    /// No partial remains of a task that ended (the simulated users cancel
    /// without keeping resume data).
    fn check_leftovers(&self) -> Result<(), Violation> {
        for r in self.core.records.values() {
            if r.state.is_terminal() && self.partials.get(&r.id).is_some_and(|w| !w.is_empty()) {
                return Err(self.violation(format!(
                    "{} ended {:?} and left its partial behind",
                    r.id, r.state.phase
                )));
            }
        }
        Ok(())
    }

    /// Once faults stop, every task ends (or waits for the user).
    fn check_all_end(&mut self) -> Result<(), Violation> {
        for _ in 0..20_000 {
            let open = self.core.records.values().any(|r| {
                !r.state.is_terminal()
                    && !matches!(
                        r.state.phase,
                        Phase::Suspended
                            | Phase::Waiting(transfer_core::WaitReason::SuspendedByUser)
                    )
            });
            // A commit backing off, or endings not yet carried out, are
            // work left too.
            let unsettled = !self.core.pending.dirty.is_empty()
                || !self.core.pending.effects.is_empty()
                || !self.core.pending.completions.is_empty();
            if !open && !unsettled {
                // The last endings' commits and discards carried out first.
                self.settle()?;
                return self.check_leftovers();
            }
            if self.runners.is_empty() {
                self.advance(2_000);
            } else {
                self.run_some(false);
            }
            self.settle()?;
        }
        let open: Vec<String> = self
            .core
            .records
            .values()
            .filter(|r| !r.state.is_terminal())
            .map(|r| format!("{} {:?}", r.id, r.state.phase))
            .collect();
        Err(self.violation(format!("tasks never ended: {open:?}")))
    }
}

/// Runs one seed for `steps` random steps (faults on), then lets every
/// task end (faults off), checking the invariants throughout.
pub fn run(seed: u64, steps: u64) -> Result<Report, Violation> {
    let mut w = World::new(seed);
    for _ in 0..steps {
        w.step(true)?;
    }
    w.fail_commits = 0;
    w.check_all_end()?;
    w.report.steps = w.step;
    w.report.digest = w.trace;
    Ok(w.report)
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
}
