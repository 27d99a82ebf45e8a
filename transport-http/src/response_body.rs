//! An HTTP/1.1 or HTTP/2 response body passed through frame by frame as it
//! comes, with the idle timeout between frames, and its connection given
//! back to the pool the moment it ends cleanly.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use transfer_core::{ByteCount, TransferError};

use crate::error::from_hyper;
use crate::idle::IdleTimer;
use crate::pool::Returner;

/// A response body passed through frame by frame, with an idle timeout
/// between frames, errors classified, bytes counted, and the connection given
/// back to the pool when the body ends cleanly.
pub(crate) struct DownloadBody {
    inner: Incoming,
    idle: IdleTimer,
    received: ByteCount,
    returner: Option<Returner>,
    done: bool,
}

impl DownloadBody {
    pub(crate) fn new(
        inner: Incoming,
        idle: Duration,
        received: ByteCount,
        returner: Option<Returner>,
    ) -> Self {
        let mut returner = returner;
        if inner.is_end_stream() {
            // No body to wait for (HEAD, 204, 304, `Content-Length: 0`).
            if let Some(r) = returner.take() {
                r.give_back();
            }
        }
        DownloadBody {
            inner,
            idle: IdleTimer::new(idle),
            received,
            returner,
            done: false,
        }
    }
}

impl Body for DownloadBody {
    type Data = Bytes;
    type Error = TransferError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransferError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received.add(data.len() as u64);
                }
                this.idle.moved();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.returner = None; // a broken connection is never reused
                Poll::Ready(Some(Err(from_hyper(&e, "reading the response body"))))
            }
            Poll::Ready(None) => {
                this.done = true;
                if let Some(r) = this.returner.take() {
                    r.give_back();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.idle.poll_expired(cx));
                this.done = true;
                this.returner = None;
                Poll::Ready(Some(Err(this.idle.error())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
