//! The idle timeout between the frames of a response body, as both
//! transports apply it (HTTP/3 in transport-quic too): data that stops
//! moving for the session's idle time fails the body with
//! `Timeout(Idle)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use transfer_core::{ErrorKind, TimeoutKind, TransferError};

/// The idle timeout between the frames of a body. The timer is moved
/// lazily, when it fires: one clock read per frame instead of a timer-wheel
/// update.
pub struct IdleTimer {
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    last: Instant,
}

impl IdleTimer {
    /// A timer for `idle`, starting now.
    pub fn new(idle: Duration) -> IdleTimer {
        let now = Instant::now();
        IdleTimer {
            idle,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            last: now,
        }
    }

    /// Data moved: the timeout starts over.
    pub fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// Ready once `idle` has passed since data last moved (registers `cx`
    /// to be woken for it otherwise).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }

    /// The error of an expired timer.
    pub fn error(&self) -> TransferError {
        TransferError::new(
            ErrorKind::Timeout(TimeoutKind::Idle),
            format!("no body data for {:?}", self.idle),
        )
    }
}
