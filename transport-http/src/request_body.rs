//! The request body both transports send (HTTP/3 in transport-quic too),
//! streamed from its parts: files read a chunk at a time, the sent-bytes
//! callback told as chunks go, the pacer asked before each, and a source
//! file that changed since it was stamped failing with `SourceChanged`
//! before its last bytes go out. Nothing here holds a whole body.
//!
//! [`RequestBodyStream`] is the part another transport uses; the send clock
//! beside it is how HTTP/1.1 and HTTP/2 time the response head (idle
//! between chunks while the body goes, first byte once it is sent).

use std::collections::VecDeque;
use std::future::Future;
use std::io::{Seek, SeekFrom};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;
use transfer_core::{
    BodyPart, ErrorKind, FileStamp, Pacer, RequestBody, SentProgress, TimeoutKind, TransferError,
};

/// Bytes read from a file per frame.
const UPLOAD_CHUNK: usize = 256 << 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// When the request body last moved and whether it is done: the first-byte
/// timeout starts only once the whole body is sent, and while it is being
/// sent the idle timeout applies between chunks.
#[derive(Debug)]
pub(crate) struct SendClock {
    state: Mutex<ClockState>,
    /// Why the body stopped, when it failed on our side (source file).
    failure: Mutex<Option<TransferError>>,
}

#[derive(Debug)]
struct ClockState {
    last: Instant,
    done: Option<Instant>,
    sent: u64,
    /// A chunk is waiting for the pacer: the idle timeout does not run.
    pacing: bool,
}

impl SendClock {
    pub(crate) fn new(empty: bool) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(SendClock {
            state: Mutex::new(ClockState {
                last: now,
                done: empty.then_some(now),
                sent: 0,
                pacing: false,
            }),
            failure: Mutex::new(None),
        })
    }

    fn moved(&self, n: u64, done: bool) -> u64 {
        let mut s = lock(&self.state);
        let now = Instant::now();
        s.last = now;
        s.pacing = false;
        s.sent += n;
        if done {
            s.done = Some(now);
        }
        s.sent
    }

    /// Bytes of the body handed to the connection.
    pub(crate) fn sent(&self) -> u64 {
        lock(&self.state).sent
    }

    /// A chunk starts waiting for the pacer.
    fn pacing(&self) {
        lock(&self.state).pacing = true;
    }

    /// When waiting for the head must end, and which timeout that is. While
    /// a chunk waits for the pacer the idle timeout starts over.
    pub(crate) fn deadline(&self, first_byte: Duration, idle: Duration) -> (Instant, TimeoutKind) {
        let s = lock(&self.state);
        match s.done {
            Some(done) => (done + first_byte, TimeoutKind::FirstByte),
            None if s.pacing => (Instant::now() + idle, TimeoutKind::Idle),
            None => (s.last + idle, TimeoutKind::Idle),
        }
    }

    fn fail(&self, e: TransferError) -> TransferError {
        *lock(&self.failure) = Some(e.clone());
        e
    }

    /// The error the body itself hit, if any (it explains a failed send).
    pub(crate) fn failure(&self) -> Option<TransferError> {
        lock(&self.failure).clone()
    }
}

enum Source {
    Bytes(Bytes),
    File {
        file: tokio::fs::File,
        left: u64,
        path: std::path::PathBuf,
        /// With the stamp the file must still match: a handle to look at
        /// its metadata before the last bytes go out.
        check: Option<(std::fs::File, FileStamp)>,
    },
}

/// Fails with `SourceChanged` when the open file no longer matches `stamp`.
fn check_stamp(
    file: &std::fs::File,
    stamp: &FileStamp,
    path: &std::path::Path,
) -> Result<(), TransferError> {
    let meta = file.metadata().map_err(|e| {
        TransferError::new(
            ErrorKind::SourceChanged,
            format!("upload source {}: {e}", path.display()),
        )
    })?;
    match stamp.changed(&FileStamp::of(&meta)) {
        None => Ok(()),
        Some(how) => Err(TransferError::new(
            ErrorKind::SourceChanged,
            format!(
                "upload source {} changed since it was enqueued: {how}",
                path.display()
            ),
        )),
    }
}

/// What a request body reports to and asks of its caller.
#[derive(Clone, Default)]
pub(crate) struct BodyHooks {
    /// Told the bytes sent so far.
    pub(crate) on_sent: Option<SentProgress>,
    /// Asked before each chunk goes out.
    pub(crate) pacer: Option<Arc<dyn Pacer>>,
}

type Paced = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A request body streamed from its parts, reporting bytes sent.
pub(crate) struct UploadBody {
    parts: VecDeque<Source>,
    remaining: u64,
    buf: BytesMut,
    clock: Arc<SendClock>,
    hooks: BodyHooks,
    /// A chunk read and waiting for the pacer.
    held: Option<(Bytes, Paced)>,
}

