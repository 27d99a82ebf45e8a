//! HTTP/3 for the origin: a QUIC endpoint on the TLS listener's port number
//! (UDP beside TCP, as servers that advertise `Alt-Svc: h3=":PORT"` do),
//! answering with the same handler, routes, faults and log as the TCP
//! listeners. A body cut by a script resets the stream; a cut upload stops
//! it without an answer.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::server::{self, BoxError, ConnInfo, ReqBody, Shared};
use crate::{Error, Listener};

/// Receive windows for bulk transfers (quinn's defaults suit the internet
/// at large, not a loopback that moves a GiB).
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;

/// A QUIC endpoint on `socket` serving HTTP/3 with `tls` (whose ALPN is set
/// to `h3`).
pub(crate) fn endpoint(
    socket: std::net::UdpSocket,
    mut tls: rustls::ServerConfig,
    switch: Arc<UdpSwitch>,
) -> Result<quinn::Endpoint, Error> {
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW))
        .receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(u64::from(CONNECTION_WINDOW));
    config.transport_config(Arc::new(transport));
    let runtime = Arc::new(quinn::TokioRuntime);
    let socket = Switched {
        inner: quinn::Runtime::wrap_udp_socket(&*runtime, socket)?,
        switch,
    };
    Ok(quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(config),
        Arc::new(socket),
        runtime,
    )?)
}

/// The origin's switch for UDP: while `blocked`, its QUIC sockets drop
/// every datagram both ways, and count those that arrived.
#[derive(Debug, Default)]
pub(crate) struct UdpSwitch {
    pub(crate) blocked: AtomicBool,
    pub(crate) dropped: AtomicU64,
}

/// A UDP socket under a [`UdpSwitch`].
#[derive(Debug)]
struct Switched {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    switch: Arc<UdpSwitch>,
}

impl quinn::AsyncUdpSocket for Switched {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        if self.switch.blocked.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let n = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            if !self.switch.blocked.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(n));
            }
            self.switch.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Accepts QUIC connections until aborted.
pub(crate) async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, kind: Listener) {
    while let Some(incoming) = endpoint.accept().await {
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let conn = ConnInfo { id, listener: kind };
        let inner = shared.clone();
        shared.spawn_connection(async move {
            match incoming.await {
                Ok(quic) => serve(quic, inner, conn).await,
                Err(e) => tracing::debug!(error = %e, "QUIC handshake refused"),
            }
        });
    }
}

async fn serve(quic: quinn::Connection, shared: Arc<Shared>, conn: ConnInfo) {
    let handle = quic.clone();
    let mut h3 =
        match h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(quic)).await {
            Ok(h3) => h3,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 connection refused");
                return;
            }
        };
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                let inner = shared.clone();
                let quic = handle.clone();
                shared.spawn_connection(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => answer(req, stream, inner, conn, quic).await,
                        Err(e) => tracing::debug!(error = %e, "HTTP/3 request refused"),
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, connection = conn.id, "HTTP/3 connection ended");
                break;
            }
        }
    }
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type Recv = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// The request's receiving side. Dropped before the request ended (an
/// answer that does not need the body), it asks the client to stop sending
/// with `H3_NO_ERROR`, as RFC 9114 §4.1 has servers do, so the client
/// still reads the answer.
struct Unread {
    recv: Recv,
    ended: bool,
    /// A read is under way (the stream is inside h3-quinn's read future,
    /// where it cannot be stopped; dropping it stops it with code 0).
    reading: bool,
}

impl Drop for Unread {
    fn drop(&mut self) {
        if !self.ended && !self.reading {
            self.recv.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

/// Answers one request stream with the origin's handler.
async fn answer(
    req: Request<()>,
    stream: Stream,
    shared: Arc<Shared>,
    conn: ConnInfo,
    quic: quinn::Connection,
) {
    let (mut send, recv) = stream.split();
    let unread = Unread {
        recv,
        ended: false,
        reading: false,
    };
    let frames = futures::stream::unfold(Some(unread), |recv| async move {
        let mut recv = recv?;
        recv.reading = true;
        let got = recv
            .recv
            .recv_data()
            .await
            .map(|b| b.map(|mut b| b.copy_to_bytes(b.remaining())));
        recv.reading = false;
        match got {
            Ok(Some(data)) => Some((Ok(Frame::data(data)), Some(recv))),
            Ok(None) => {
                recv.ended = true;
                None
            }
            Err(e) => {
                recv.ended = true;
                Some((Err(BoxError::from(e)), None))
            }
        }
    });
    let body: ReqBody = StreamBody::new(frames).boxed_unsync();
    let (parts, ()) = req.into_parts();
    let response = match server::handle(shared, conn, Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(server::Cut) => {
            send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
            return;
        }
    };
    let (head, mut body) = response.into_parts();
    if let Err(e) = send
        .send_response(http::Response::from_parts(head, ()))
        .await
    {
        tracing::debug!(error = %e, "HTTP/3 response head not sent");
        return;
    }
    loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && let Err(e) = send.send_data(data).await
                {
                    tracing::debug!(error = %e, "HTTP/3 body not sent");
                    return;
                }
            }
            Some(Err(server::BodyError::Dropped)) => {
                quic.close(
                    quinn::VarInt::from_u32(0x102),
                    b"dropped by the test script",
                );
                return;
            }
            Some(Err(_cut)) => {
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
            None => break,
        }
    }
    if let Err(e) = send.finish().await {
        tracing::debug!(error = %e, "HTTP/3 stream not finished");
    }
}
