//! Name resolution as both transports do it (HTTP/3 in transport-quic too):
//! the configuration's `--resolve` overrides first, IP literals as they are,
//! else a lookup that must end by the connect deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use transfer_core::{ErrorKind, TimeoutKind, TransferError};

use crate::HttpConfig;

/// The addresses of `host` (lowercase, without brackets) on `port`: the
/// `config`'s `--resolve` override ([`HttpConfig::resolve`]), an IP literal
/// as is, else a lookup of `host:port` that must end by `deadline`; with the
/// lookup's time when there was one. A lookup that finds nothing is a
/// [`ErrorKind::Dns`] error; one that runs past `deadline` a
/// `Timeout(Dns)`.
pub async fn lookup(
    config: &HttpConfig,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<(Vec<SocketAddr>, Option<Duration>), TransferError> {
    if let Some(addrs) = config.resolve.get(host) {
        return Ok((addrs.clone(), None));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((vec![SocketAddr::new(ip, port)], None));
    }
    let t = Instant::now();
    let found = timeout_at(deadline, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| {
            TransferError::new(
                ErrorKind::Timeout(TimeoutKind::Dns),
                format!("resolving {host} timed out"),
            )
        })?
        .map_err(|e| TransferError::new(ErrorKind::Dns, format!("resolving {host}: {e}")))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(TransferError::new(
            ErrorKind::Dns,
            format!("{host} has no addresses"),
        ));
    }
    Ok((addrs, Some(t.elapsed())))
}