impl UploadBody {
    /// Opens every file part (so a missing source fails before anything is
    /// sent) positioned at its offset.
    pub(crate) fn open(
        body: &RequestBody,
        clock: Arc<SendClock>,
        hooks: BodyHooks,
    ) -> Result<Self, TransferError> {
        let mut parts = VecDeque::with_capacity(body.parts.len());
        for part in &body.parts {
            match part {
                BodyPart::Bytes(b) => parts.push_back(Source::Bytes(b.clone())),
                BodyPart::File {
                    path,
                    offset,
                    len,
                    stamp,
                } => {
                    let source_error = |e: std::io::Error| {
                        TransferError::new(
                            ErrorKind::SourceChanged,
                            format!("upload source {}: {e}", path.display()),
                        )
                    };
                    let mut file = std::fs::File::open(path).map_err(source_error)?;
                    let size = file.metadata().map_err(source_error)?.len();
                    if offset.saturating_add(*len) > size {
                        return Err(TransferError::new(
                            ErrorKind::SourceChanged,
                            format!(
                                "upload source {} has {size} bytes, fewer than the {} asked",
                                path.display(),
                                offset.saturating_add(*len)
                            ),
                        ));
                    }
                    let check = match stamp {
                        Some(stamp) => {
                            check_stamp(&file, stamp, path)?;
                            Some((file.try_clone().map_err(source_error)?, *stamp))
                        }
                        None => None,
                    };
                    file.seek(SeekFrom::Start(*offset)).map_err(source_error)?;
                    parts.push_back(Source::File {
                        file: tokio::fs::File::from_std(file),
                        left: *len,
                        path: path.clone(),
                        check,
                    });
                }
            }
        }
        Ok(UploadBody {
            parts,
            remaining: body.len(),
            buf: BytesMut::new(),
            clock,
            hooks,
            held: None,
        })
    }

    /// Sends `chunk` once the pacer allows it.
    fn paced(
        &mut self,
        chunk: Bytes,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransferError>>> {
        let Some(pacer) = &self.hooks.pacer else {
            return self.advance(chunk);
        };
        let mut wait = pacer.pace(chunk.len() as u64);
        if wait.as_mut().poll(cx).is_ready() {
            return self.advance(chunk);
        }
        self.clock.pacing();
        self.held = Some((chunk, wait));
        Poll::Pending
    }

    fn advance(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, TransferError>>> {
        let n = chunk.len() as u64;
        self.remaining -= n;
        let total = self.clock.moved(n, self.remaining == 0);
        if let Some(cb) = &self.hooks.on_sent {
            cb(total);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = TransferError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransferError>>> {
        let this = &mut *self;
        if let Some((chunk, mut wait)) = this.held.take() {
            if wait.as_mut().poll(cx).is_pending() {
                this.held = Some((chunk, wait));
                return Poll::Pending;
            }
            return this.advance(chunk);
        }
        loop {
            let Some(front) = this.parts.front_mut() else {
                return Poll::Ready(None);
            };
            match front {
                Source::Bytes(b) => {
                    let chunk = std::mem::take(b);
                    this.parts.pop_front();
                    if !chunk.is_empty() {
                        return this.paced(chunk, cx);
                    }
                }
                Source::File { left: 0, .. } => {
                    this.parts.pop_front();
                }
                Source::File {
                    file,
                    left,
                    path,
                    check,
                } => {
                    let want = (*left).min(UPLOAD_CHUNK as u64) as usize;
                    this.buf.resize(want, 0);
                    let mut rb = ReadBuf::new(&mut this.buf[..want]);
                    let read = ready!(Pin::new(file).poll_read(cx, &mut rb));
                    let n = rb.filled().len();
                    let failed = match read {
                        Err(e) => Some(format!("reading upload source {}: {e}", path.display())),
                        Ok(()) if n == 0 => Some(format!(
                            "upload source {} ended {left} bytes early",
                            path.display()
                        )),
                        Ok(()) => None,
                    };
                    if let Some(detail) = failed {
                        let e = this
                            .clock
                            .fail(TransferError::new(ErrorKind::SourceChanged, detail));
                        return Poll::Ready(Some(Err(e)));
                    }
                    *left -= n as u64;
                    // The last bytes of the part go out only if the file is
                    // still the one that was stamped (an fstat, microseconds).
                    if *left == 0
                        && let Some((std_file, stamp)) = check
                        && let Err(e) = check_stamp(std_file, stamp, path)
                    {
                        return Poll::Ready(Some(Err(this.clock.fail(e))));
                    }
                    this.buf.truncate(n);
                    let chunk = this.buf.split().freeze();
                    return this.paced(chunk, cx);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A request body read from its parts as it is sent: files a chunk at a
/// time (a missing source fails at [`open`](Self::open)), the sent-bytes
/// callback told as chunks go, the pacer asked before each, and a file
/// that no longer matches its stamp failing with `SourceChanged` before its
/// last bytes go out.
pub struct RequestBodyStream(UploadBody);

impl RequestBodyStream {
    /// Opens every part of `body`.
    pub fn open(
        body: &RequestBody,
        on_sent: Option<SentProgress>,
        pacer: Option<Arc<dyn Pacer>>,
    ) -> Result<RequestBodyStream, TransferError> {
        let clock = SendClock::new(body.is_empty());
        let hooks = BodyHooks { on_sent, pacer };
        Ok(RequestBodyStream(UploadBody::open(body, clock, hooks)?))
    }
}

impl Body for RequestBodyStream {
    type Data = Bytes;
    type Error = TransferError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransferError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}
