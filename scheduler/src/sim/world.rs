//! The simulated world: the origin, the store, the processes (each a core
//! with its runners), and the random steps that move them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, header};
use transfer_core::{
    Batch, Completion, Conditions, Continuation, Destination, ErrorKind, Event, EventId,
    RandomSource, RangePlan, SplitMix64, StoreError, StoreErrorKind, TaskId, TaskRecord, TaskSpec,
    Timestamp, TransferError, judge_response, plan_range,
};

use super::shared::{Held, Lease};
use super::{Report, Violation};
use crate::SessionConfig;
use crate::engine::Core;
use crate::engine::core::{Action, Delivery};

/// A file at the origin.
pub(super) struct Source {
    pub(super) len: u64,
    pub(super) version: u32,
    /// It sends an ETag (one per version).
    pub(super) validated: bool,
}

/// Runs of bytes, each tagged with the version of the source it came from.
pub(super) type Runs = Vec<(u64, u64, u32)>;

/// An attempt in progress: the bytes of the partial, each run tagged with
/// the version it came from.
pub(super) struct Runner {
    pub(super) attempt: u32,
    /// The version its response carries (one response, one version).
    pub(super) version: u32,
    pub(super) written: Runs,
    pub(super) len: u64,
    pub(super) url: usize,
    /// The claim epoch it runs under (shared sessions).
    pub(super) epoch: Option<u64>,
    /// Its partial was discarded under it (by a cancel elsewhere): what it
    /// writes goes nowhere, and putting it in place fails.
    pub(super) orphan: bool,
}

/// What the store holds durably.
#[derive(Default)]
pub(super) struct Disk {
    pub(super) records: BTreeMap<TaskId, TaskRecord>,
    pub(super) outbox: BTreeMap<EventId, Completion>,
    /// The records each commit kept, by writer, in order (what a follow
    /// reads as the others' changes).
    pub(super) log: Vec<(u64, Vec<TaskRecord>)>,
}

impl Disk {
    /// Applies a batch as the S3 store reads its log back
    /// ([`transfer_core::merge_saved`]): a record saved under an older claim
    /// epoch than the one stored is not kept, nor its completion (in a
    /// session of one process every epoch is 0); a request changes only
    /// the request.
    pub(super) fn apply(&mut self, b: &Batch, writer: u64) {
        let mut fenced = Vec::new();
        let mut kept = Vec::new();
        for r in &b.save {
            let Some(r) = transfer_core::merge_saved(self.records.get(&r.id), r.clone()) else {
                fenced.push(r.id);
                continue;
            };
            self.records.insert(r.id, r.clone());
            kept.push(r);
        }
        for id in &b.remove {
            self.records.remove(id);
        }
        for c in &b.complete {
            if !fenced.contains(&c.task) {
                self.outbox.insert(c.event, c.clone());
            }
        }
        for e in &b.acknowledge {
            self.outbox.remove(e);
        }
        self.log.push((writer, kept));
    }
}

/// One process: its core, its runners and (shared sessions) its claims.
pub(super) struct Worker {
    pub(super) core: Core<u64>,
    pub(super) runners: HashMap<TaskId, Runner>,
    pub(super) fail_commits: u32,
    /// Who it is to the leases (a restarted process is someone new).
    pub(super) identity: u64,
    /// Claims held, by task.
    pub(super) held: HashMap<TaskId, Held>,
    /// Claims asked for and not yet answered.
    pub(super) claiming: Vec<TaskId>,
    /// Stopped until then (SIGSTOP, or its machine asleep).
    pub(super) paused_until: Option<Timestamp>,
    /// How far into the store's log its last follow read.
    pub(super) cursor: usize,
}

pub(super) const URLS: usize = 6;
const NAMES: usize = 4;
/// The claims' time to live in a shared session.
pub(super) const TTL: Duration = Duration::from_secs(3);

