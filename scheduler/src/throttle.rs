//! Token buckets: a task's own rate and the session's shared one. Rates can
//! change while a transfer runs; `None` means unlimited and costs nothing.
//! Public so an application can pace its own traffic the way the session
//! paces transfers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use transfer_core::{Pacer, Throttle};

/// A token bucket holding at most a quarter second of tokens, so a burst
/// after a pause stays short.
#[derive(Debug)]
pub struct Bucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: Option<u64>,
    tokens: f64,
    last: Instant,
}

impl State {
    /// Adds the tokens earned at `rate` since the last refill, up to a
    /// quarter second's worth (or one take of `n`, if larger).
    fn refill(&mut self, rate: u64, n: u64) {
        let now = Instant::now();
        let burst = (rate as f64 / 4.0).max(n as f64);
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * rate as f64).min(burst);
        self.last = now;
    }
}

impl Bucket {
    /// A bucket for `rate` bytes per second (`None`: unlimited), starting
    /// empty.
    pub fn new(rate: Option<u64>) -> Bucket {
        Bucket {
            state: Mutex::new(State {
                rate,
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// Changes the rate; the next `take` or `try_take` paces at it.
    pub fn set_rate(&self, rate: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.rate != rate {
            s.rate = rate;
            s.tokens = 0.0;
            s.last = Instant::now();
        }
    }

    /// Takes `n` tokens if that needs no wait: the rate is unlimited, or
    /// the tokens are there. Otherwise takes nothing and says so, for
    /// [`take`](Self::take) to wait. The path of every chunk of a transfer
    /// at full speed, without a future.
    pub fn try_take(&self, n: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rate) = s.rate else { return true };
        if rate == 0 {
            return false;
        }
        s.refill(rate, n);
        if s.tokens >= n as f64 {
            s.tokens -= n as f64;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt for what is missing and sleeping
    /// until the debt is paid. A zero rate pauses until the rate changes
    /// (checked every 100 ms).
    pub async fn take(&self, n: u64) {
        loop {
            let (wait, paused) = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let Some(rate) = s.rate else { return };
                if rate == 0 {
                    (Duration::from_millis(100), true)
                } else {
                    s.refill(rate, n);
                    s.tokens -= n as f64;
                    if s.tokens >= 0.0 {
                        return;
                    }
                    // In debt: sleep until it is paid, then go on.
                    (Duration::from_secs_f64(-s.tokens / rate as f64), false)
                }
            };
            tokio::time::sleep(wait).await;
            if !paused {
                return;
            }
        }
    }
}

/// Paces a transfer's body, download or upload, through the task's bucket
/// and the session's, following the rates the engine publishes for the
/// task (a changed rate takes effect at the next chunk).
pub(crate) struct BodyPacer {
    task: Arc<Bucket>,
    session: Arc<Bucket>,
    throttle: watch::Receiver<Throttle>,
}

impl BodyPacer {
    /// A pacer with a fresh task bucket and the session's shared one.
    pub(crate) fn new(session: Arc<Bucket>, throttle: watch::Receiver<Throttle>) -> BodyPacer {
        let task = throttle.borrow().task;
        BodyPacer {
            task: Arc::new(Bucket::new(task)),
            session,
            throttle,
        }
    }
}

impl BodyPacer {
    /// Takes `n` bytes' worth from both buckets at the rates published
    /// now: `None` when that needs no wait (unlimited, or within the rates:
    /// the path of every chunk at full speed, without a future), else the
    /// wait for the rest, each bucket taken once.
    pub(crate) fn take(&self, n: u64) -> Option<impl Future<Output = ()> + Send + 'static> {
        let rates = *self.throttle.borrow();
        self.task.set_rate(rates.task);
        self.session.set_rate(rates.session);
        let task_taken = self.task.try_take(n);
        if task_taken && self.session.try_take(n) {
            return None;
        }
        let (task, session) = (self.task.clone(), self.session.clone());
        Some(async move {
            if !task_taken {
                task.take(n).await;
            }
            session.take(n).await;
        })
    }
}

impl Pacer for BodyPacer {
    fn pace(&self, n: u64) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        match self.take(n) {
            None => Box::pin(std::future::ready(())),
            Some(wait) => Box::pin(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes moved through `b` in 16 KiB chunks until `secs` from `start`,
    /// as fast as it allows; `try_first` as a body's pacer does.
    async fn pull(b: &Bucket, start: Instant, secs: u64, try_first: bool) -> u64 {
        let mut moved = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            if !(try_first && b.try_take(16 << 10)) {
                b.take(16 << 10).await;
            }
            moved += 16 << 10;
        }
        moved
    }

    /// `moved` is within 5% of `want`.
    fn near(moved: u64, want: u64) -> bool {
        moved.abs_diff(want) as f64 / want as f64 <= 0.05
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_paces_bytes() {
        let b = Bucket::new(Some(1000));
        let start = Instant::now();
        for _ in 0..10 {
            b.take(500).await;
        }
        let took = start.elapsed();
        // 5000 bytes at 1000 B/s, less the quarter-second burst.
        assert!(took >= Duration::from_millis(4700), "{took:?}");
        assert!(took <= Duration::from_millis(5100), "{took:?}");
    }

    /// A body pacer's way, the cheap try first and the wait only when it
    /// fails, paces as `take` alone does; a refused try takes nothing.
    #[tokio::test(start_paused = true)]
    async fn trying_first_paces_the_same() {
        assert!(Bucket::new(None).try_take(1 << 30));
        let paused = Bucket::new(Some(0));
        assert!(!paused.try_take(1));
        for rate in [64u64 << 10, 50 << 20] {
            let b = Bucket::new(Some(rate));
            let moved = pull(&b, Instant::now(), 10, true).await;
            assert!(near(moved, rate * 10), "rate {rate}: moved {moved}");
        }
        // Within the tokens, the try takes them; beyond, it takes nothing
        // and the wait is for the shortfall alone. At 1,000 B/s the bucket
        // holds 250 B after a pause: 200 go at once, then 100 wait 50 ms
        // for the 50 B missing (had the refused try taken the 50 B it
        // found, 100 ms; had it gone into debt for all 100, 150 ms).
        let b = Bucket::new(Some(1000));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(b.try_take(200));
        assert!(!b.try_take(100), "only 50 B left");
        let start = Instant::now();
        b.take(100).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(45) && waited <= Duration::from_millis(55),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let b = Bucket::new(None);
        let start = Instant::now();
        b.take(1 << 30).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Over a 10 s window on tokio's paused clock, a transfer pulling 16 KiB
    /// chunks as fast as it can moves the limit's worth of bytes, within 5%;
    /// and a rate changed halfway takes effect at once.
    #[tokio::test(start_paused = true)]
    async fn ten_seconds_move_the_limit_within_five_percent() {
        for rate in [64u64 << 10, 1 << 20, 50 << 20] {
            let b = Bucket::new(Some(rate));
            let moved = pull(&b, Instant::now(), 10, false).await;
            assert!(near(moved, rate * 10), "rate {rate}: moved {moved} in 10 s");
        }
        let b = Bucket::new(Some(1 << 20));
        let start = Instant::now();
        let half = pull(&b, start, 5, false).await;
        b.set_rate(Some(256 << 10));
        let moved = half + pull(&b, start, 10, false).await;
        let second = (moved - half) as f64;
        let want = (256u64 << 10) as f64 * 5.0;
        assert!(
            (second - want).abs() / want <= 0.05,
            "after the change: {second} bytes in 5 s"
        );
    }
}
