//! Which tunnel addresses a host tries, in order: a stable pick from a hash of its host id, then
//! the addresses after it (wrapping), never the subnet's first or last address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use ipnetwork::IpNetwork;

/// The default `--tunnel-subnet`: the shared address space of RFC 6598, unlikely to clash with
/// a LAN's or a Docker network's addresses (it lives only in the tunnel namespace anyway).
pub const DEFAULT_SUBNET: &str = "100.64.0.0/10";

/// The addresses `host` tries in `subnet`, each at most once.
pub fn candidates(subnet: IpNetwork, host: &str) -> Result<impl Iterator<Item = IpAddr>> {
    let bits = match subnet {
        IpNetwork::V4(_) => 32,
        IpNetwork::V6(_) => 128,
    };
    let host_bits = bits - u32::from(subnet.prefix());
    if host_bits < 2 {
        bail!("--tunnel-subnet {subnet} has no room for hosts; give a larger one, e.g. {DEFAULT_SUBNET}");
    }
    // Usable offsets are 1..=size-2; capped so the arithmetic stays in u128.
    let usable: u128 = if host_bits >= 127 { u128::MAX / 2 } else { (1u128 << host_bits) - 2 };
    let start = u128::from(fnv1a(host.as_bytes())) % usable;
    let base = match subnet.network() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let v6 = subnet.is_ipv6();
    let count = usable.min(u128::from(u32::MAX)) as u64;
    Ok((0..count).map(move |i| {
        let offset = 1 + (start + u128::from(i)) % usable;
        let address = base + offset;
        if v6 {
            IpAddr::V6(Ipv6Addr::from(address))
        } else {
            IpAddr::V4(Ipv4Addr::from(address as u32))
        }
    }))
}

/// FNV-1a, 64 bits: stable across builds and platforms (the standard hasher promises neither).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(subnet: &str, host: &str, n: usize) -> Vec<IpAddr> {
        candidates(subnet.parse().unwrap(), host).unwrap().take(n).collect()
    }

    #[test]
    fn stable_inside_and_spread() {
        let subnet: IpNetwork = DEFAULT_SUBNET.parse().unwrap();
        let a = first(DEFAULT_SUBNET, "host-a", 3);
        assert_eq!(a, first(DEFAULT_SUBNET, "host-a", 3), "the same host picks the same addresses");
        assert!(a.iter().all(|ip| subnet.contains(*ip)), "{a:?}");
        assert_ne!(a[0], first(DEFAULT_SUBNET, "host-b", 1)[0], "two hosts start apart");
        // After the pick, the next addresses in turn.
        let next = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) + 1)),
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(a[1], next(a[0]));
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "the published FNV-1a value");
    }

    #[test]
    fn small_subnets_wrap_and_skip_network_and_broadcast() {
        let all = first("10.0.0.0/29", "h1", 100);
        assert_eq!(all.len(), 6, "{all:?}");
        let mut sorted = all.clone();
        sorted.sort();
        let expected: Vec<IpAddr> = (1..=6).map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))).collect();
        assert_eq!(sorted, expected);
        assert_eq!(first("10.0.0.0/30", "x", 9).len(), 2);
        for bad in ["10.0.0.0/31", "10.0.0.1/32"] {
            let err = candidates(bad.parse().unwrap(), "h").err().unwrap().to_string();
            assert!(err.contains("no room for hosts"), "{err}");
        }
        let v6 = first("fd00:77::/64", "h1", 2);
        assert!(v6.iter().all(|ip| "fd00:77::/64".parse::<IpNetwork>().unwrap().contains(*ip)), "{v6:?}");
    }
}
