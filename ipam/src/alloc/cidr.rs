//! Subnets as integer intervals: both families map onto u128 so every allocator works on numbers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn u128_to_ip(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// A CIDR block, always stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subnet {
    family: Family,
    first: u128,
    prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len` or `v6/len`; host bits are cleared (`10.1.2.3/24` is `10.1.2.0/24`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.contains('/') {
            return Err(format!("{text:?} is not a subnet: expected CIDR notation such as 10.1.0.0/16"));
        }
        let net: IpNetwork = text.parse().map_err(|_| {
            format!("{text:?} is not a subnet: expected CIDR notation such as 10.1.0.0/16 or fd00::/64")
        })?;
        if net.prefix() == 0 {
            return Err(format!("{text:?}: a /0 pool covers the whole address family; use a smaller subnet"));
        }
        Ok(Self::new(net.ip(), net.prefix()))
    }

    /// A `prefix` longer than the family allows is shortened to the family's width.
    pub fn new(ip: IpAddr, prefix: u8) -> Self {
        Self::from_bounds(Family::of(ip), ip_to_u128(ip), prefix)
    }

    pub fn from_bounds(family: Family, first: u128, prefix: u8) -> Self {
        let prefix = prefix.min(family.bits());
        Self { family, first: first & !host_mask(family, prefix), prefix }
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn first(&self) -> u128 {
        self.first
    }

    pub fn last(&self) -> u128 {
        self.first | host_mask(self.family, self.prefix)
    }

    pub fn network(&self) -> IpAddr {
        u128_to_ip(self.family, self.first)
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last()).contains(&ip_to_u128(ip))
    }

    pub fn contains(&self, other: &Subnet) -> bool {
        self.family == other.family && self.first <= other.first && other.last() <= self.last()
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.family == other.family && self.first <= other.last() && other.first <= self.last()
    }

    /// The assignable addresses: IPv4 loses its network and broadcast addresses and IPv6 its
    /// subnet-router anycast address, except in /31, /32, /127 and /128 where every address counts.
    pub fn usable(&self) -> (u128, u128) {
        let host_bits = self.family.bits() - self.prefix;
        match (self.family, host_bits) {
            (_, 0 | 1) => (self.first, self.last()),
            (Family::V4, _) => (self.first + 1, self.last() - 1),
            (Family::V6, _) => (self.first + 1, self.last()),
        }
    }

    /// Why `ip` can't be assigned in this subnet even though it is inside it, if it can't.
    pub fn reserved_reason(&self, ip: IpAddr) -> Option<&'static str> {
        let v = ip_to_u128(ip);
        let (lo, hi) = self.usable();
        if v >= lo && v <= hi {
            return None;
        }
        Some(match (self.family, v == self.first) {
            (Family::V4, true) => "the network address",
            (Family::V4, false) => "the broadcast address",
            (Family::V6, _) => "the subnet-router anycast address",
        })
    }

    /// `10.1.0.0_16`: the subnet as one store key segment.
    pub fn key(&self) -> String {
        format!("{}_{}", self.network(), self.prefix)
    }

    pub fn to_ipnetwork(&self) -> IpNetwork {
        IpNetwork::new(self.network(), self.prefix).expect("prefix is within the family's width")
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

fn host_mask(family: Family, prefix: u8) -> u128 {
    let host_bits = u32::from(family.bits().saturating_sub(prefix));
    if host_bits == 0 {
        0
    } else {
        u128::MAX >> (128 - host_bits)
    }
}

/// Parses a plain address (no prefix length).
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    let text = text.trim();
    text.parse::<IpAddr>().map_err(|_| {
        if text.contains('/') {
            format!("{text:?}: expected a plain address without a prefix length")
        } else {
            format!("{text:?} is not an IP address")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Subnet {
        Subnet::parse(t).unwrap()
    }

    #[test]
    fn parse_normalises() {
        assert_eq!(s("10.1.2.3/24").to_string(), "10.1.2.0/24");
        assert_eq!(s(" fd00::1/64 ").to_string(), "fd00::/64");
        assert_eq!(s("10.0.0.0/8").key(), "10.0.0.0_8");
        assert_eq!(s("fd00::/64").key(), "fd00::_64");
        for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "x/8", "0.0.0.0/0", "::/0", ""] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounds_and_usable() {
        let n = s("10.1.2.0/29");
        assert_eq!(u128_to_ip(Family::V4, n.first()).to_string(), "10.1.2.0");
        assert_eq!(u128_to_ip(Family::V4, n.last()).to_string(), "10.1.2.7");
        let (lo, hi) = n.usable();
        assert_eq!((hi - lo + 1), 6);
        assert_eq!(s("10.1.2.0/31").usable(), (s("10.1.2.0/31").first(), s("10.1.2.0/31").last()));
        assert_eq!(s("10.1.2.9/32").usable().0, s("10.1.2.9/32").last());
        let v6 = s("fd00::/120");
        assert_eq!(v6.usable(), (v6.first() + 1, v6.last()));
        let top = s("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120");
        assert_eq!(top.last(), u128::MAX);
        let half = s("8000::/1");
        assert_eq!(half.last(), u128::MAX);
    }

    #[test]
    fn reserved_reasons() {
        let n = s("10.1.2.0/24");
        assert_eq!(n.reserved_reason("10.1.2.0".parse().unwrap()), Some("the network address"));
        assert_eq!(n.reserved_reason("10.1.2.255".parse().unwrap()), Some("the broadcast address"));
        assert_eq!(n.reserved_reason("10.1.2.1".parse().unwrap()), None);
        assert_eq!(
            s("fd00::/64").reserved_reason("fd00::".parse().unwrap()),
            Some("the subnet-router anycast address")
        );
    }

    #[test]
    fn containment_and_overlap() {
        let big = s("10.1.0.0/16");
        assert!(big.contains(&s("10.1.5.0/24")));
        assert!(!big.contains(&s("10.0.0.0/8")));
        assert!(big.overlaps(&s("10.0.0.0/8")));
        assert!(!big.overlaps(&s("10.2.0.0/16")));
        assert!(!big.overlaps(&s("fd00::/64")));
        assert!(big.contains_ip("10.1.255.255".parse().unwrap()));
        assert!(!big.contains_ip("10.2.0.0".parse().unwrap()));
        assert!(!big.contains_ip("::1".parse().unwrap()));
    }

    #[test]
    fn plain_ips() {
        assert!(parse_ip("10.0.0.1").is_ok());
        assert!(parse_ip("fd00::1").is_ok());
        assert!(parse_ip("10.0.0.1/24").unwrap_err().contains("without a prefix"));
        assert!(parse_ip("nope").unwrap_err().contains("not an IP"));
    }
}
