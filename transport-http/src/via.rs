//! Connections through a proxy: to the proxy (over TLS for an `https://`
//! one), then through it to the origin.
//!
//! - an `https://` URL: a `CONNECT` tunnel (HTTP proxies) or the SOCKS5
//!   exchange, then TLS with the origin inside it, verified exactly as
//!   without a proxy, and HTTP/2 or HTTP/1.1 as the origin's ALPN says;
//! - an `http://` URL through an HTTP proxy: HTTP/1.1 to the proxy, each
//!   request in absolute form with the proxy's credentials;
//! - an `http://` URL through SOCKS5: the origin's bytes through the
//!   proxy, as if direct.
//!
//! HTTP/3 does not go through proxies (they carry TCP): transport-quic
//! connects direct, and the protocol choice keeps proxied URLs on TCP.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::time::{Instant, timeout_at};
use transfer_core::{ErrorKind, Protocol, TimeoutKind, Timeouts, TransferError};

use crate::pool::{
    ConnFacts, Inner, Key, Sender, TLS_READ_BUFFER, handshake, open_tcp, tls_handshake,
};
use crate::proxy::{Proxy, ProxyScheme};
use crate::resolve;
use crate::tunnel::{self, SocksTarget};

/// Any byte stream a connection runs on.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Connects to `key`'s origin through `proxy`, by `deadline` for the
/// proxy's part; TLS with the origin within `timeouts.tls`.
pub(crate) async fn connect(
    inner: &Arc<Inner>,
    key: &Key,
    proxy: &Proxy,
    deadline: Instant,
    timeouts: &Timeouts,
) -> Result<(Sender, ConnFacts), TransferError> {
    let config = &inner.config;
    let t = Instant::now();
    let (io, dns, remote) = match proxy.scheme() {
        ProxyScheme::Socks5 => {
            // Names are resolved here; the proxy is given addresses.
            let (addrs, _) = resolve::lookup(config, &key.host, key.port, deadline).await?;
            let mut last = None;
            let mut found = None;
            for addr in addrs {
                let (mut io, dns, remote) = to_proxy(inner, proxy, deadline, timeouts).await?;
                let asked = tunnel::socks5(&mut io, proxy, SocksTarget::Ip(addr.ip()), key.port);
                match within(deadline, proxy, asked).await {
                    Ok(()) => {
                        found = Some((io, dns, remote));
                        break;
                    }
                    // Another address of the origin may be reachable.
                    Err(e) if e.kind() == ErrorKind::ConnectFailed => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            match (found, last) {
                (Some(found), _) => found,
                (None, Some(e)) => return Err(e),
                (None, None) => {
                    return Err(TransferError::new(
                        ErrorKind::Dns,
                        format!("{} has no addresses", key.host),
                    ));
                }
            }
        }
        ProxyScheme::Socks5h => {
            let (mut io, dns, remote) = to_proxy(inner, proxy, deadline, timeouts).await?;
            let asked = tunnel::socks5(&mut io, proxy, SocksTarget::Name(&key.host), key.port);
            within(deadline, proxy, asked).await?;
            (io, dns, remote)
        }
        ProxyScheme::Http | ProxyScheme::Https if key.tls => {
            let (mut io, dns, remote) = to_proxy(inner, proxy, deadline, timeouts).await?;
            let agent = config.agent();
            let asked = tunnel::connect(&mut io, proxy, &key.host, key.port, agent);
            within(deadline, proxy, asked).await?;
            (io, dns, remote)
        }
        ProxyScheme::Http | ProxyScheme::Https => {
            // A plain URL through an HTTP proxy: requests go to the proxy.
            let (io, dns, remote) = to_proxy(inner, proxy, deadline, timeouts).await?;
            let connect = t.elapsed();
            let sender = handshake(inner, key, io, false).await?;
            return Ok((
                sender,
                facts(Protocol::Http1, remote, dns, connect, None, proxy, true),
            ));
        }
    };
    let connect = t.elapsed();
    let (sender, tls) = if key.tls {
        let started = Instant::now();
        let stream = tls_handshake(
            &inner.tls,
            &key.host,
            BufReader::with_capacity(TLS_READ_BUFFER, io),
            timeouts.tls,
        )
        .await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        (
            handshake(inner, key, stream, h2).await?,
            Some(started.elapsed()),
        )
    } else {
        let h2 = config.h2_prior_knowledge;
        (handshake(inner, key, io, h2).await?, None)
    };
    let protocol = sender.protocol();
    Ok((
        sender,
        facts(protocol, remote, dns, connect, tls, proxy, false),
    ))
}

fn facts(
    protocol: Protocol,
    remote: Option<std::net::SocketAddr>,
    dns: Option<std::time::Duration>,
    connect: std::time::Duration,
    tls: Option<std::time::Duration>,
    proxy: &Proxy,
    forward: bool,
) -> ConnFacts {
    ConnFacts {
        protocol,
        remote,
        dns,
        connect,
        tls,
        proxy: Some(proxy.clone()),
        forward,
    }
}

type Opened = (
    Box<dyn Io>,
    Option<std::time::Duration>,
    Option<std::net::SocketAddr>,
);

/// A connection to the proxy itself: TCP, and TLS for an `https://` proxy
/// (its certificate verified for its own name).
async fn to_proxy(
    inner: &Arc<Inner>,
    proxy: &Proxy,
    deadline: Instant,
    timeouts: &Timeouts,
) -> Result<Opened, TransferError> {
    let (tcp, dns, _) = open_tcp(&inner.config, proxy.host(), proxy.port(), deadline)
        .await
        .map_err(|e| TransferError::new(e.kind(), format!("proxy {proxy}: {}", e.detail())))?;
    let remote = tcp.peer_addr().ok();
    if proxy.scheme() == ProxyScheme::Https {
        let tls = tls_handshake(&inner.proxy_tls, proxy.host(), tcp, timeouts.tls)
            .await
            .map_err(|e| TransferError::new(e.kind(), format!("proxy {proxy}: {}", e.detail())))?;
        Ok((Box::new(tls), dns, remote))
    } else {
        Ok((Box::new(tcp), dns, remote))
    }
}

/// The proxy's exchange, which must end by the connect deadline.
async fn within(
    deadline: Instant,
    proxy: &Proxy,
    exchange: impl std::future::Future<Output = Result<(), TransferError>>,
) -> Result<(), TransferError> {
    timeout_at(deadline, exchange).await.map_err(|_| {
        TransferError::new(
            ErrorKind::Timeout(TimeoutKind::Connect),
            format!("proxy {proxy} did not answer in time"),
        )
    })?
}
