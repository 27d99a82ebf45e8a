//! A response body read from an HTTP/3 stream frame by frame, with an idle
//! timeout between frames and its length held to `Content-Length`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use transfer_core::{ByteCount, ErrorKind, TransferError};

use crate::Conn;
use crate::error::stream_error;
use transport_http::idle::IdleTimer;

type Recv = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;

/// Dropped before its end, the stream's receiving side is dropped with it,
/// and quinn asks the server to stop sending.
pub(crate) struct H3Body {
    recv: Recv,
    /// Keeps the connection open while the body is read.
    _conn: Arc<Conn>,
    idle: IdleTimer,
    received: ByteCount,
    declared: Option<u64>,
    got: u64,
    done: bool,
}

impl H3Body {
    pub(crate) fn new(
        recv: Recv,
        conn: Arc<Conn>,
        idle: Duration,
        received: ByteCount,
        declared: Option<u64>,
        expects_body: bool,
    ) -> Self {
        H3Body {
            recv,
            _conn: conn,
            idle: IdleTimer::new(idle),
            received,
            declared,
            got: 0,
            done: !expects_body,
        }
    }

    fn fail(
        &mut self,
        kind: ErrorKind,
        detail: String,
    ) -> Poll<Option<Result<Frame<Bytes>, TransferError>>> {
        self.done = true;
        Poll::Ready(Some(Err(TransferError::new(kind, detail))))
    }
}

impl Body for H3Body {
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
        match this.recv.poll_recv_data(cx) {
            Poll::Ready(Ok(Some(mut buf))) => {
                let data = buf.copy_to_bytes(buf.remaining());
                this.got += data.len() as u64;
                if let Some(declared) = this.declared
                    && this.got > declared
                {
                    return this.fail(
                        ErrorKind::Protocol,
                        format!("the body grew past its Content-Length of {declared} bytes"),
                    );
                }
                this.received.add(data.len() as u64);
                this.idle.moved();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Ok(None)) => {
                if let Some(declared) = this.declared
                    && this.got < declared
                {
                    let got = this.got;
                    return this.fail(
                        ErrorKind::ConnectionLost,
                        format!("the body ended after {got} of its {declared} bytes"),
                    );
                }
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(stream_error(&e, "reading the response body"))))
            }
            Poll::Pending => {
                ready!(this.idle.poll_expired(cx));
                this.done = true;
                Poll::Ready(Some(Err(this.idle.error())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.got)),
            None => SizeHint::default(),
        }
    }
}
