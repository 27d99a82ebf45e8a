//! Ways through a proxy to an origin, on a connection already open to the
//! proxy: an HTTP `CONNECT` tunnel and the SOCKS5 exchange (RFC 1928, with
//! RFC 1929's username and password). After either, the connection carries
//! the origin's bytes (TLS to the origin runs inside it, verified as
//! without a proxy).
//!
//! Both read exactly the proxy's answer and nothing past it, and say in
//! words what a refusal means: a 407 or a rejected SOCKS login is a
//! permanent [`ErrorKind::ProxyRefused`]; a proxy that cannot reach the
//! origin (5xx, SOCKS "host unreachable") is a transient
//! [`ErrorKind::ConnectFailed`], as a direct connection's failure would be.

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use transfer_core::{ErrorKind, TransferError};

use crate::proxy::{Proxy, authority};

/// The largest `CONNECT` answer head read.
const HEAD_LIMIT: usize = 16 << 10;

/// Asks the HTTP proxy at the other end of `io` for a tunnel to
/// `host:port`, sending its credentials if it has some.
pub(crate) async fn connect<S>(
    io: &mut S,
    proxy: &Proxy,
    host: &str,
    port: u16,
    agent: &str,
) -> Result<(), TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = authority(host, port);
    let mut head =
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {agent}\r\n");
    if let Some(auth) = proxy.authorization() {
        head.push_str("Proxy-Authorization: ");
        head.push_str(auth.to_str().unwrap_or_default());
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let lost = |e: std::io::Error| {
        TransferError::new(
            ErrorKind::ConnectFailed,
            format!("proxy {proxy} while opening a tunnel to {target}: {e}"),
        )
    };
    io.write_all(head.as_bytes()).await.map_err(lost)?;
    io.flush().await.map_err(lost)?;

    // Byte by byte up to the blank line: the tunnel's first byte after it
    // is the origin's, and must not be swallowed here.
    let mut buf = Vec::with_capacity(256);
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() >= HEAD_LIMIT {
            return Err(TransferError::new(
                ErrorKind::Protocol,
                format!("proxy {proxy} answered CONNECT with over {HEAD_LIMIT} bytes of head"),
            ));
        }
        let mut byte = [0u8; 1];
        let n = io.read(&mut byte).await.map_err(lost)?;
        if n == 0 {
            return Err(TransferError::new(
                ErrorKind::ConnectFailed,
                format!("proxy {proxy} closed the connection before answering CONNECT {target}"),
            ));
        }
        buf.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let status = match response.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => response.code.unwrap_or(0),
        _ => {
            return Err(TransferError::new(
                ErrorKind::Protocol,
                format!("proxy {proxy} answered CONNECT with something that is not HTTP"),
            ));
        }
    };
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    match status {
        200..=299 => Ok(()),
        407 => Err(refused_407(proxy)),
        500..=599 => Err(TransferError::new(
            ErrorKind::ConnectFailed,
            format!("proxy {proxy} could not reach {target} ({status} {reason})"),
        )),
        _ => Err(TransferError::new(
            ErrorKind::ProxyRefused,
            format!("proxy {proxy} refused a tunnel to {target} ({status} {reason})"),
        )),
    }
}

/// What a 407 from `proxy` means, in words: the credentials were refused,
/// or there were none.
pub(crate) fn refused_407(proxy: &Proxy) -> TransferError {
    let why = if proxy.has_credentials() {
        format!(
            "proxy {proxy} refused the credentials given for it (407 Proxy Authentication Required)"
        )
    } else {
        format!(
            "proxy {proxy} asks for credentials (407 Proxy Authentication Required): give them \
             in the proxy URL, as {}://USER:PASSWORD@{}",
            proxy.scheme_name(),
            proxy.authority()
        )
    };
    TransferError::new(ErrorKind::ProxyRefused, why)
}

/// Where a SOCKS5 proxy is asked to connect.
pub(crate) enum SocksTarget<'a> {
    /// An address resolved here (`socks5://`).
    Ip(IpAddr),
    /// A name the proxy resolves (`socks5h://`).
    Name(&'a str),
}