pub(super) struct World {
    pub(super) seed: u64,
    pub(super) rng: SplitMix64,
    pub(super) now: Timestamp,
    pub(super) workers: Vec<Worker>,
    /// The process taking this step.
    pub(super) w: usize,
    pub(super) disk: Disk,
    pub(super) sources: Vec<Source>,
    /// Durable bytes of each task's partial (what survives a crash).
    pub(super) partials: HashMap<TaskId, Runs>,
    /// Files moved into place by finished attempts.
    pub(super) files: HashMap<TaskId, Runs>,
    pub(super) acked: HashSet<EventId>,
    /// Tasks whose record has been durable at least once.
    pub(super) recorded: HashSet<TaskId>,
    /// The claims (shared sessions).
    pub(super) leases: Option<HashMap<TaskId, Lease>>,
    /// The completion each task ended with (shared sessions: one per task,
    /// whichever process delivers it).
    pub(super) endings: HashMap<TaskId, EventId>,
    pub(super) next_identity: u64,
    pub(super) report: Report,
    pub(super) trace: u64,
    pub(super) step: u64,
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
    pub(super) fn new(seed: u64, shared: bool) -> World {
        // The shared run draws from its own stream, so the single-process
        // run of a seed stays what it was.
        let mut rng = SplitMix64::new(if shared {
            seed ^ 0x5348_4152_4544_0000
        } else {
            seed
        });
        let now = Timestamp::from_millis(1_700_000_000_000);
        let sources = (0..URLS)
            .map(|_| Source {
                len: 1 + rng.next_u64() % 400,
                version: 0,
                validated: rng.next_u64().is_multiple_of(2),
            })
            .collect();
        let mut world = World {
            seed,
            rng,
            now,
            workers: Vec::new(),
            w: 0,
            disk: Disk::default(),
            sources,
            partials: HashMap::new(),
            files: HashMap::new(),
            acked: HashSet::new(),
            recorded: HashSet::new(),
            leases: shared.then(HashMap::new),
            endings: HashMap::new(),
            next_identity: 0,
            report: Report::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            step: 0,
        };
        for _ in 0..if shared { 2 } else { 1 } {
            let ids = if shared { world.rng.next_u64() } else { seed };
            let worker = world.boot(ids);
            world.workers.push(worker);
        }
        world
    }

    /// A process starting: a core attached to what the store holds.
    pub(super) fn boot(&mut self, seed: u64) -> Worker {
        let shared = self.leases.is_some();
        let mut core = Core::new(
            Arc::new(config()),
            Conditions::default(),
            true,
            self.now,
            shared.then_some(TTL),
            seed,
        );
        core.attach(self.disk.records.values().cloned().collect());
        let outbox: Vec<Completion> = self.disk.outbox.values().cloned().collect();
        if shared {
            core.claim_outbox(&outbox);
        } else {
            core.redeliver(outbox);
        }
        self.next_identity += 1;
        Worker {
            core,
            runners: HashMap::new(),
            fail_commits: 0,
            identity: self.next_identity,
            held: HashMap::new(),
            claiming: Vec::new(),
            paused_until: None,
            cursor: self.disk.log.len(),
        }
    }

    pub(super) fn shared(&self) -> bool {
        self.leases.is_some()
    }

    pub(super) fn core(&mut self) -> &mut Core<u64> {
        &mut self.workers[self.w].core
    }

