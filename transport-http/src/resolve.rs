//! Name resolution as both transports do it (HTTP/3 in transport-quic too):
//! the configuration's `--resolve` overrides first, IP literals as they are,
//! else a lookup that must end by the connect deadline.
//!
//! The lookup is the system's `getaddrinfo` (so `/etc/hosts` and
//! `nsswitch.conf` count), called through `dns-lookup` because its error
//! code is what tells a name that does not exist (permanent) from a
//! resolver that did not answer (worth retrying); the standard library's
//! lookup keeps only the message.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dns_lookup::{LookupError, LookupErrorKind};
use tokio::time::{Instant, timeout_at};
use transfer_core::{ErrorKind, TimeoutKind, TransferError};

use crate::HttpConfig;

/// The addresses of `host` (lowercase, without brackets) on `port`: the
/// `config`'s `--resolve` overrides for `host` on `port`
/// ([`HttpConfig::resolve`]), an IP literal as is, else a lookup of `host`
/// that must end by `deadline`; with the lookup's time when there was one.
///
/// A name that does not exist, or has no address, is an
/// [`ErrorKind::NoSuchHost`] error ("cannot resolve HOST"); a resolver
/// that failed or could not be reached an [`ErrorKind::Dns`] one; a lookup
/// that runs past `deadline` a `Timeout(Dns)`. All three are
/// [`TransferError::is_dns`].
pub async fn lookup(
    config: &HttpConfig,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<(Vec<SocketAddr>, Option<Duration>), TransferError> {
    if let Some(ips) = config.resolve.get(&(host.to_owned(), port)) {
        let addrs = ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        return Ok((addrs, None));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((vec![SocketAddr::new(ip, port)], None));
    }
    let t = Instant::now();
    let name = host.to_owned();
    let found = timeout_at(
        deadline,
        tokio::task::spawn_blocking(move || {
            dns_lookup::lookup_host(&name).map(|ips| ips.collect::<Vec<IpAddr>>())
        }),
    )
    .await
    .map_err(|_| {
        TransferError::new(
            ErrorKind::Timeout(TimeoutKind::Dns),
            format!("resolving {host} timed out"),
        )
    })?
    .map_err(|e| TransferError::new(ErrorKind::Dns, format!("resolving {host}: {e}")))?
    .map_err(|e| failure(host, &e))?;
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(found.len());
    for ip in found {
        let addr = SocketAddr::new(ip, port);
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(TransferError::new(
            ErrorKind::NoSuchHost,
            format!("cannot resolve {host} (it has no addresses)"),
        ));
    }
    Ok((addrs, Some(t.elapsed())))
}

/// What a failed `getaddrinfo` means for the transfer, in words.
fn failure(host: &str, e: &LookupError) -> TransferError {
    let text = e.to_string();
    let reason = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    match kind_of(e.kind()) {
        ErrorKind::NoSuchHost => TransferError::new(
            ErrorKind::NoSuchHost,
            format!("cannot resolve {host} ({reason})"),
        ),
        kind => TransferError::new(kind, format!("resolving {host}: {reason}")),
    }
}

/// The kind of error a `getaddrinfo` failure is. Only an answer that the
/// name does not exist (`EAI_NONAME`: NXDOMAIN, or not in `/etc/hosts`
/// either) or has no address (`EAI_NODATA`) is permanent: a resolver that
/// timed out or could not be reached (`EAI_AGAIN`), failed for good as far
/// as it knows (`EAI_FAIL`, often a server refusing or failing the query,
/// which passes) or a local failure (`EAI_SYSTEM`, `EAI_MEMORY`, …) is
/// worth retrying.
fn kind_of(kind: LookupErrorKind) -> ErrorKind {
    match kind {
        LookupErrorKind::NoName | LookupErrorKind::NoData => ErrorKind::NoSuchHost,
        LookupErrorKind::Again
        | LookupErrorKind::Fail
        | LookupErrorKind::Badflags
        | LookupErrorKind::Family
        | LookupErrorKind::Socktype
        | LookupErrorKind::Service
        | LookupErrorKind::Memory
        | LookupErrorKind::System
        | LookupErrorKind::Unknown
        | LookupErrorKind::IO => ErrorKind::Dns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_name_that_does_not_exist_or_has_no_address_is_permanent() {
        use LookupErrorKind::*;
        for k in [NoName, NoData] {
            assert_eq!(kind_of(k), ErrorKind::NoSuchHost, "{k:?}");
            assert!(!TransferError::new(kind_of(k), "").is_retryable(), "{k:?}");
        }
        for k in [
            Again, Fail, Badflags, Family, Socktype, Service, Memory, System, Unknown, IO,
        ] {
            assert_eq!(kind_of(k), ErrorKind::Dns, "{k:?}");
            assert!(TransferError::new(kind_of(k), "").is_retryable(), "{k:?}");
        }
    }

    #[test]
    fn an_override_applies_to_its_host_and_port_only_and_keeps_every_address() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let v6: SocketAddr = "[::1]:8443".parse().unwrap();
        let v4: SocketAddr = "127.0.0.2:8443".parse().unwrap();
        let config = HttpConfig::default()
            .resolve("Origin.Test", v6)
            .resolve("origin.test", v4);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (addrs, dns) = rt
            .block_on(lookup(&config, "origin.test", 8443, deadline))
            .unwrap();
        assert_eq!(addrs, vec![v6, v4]);
        assert_eq!(dns, None, "no lookup for an override");
        // Another port of the same host is resolved: `.invalid` never is.
        let config = HttpConfig::default().resolve("nonexistent.invalid", v4);
        let e = rt
            .block_on(lookup(&config, "nonexistent.invalid", 443, deadline))
            .expect_err("the override is for port 8443 only");
        assert!(e.is_dns(), "{e}");
    }
}
