//! The effects of the task state machine, carried out by the core once
//! the commit that records them is done: starts take their slot and ask
//! for a runner, aborts and throttles go to the running attempt, notices
//! go to the delivery task.

use std::sync::Arc;

use transfer_core::{
    Direction, Effect, Notification, Phase, Progress, TaskId, TaskRecord, Throttle, WaitReason,
};

use super::core::{Action, Core, Delivery, Slot, Start};
use crate::SessionEvent;

impl<W> Core<W> {
    /// Carries out one effect once the record is durable.
    pub(crate) fn effect(&mut self, id: TaskId, effect: Effect) {
        // The record is copied only by the effects that hand it on.
        let Some(record) = self.records.get(&id) else {
            return;
        };
        match effect {
            Effect::Persist | Effect::Complete(_) | Effect::DiscardPartial => {}
            Effect::Start {
                attempt, throttle, ..
            } => {
                // Only if the task is still in that attempt (a later event in
                // the same batch may have moved it on).
                if record.state.phase == (Phase::Running { attempt }) {
                    tracing::info!(
                        task = %id,
                        attempt,
                        origin = %record.spec.url().origin(),
                        path = record.spec.url().as_uri().path(),
                        "starting"
                    );
                    let record = Arc::new(TaskRecord::clone(record));
                    // An earlier attempt's answer is not this one's.
                    self.responses.remove(&id);
                    self.start(record, attempt, throttle);
                }
            }
            Effect::Throttle(throttle) => {
                if self.running.contains_key(&id) {
                    self.actions
                        .push_back(Action::Throttle { task: id, throttle });
                }
            }
            Effect::Abort { attempt } => {
                // That attempt only: a later one may have started since.
                if self.running.get(&id).is_some_and(|r| r.attempt == attempt) {
                    self.actions.push_back(Action::Abort { task: id, attempt });
                }
            }
            Effect::Notify(n) => {
                match &n {
                    Notification::Waiting(WaitReason::BackingOff { until, error }) => {
                        tracing::info!(
                            task = %id,
                            failures = record.state.failures,
                            %error,
                            delay = ?until.saturating_since(self.now),
                            "retrying after a failed attempt"
                        );
                    }
                    Notification::Waiting(reason) => {
                        tracing::info!(task = %id, %reason, "waiting");
                    }
                    Notification::Restarted(reason) => {
                        tracing::info!(task = %id, %reason, "starting over from zero");
                    }
                    Notification::Progress { .. } => {}
                }
                let event = match n {
                    Notification::Waiting(reason) => SessionEvent::Waiting { task: id, reason },
                    Notification::Progress { received, total } => SessionEvent::Progress {
                        task: id,
                        progress: Progress {
                            direction: if record.spec.kind.is_download() {
                                Direction::Download
                            } else {
                                Direction::Upload
                            },
                            delta: 0,
                            total: received,
                            expected: total.or(record.spec.expected_size),
                        },
                    },
                    Notification::Restarted(reason) => SessionEvent::Restarted { task: id, reason },
                };
                // The delegate hears of progress and waiting, with the record.
                let heard = matches!(
                    event,
                    SessionEvent::Progress { .. } | SessionEvent::Waiting { .. }
                );
                let record = (self.follows && heard).then(|| record.clone());
                self.deliver(Delivery::Event(event, record));
            }
            Effect::SetTimer(t) => self.set_timer(id, t),
        }
    }

    /// Takes the slot for an attempt and asks for its runner.
    fn start(&mut self, record: Arc<TaskRecord>, attempt: u32, throttle: Throttle) {
        let id = record.id;
        let host = self
            .hosts
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Arc::from(record.spec.url().origin()));
        if self.reserved.remove(&id).is_none() {
            *self.per_host.entry(host.clone()).or_default() += 1;
        }
        self.running.insert(id, Slot { attempt, host });
        if let Some(sh) = &mut self.shared {
            *sh.runners.entry(id).or_default() += 1;
        }
        self.actions.push_back(Action::Start(Start {
            record,
            attempt,
            throttle,
            delayed: self.delayed.remove(&id),
            config: self.config.clone(),
        }));
    }

    /// Asks every running attempt to stop at a checkpoint (the session
    /// shuts down).
    pub(crate) fn stop_all(&mut self) {
        let running: Vec<TaskId> = self.running.keys().copied().collect();
        for t in running {
            self.actions.push_back(Action::Stop(t));
        }
    }
}