    pub(super) fn roll(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    pub(super) fn note(&mut self, s: String) {
        let s = if self.shared() {
            format!("w{} {s}", self.w)
        } else {
            s
        };
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

    pub(super) fn violation(&self, what: String) -> Violation {
        let what = if self.shared() {
            format!("shared session: {what}")
        } else {
            what
        };
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
    pub(super) fn step(&mut self, faults: bool) -> Result<(), Violation> {
        self.step += 1;
        if self.shared() {
            return self.shared_step(faults);
        }
        let pick = self.roll(100);
        match pick {
            0..=14 => self.enqueue(),
            15..=54 => self.run_some(faults)?,
            55..=59 if faults => self.change_source(),
            60..=64 => self.user(),
            65..=69 if faults => self.fail_some_commits(),
            70..=72 if faults => self.crash(),
            _ => {
                let ms = 1 + self.roll(500);
                self.advance(ms);
            }
        }
        self.settle()
    }

    pub(super) fn fail_some_commits(&mut self) {
        let n = 1 + self.roll(3) as u32;
        self.workers[self.w].fail_commits += n;
        self.report.faults += 1;
    }

    pub(super) fn enqueue(&mut self) {
        let u = self.roll(URLS as u64) as usize;
        let n = self.roll(NAMES as u64);
        // In a shared session each process names its own files: two
        // processes that queue one name before either has read the other's
        // are refused by the payload store's conditional put, not here.
        let name = if self.shared() {
            format!("w{}-name{n}", self.w)
        } else {
            format!("name{n}")
        };
        let Ok(spec) = TaskSpec::download(&World::url(u), Destination::Path(name.into())).build()
        else {
            return;
        };
        match self.core().handle_enqueue(spec, true) {
            Ok(id) => {
                self.report.tasks += 1;
                self.note(format!("enqueue {id} u{u} n{n}"));
                let step = self.step;
                self.core().after_enqueue(id, step);
            }
            Err(e) => self.note(format!("refused {e}")),
        }
    }

    /// Simulated time passes for every process that is not paused.
    pub(super) fn advance(&mut self, ms: u64) {
        let mut left = ms;
        // Shared sessions: in steps no longer than a sixth of the time to
        // live, so that renewals come due one at a time.
        let most = if self.shared() { 500 } else { ms };
        while left > 0 {
            let d = left.min(most);
            left -= d;
            self.now = self.now.saturating_add(Duration::from_millis(d));
            for w in 0..self.workers.len() {
                if self.workers[w].paused_until.is_some() {
                    continue;
                }
                let now = self.now;
                let core = &mut self.workers[w].core;
                core.handle_time(now);
                core.handle_timers();
                if self.shared() {
                    self.renew(w);
                }
            }
        }
    }

    pub(super) fn change_source(&mut self) {
        let u = self.roll(URLS as u64) as usize;
        self.sources[u].version += 1;
        self.report.faults += 1;
        self.note(format!("change u{u} to v{}", self.sources[u].version));
    }

    pub(super) fn user(&mut self) {
        let ids: Vec<TaskId> = self.core().records.keys().copied().collect();
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
        let step = self.step;
        self.core().handle_user(id, event);
        self.core().after_commit(step);
    }

    /// Moves one running attempt of the current process forward: bytes, a
    /// checkpoint, a fault or the end.
    pub(super) fn run_some(&mut self, faults: bool) -> Result<(), Violation> {
        let mut ids: Vec<TaskId> = self.workers[self.w].runners.keys().copied().collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        let id = ids[self.roll(ids.len() as u64) as usize];
        let fault = faults && self.roll(10) == 0;
        let Some(r) = self.workers[self.w].runners.get(&id) else {
            return Ok(());
        };
        let attempt = r.attempt;
        // A runner checks its claim before it writes or puts a file in
        // place (shared sessions).
        if !self.claim_fresh(id) {
            self.note(format!("runner {id} stops: its claim may have lapsed"));
            self.runner_failed(
                id,
                attempt,
                TransferError::new(ErrorKind::StorageUnavailable, "the claim may have lapsed"),
            );
            return Ok(());
        }
        self.check_one_runner(id)?;
        let Some(r) = self.workers[self.w].runners.get_mut(&id) else {
            return Ok(());
        };
        if fault {
            // Cut, or a 503: what was written before the cut is checkpointed.
            // One fault in eight fails the task for good (the body grew past
            // its cap): its partial must go.
            let durable = r.len;
            let written = r.written.clone();
            let orphan = r.orphan;
            if !orphan {
                self.partials.insert(id, written);
            }
            self.report.faults += 1;
            let error = if self.rng.next_u64().is_multiple_of(8) {
                TransferError::new(ErrorKind::SizeLimitExceeded, "over the cap")
            } else {
                TransferError::new(ErrorKind::ConnectionLost, "cut")
            };
            self.note(format!("cut {id} at {durable}: {error}"));
            self.core().handle_report(
                id,
                Event::Checkpoint {
                    attempt,
                    durable,
                    partial: None,
                },
            );
            self.runner_failed(id, attempt, error);
            return Ok(());
        }
        let total = self.sources[r.url].len;
        let chunk = (1 + self.rng.next_u64() % 150).min(total - r.len);
        if chunk > 0 {
            r.written.push((r.len, r.len + chunk, r.version));
            r.len += chunk;
            let received = r.len;
            let (written, orphan) = (r.written.clone(), r.orphan);
            self.core()
                .handle_report(id, Event::Progress { attempt, received });
            if self.rng.next_u64().is_multiple_of(3) {
                if !orphan {
                    self.partials.insert(id, written);
                }
                self.core().handle_report(
                    id,
                    Event::Checkpoint {
                        attempt,
                        durable: received,
                        partial: None,
                    },
                );
            }
            return Ok(());
        }
        if r.orphan {
            // Its partial is gone: nothing to put in place.
            self.runner_failed(
                id,
                attempt,
                TransferError::new(ErrorKind::StorageUnavailable, "the partial is gone"),
            );
            return Ok(());
        }
        // The whole body: committed into place, then the ending reported.
        let written = r.written.clone();
        self.partials.remove(&id);
        self.files.insert(id, written);
        self.note(format!("finish {id}"));
        self.core().handle_report(
            id,
            Event::Finished {
                attempt,
                bytes: total,
            },
        );
        self.workers[self.w].runners.remove(&id);
        self.core().handle_runner_done(id, attempt);
        Ok(())
    }

    fn runner_failed(&mut self, id: TaskId, attempt: u32, error: TransferError) {
        self.core()
            .handle_report(id, Event::AttemptFailed { attempt, error });
        self.workers[self.w].runners.remove(&id);
        self.core().handle_runner_done(id, attempt);
    }

    /// A crash: the process and everything not durable is gone; a new one
    /// attaches to the store.
    pub(super) fn crash(&mut self) {
        self.report.crashes += 1;
        self.note("crash".to_owned());
        // A new process starts a moment later (ids are counted from its
        // start time).
        self.now = self.now.saturating_add(Duration::from_secs(1));
        let seed = self.rng.next_u64();
        let worker = self.boot(seed);
        // Its claims are not released: the others wait them out.
        self.workers[self.w] = worker;
        if self.shared() {
            // The others' time passed too.
            for w in 0..self.workers.len() {
                if w != self.w && self.workers[w].paused_until.is_none() {
                    let now = self.now;
                    self.workers[w].core.handle_time(now);
                    self.renew(w);
                }
            }
            return;
        }
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
            self.core()
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
                self.core()
                    .handle_report(id, Event::Restarted { attempt, reason });
                written.clear();
                (0, validator, total)
            }
            Ok(Continuation::Rerequest { reason }) => {
                self.core()
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
                self.core().handle_report(
                    id,
                    Event::AttemptFailed {
                        attempt,
                        error: TransferError::new(ErrorKind::Protocol, "odd answer"),
                    },
                );
                self.core().handle_runner_done(id, attempt);
                return Ok(());
            }
        };
        self.core().handle_report(
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
        let epoch = self.workers[self.w].held.get(&id).map(|h| h.epoch);
        self.workers[self.w].runners.insert(
            id,
            Runner {
                attempt,
                version: self.sources[url].version,
                written,
                len,
                url,
                epoch,
                orphan: false,
            },
        );
        Ok(())
    }

    /// One pass of the current process's driver: admit, commit (or fail
    /// to), carry out.
    pub(super) fn settle(&mut self) -> Result<(), Violation> {
        if self.workers[self.w].paused_until.is_some() {
            return Ok(());
        }
        for _ in 0..8 {
            self.core().pump();
            let busy = self.core().busy();
            self.core().check_busy(busy);
            self.act()?;
            if let Some(mut batch) = self.core().begin_commit() {
                let lapsed = self.fence(&mut batch);
                self.act()?;
                let worker = &mut self.workers[self.w];
                let result = if worker.fail_commits > 0 {
                    worker.fail_commits -= 1;
                    self.note("commit fails".to_owned());
                    Err(StoreError::new(StoreErrorKind::Full, "full"))
                } else {
                    let identity = worker.identity;
                    self.disk.apply(&batch, identity);
                    self.recorded.extend(batch.save.iter().map(|r| r.id));
                    Ok(())
                };
                for task in lapsed {
                    self.note(format!("{task}: claim lapsed at commit"));
                    self.workers[self.w].held.remove(&task);
                    self.core().handle_lapsed(task);
                }
                self.core().end_commit(result);
            }
            self.core().check_idle(busy);
            if !self.act()? {
                break;
            }
        }
        self.check_owners()
    }

    /// Carries out the current process's actions; whether there were any.
    fn act(&mut self) -> Result<bool, Violation> {
        let mut any = false;
        while let Some(a) = self.core().poll_action() {
            any = true;
            match a {
                Action::Start(s) => self.start(&s)?,
                Action::Release(t) | Action::Stop(t) => {
                    if let Some(r) = self.workers[self.w].runners.remove(&t) {
                        self.core().handle_runner_done(t, r.attempt);
                    }
                }
                Action::Abort { task, attempt }
                    if self.workers[self.w]
                        .runners
                        .get(&task)
                        .is_some_and(|r| r.attempt == attempt) =>
                {
                    self.workers[self.w].runners.remove(&task);
                    self.core().handle_runner_done(task, attempt);
                }
                Action::Discard(r) => {
                    self.note(format!("discard {}", r.id));
                    self.partials.remove(&r.id);
                    for worker in &mut self.workers {
                        if let Some(runner) = worker.runners.get_mut(&r.id) {
                            runner.orphan = true;
                        }
                    }
                }
                Action::Deliver(Delivery::Completion(c)) => self.delivered(&c)?,
                Action::Claim(t) => self.workers[self.w].claiming.push(t),
                Action::ReleaseClaim(t) => self.release_claim(t),
                _ => {}
            }
        }
        Ok(any)
    }
}
