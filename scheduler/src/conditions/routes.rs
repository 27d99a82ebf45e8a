//! Which interface carries the default route, from the kernel's IPv4 and
//! IPv6 routing tables (`proc/net/route`, `proc/net/ipv6_route`).
//!
//! Why both: a network that hands out only IPv6 addresses (many cellular
//! networks, some offices) has no IPv4 default route at all; reading only
//! the IPv4 table would call it "no network" and nothing would ever run.

use std::path::Path;

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_REJECT`: the route refuses traffic (an `unreachable` route; the
/// kernel lists one through `lo` as the IPv6 table's fallback).
const RTF_REJECT: u32 = 0x0200;

/// The interface of the default route: the IPv4 table's route with the
/// lowest metric if it has one, else the IPv6 table's. `None` when neither
/// table has a usable default route, `Err` when there is none in the IPv6
/// table (or no IPv6 table) and the IPv4 table cannot be read.
///
/// IPv4 goes first because the two tables' metrics do not compare (the
/// kernel puts IPv6 routes it adds itself at 1024, IPv4 ones at 0), and a
/// machine with both families usually has both on the same interface. A
/// missing IPv6 table is a kernel without IPv6, not an error.
pub(super) fn default_interface(root: &Path) -> Result<Option<String>, ()> {
    let v4 = std::fs::read_to_string(root.join("proc/net/route"))
        .map(|table| lowest(ipv4_defaults(&table)));
    if let Ok(Some(iface)) = v4 {
        return Ok(Some(iface));
    }
    let v6 = std::fs::read_to_string(root.join("proc/net/ipv6_route"))
        .ok()
        .and_then(|table| lowest(ipv6_defaults(&table)));
    match (v4, v6) {
        (_, Some(iface)) => Ok(Some(iface)),
        (Ok(_), None) => Ok(None),
        (Err(_), None) => Err(()),
    }
}

/// The interface of the route with the lowest metric among `routes`.
fn lowest(routes: impl Iterator<Item = (u32, String)>) -> Option<String> {
    routes.min().map(|(_, iface)| iface)
}

/// Whether a route with these flags through `iface` can carry traffic.
fn usable(flags: u32, iface: &str) -> bool {
    flags & RTF_UP != 0 && flags & RTF_REJECT == 0 && iface != "lo"
}

/// `(metric, interface)` of each usable default route in the IPv4 table:
/// a header line, then `Iface Destination Gateway Flags RefCnt Use Metric
/// Mask MTU Window IRTT`, addresses and flags in hex, the metric in
/// decimal.
fn ipv4_defaults(table: &str) -> impl Iterator<Item = (u32, String)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (iface, dest, flags, metric) = (f.first()?, f.get(1)?, f.get(3)?, f.get(6)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        let metric: u32 = metric.parse().ok()?;
        (*dest == "00000000" && usable(flags, iface)).then(|| (metric, (*iface).to_owned()))
    })
}

/// `(metric, interface)` of each usable default route (`::/0`) in the IPv6
/// table: no header, then `destination prefix-length source
/// source-prefix-length next-hop metric refcount use flags interface`, all
/// numbers in hex.
fn ipv6_defaults(table: &str) -> impl Iterator<Item = (u32, String)> + '_ {
    table.lines().filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, len, metric, flags, iface) =
            (f.first()?, f.get(1)?, f.get(5)?, f.get(8)?, f.get(9)?);
        let default = dest.len() == 32 && dest.bytes().all(|b| b == b'0') && *len == "00";
        let metric = u32::from_str_radix(metric, 16).ok()?;
        let flags = u32::from_str_radix(flags, 16).ok()?;
        (default && usable(flags, iface)).then(|| (metric, (*iface).to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kind of table: a default route through `eth0` by a
    /// gateway, the kernel's reject route through `lo`, and others.
    const IPV6: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001       lo
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";

    #[test]
    fn the_ipv6_default_route_is_read_with_its_hex_metric() {
        let routes: Vec<_> = ipv6_defaults(IPV6).collect();
        assert_eq!(routes, vec![(0x400, "eth0".to_owned())]);
    }

    #[test]
    fn the_kernels_reject_route_through_lo_is_no_default_route() {
        let reject = IPV6.lines().last().unwrap_or_default();
        assert_eq!(ipv6_defaults(reject).count(), 0);
        // Flags without RTF_REJECT, but through lo: still not a way out.
        let lo = reject.replace("00200200", "00000003");
        assert_eq!(ipv6_defaults(&lo).count(), 0);
        // Through a real interface, but down.
        let down = IPV6
            .lines()
            .nth(1)
            .unwrap_or_default()
            .replace("00000003     eth0", "00000002     eth0");
        assert_eq!(ipv6_defaults(&down).count(), 0);
    }
}
