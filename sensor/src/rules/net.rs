//! IP addresses and CIDR blocks for `ip_in(ip, list)`.

use std::net::IpAddr;

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address matches IPv4 blocks.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// True when `ip` (text) parses and lies in one of `list` (texts); entries that
/// do not parse never match.
pub fn ip_in_list<'a>(ip: &str, list: impl IntoIterator<Item = &'a str>) -> bool {
    let Ok(ip) = ip.trim().parse::<IpAddr>() else {
        return false;
    };
    list.into_iter()
        .filter_map(IpNet::parse)
        .any(|n| n.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        assert!(ip_in_list("10.1.2.3", ["10.0.0.0/8"]));
        assert!(!ip_in_list("11.1.2.3", ["10.0.0.0/8"]));
        assert!(ip_in_list("192.0.2.7", ["192.0.2.7"]));
        assert!(ip_in_list("0.0.0.1", ["0.0.0.0/0"]));
        assert!(ip_in_list("2001:db8::1", ["2001:db8::/32"]));
        assert!(!ip_in_list("2001:db9::1", ["2001:db8::/32"]));
        assert!(ip_in_list("::ffff:127.0.0.1", ["127.0.0.0/8"]));
        assert!(!ip_in_list("garbage", ["0.0.0.0/0"]));
        assert!(!ip_in_list("10.0.0.1", ["10.0.0.0/33", "nope"]));
        assert!(ip_in_list("::1", ["::1/128"]));
    }
}