/// The SOCKS5 exchange with the proxy at the other end of `io`: offers
/// username/password only when the proxy URL has credentials, then asks
/// for a TCP connection to `target` on `port`.
pub(crate) async fn socks5<S>(
    io: &mut S,
    proxy: &Proxy,
    target: SocksTarget<'_>,
    port: u16,
) -> Result<(), TransferError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let shown = match &target {
        SocksTarget::Ip(ip) => authority(&ip.to_string(), port),
        SocksTarget::Name(n) => authority(n, port),
    };
    let lost = |e: std::io::Error| {
        TransferError::new(
            ErrorKind::ConnectFailed,
            format!("SOCKS5 proxy {proxy} while connecting to {shown}: {e}"),
        )
    };
    let refused = |why: String| TransferError::new(ErrorKind::ProxyRefused, why);
    let garbled = || {
        TransferError::new(
            ErrorKind::Protocol,
            format!("{proxy} does not answer as a SOCKS5 proxy"),
        )
    };

    // Greeting: the methods offered.
    let creds = proxy.credentials();
    let greeting: &[u8] = if creds.is_some() {
        &[5, 2, 0x00, 0x02]
    } else {
        &[5, 1, 0x00]
    };
    io.write_all(greeting).await.map_err(lost)?;
    let mut choice = [0u8; 2];
    io.read_exact(&mut choice).await.map_err(lost)?;
    if choice[0] != 5 {
        return Err(garbled());
    }
    match (choice[1], creds) {
        (0x00, _) => {}
        (0x02, Some((user, pass))) => {
            if user.len() > 255 || pass.len() > 255 {
                return Err(refused(format!(
                    "SOCKS5 proxy {proxy}: a user name or password is longer than 255 bytes"
                )));
            }
            let mut login = vec![1, user.len() as u8];
            login.extend_from_slice(user.as_bytes());
            login.push(pass.len() as u8);
            login.extend_from_slice(pass.as_bytes());
            io.write_all(&login).await.map_err(lost)?;
            let mut status = [0u8; 2];
            io.read_exact(&mut status).await.map_err(lost)?;
            if status[1] != 0 {
                return Err(refused(format!(
                    "SOCKS5 proxy {proxy} refused the credentials given for it"
                )));
            }
        }
        (0xFF, None) | (0x02, None) => {
            return Err(refused(format!(
                "SOCKS5 proxy {proxy} asks for credentials: give them in the proxy URL, \
                 as socks5://USER:PASSWORD@{}",
                proxy.authority()
            )));
        }
        (0xFF, Some(_)) => {
            return Err(refused(format!(
                "SOCKS5 proxy {proxy} accepts no way of logging in that Ferry offers"
            )));
        }
        _ => return Err(garbled()),
    }

    // The request: CONNECT to the target.
    let mut request = vec![5, 1, 0];
    match target {
        SocksTarget::Ip(IpAddr::V4(a)) => {
            request.push(1);
            request.extend_from_slice(&a.octets());
        }
        SocksTarget::Ip(IpAddr::V6(a)) => {
            request.push(4);
            request.extend_from_slice(&a.octets());
        }
        SocksTarget::Name(name) => {
            if name.len() > 255 {
                return Err(TransferError::new(
                    ErrorKind::InvalidRequest,
                    format!("{name} is too long a name for a SOCKS5 proxy (at most 255 bytes)"),
                ));
            }
            request.push(3);
            request.push(name.len() as u8);
            request.extend_from_slice(name.as_bytes());
        }
    }
    request.extend_from_slice(&port.to_be_bytes());
    io.write_all(&request).await.map_err(lost)?;

    // The reply: VER REP RSV ATYP BND.ADDR BND.PORT, read to its end.
    let mut reply = [0u8; 4];
    io.read_exact(&mut reply).await.map_err(lost)?;
    if reply[0] != 5 {
        return Err(garbled());
    }
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            io.read_exact(&mut len).await.map_err(lost)?;
            len[0] as usize + 2
        }
        _ => return Err(garbled()),
    };
    let mut bound = vec![0u8; rest];
    io.read_exact(&mut bound).await.map_err(lost)?;
    let why = match reply[1] {
        0 => return Ok(()),
        1 => "general failure",
        2 => "connection not allowed by its rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "an unknown reply",
    };
    let message = format!("SOCKS5 proxy {proxy} could not connect to {shown}: {why}");
    Err(match reply[1] {
        2 | 7 | 8 => refused(message),
        _ => TransferError::new(ErrorKind::ConnectFailed, message),
    })
}
