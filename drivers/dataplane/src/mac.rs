//! Ethernet addresses for endpoints.

use std::io::Read;
use std::net::Ipv4Addr;

use anyhow::{bail, Result};

/// Docker 20.10's scheme: 02:42 followed by the IPv4 address, so an address keeps its MAC (and
/// neighbours' ARP caches stay right) across container restarts. Without IPv4, a random
/// locally administered unicast address.
pub fn for_endpoint(ipv4: Option<Ipv4Addr>) -> [u8; 6] {
    match ipv4 {
        Some(ip) => {
            let [a, b, c, d] = ip.octets();
            [0x02, 0x42, a, b, c, d]
        }
        None => {
            let mut mac = [0u8; 6];
            let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut mac));
            mac[0] = (mac[0] & 0xfe) | 0x02;
            mac
        }
    }
}

/// A bridge's own address, derived from its owner tag (so a bridge made again after a restart
/// gets the same one), locally administered unicast. A bridge whose address was given stays at
/// it; one left to the kernel takes the lowest address among its ports, which changes as
/// containers come and go (stale gateway entries in the containers' ARP caches), and is
/// recomputed over every port at each attach and detach.
pub fn for_bridge(owner: &str) -> [u8; 6] {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let hash =
        owner.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
    let b = hash.to_be_bytes();
    // 0x06: locally administered unicast, and never the 02:42 prefix of endpoint addresses.
    [0x06, b[1], b[2], b[3], b[4], b[5]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

pub fn parse(text: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        bail!("MAC address {text:?} does not have six parts");
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        match u8::from_str_radix(part, 16) {
            Ok(b) if part.len() == 2 => *byte = b,
            _ => bail!("MAC address {text:?} has a bad part {part:?}"),
        }
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_style_and_random() {
        assert_eq!(format(&for_endpoint(Some(Ipv4Addr::new(172, 18, 0, 2)))), "02:42:ac:12:00:02");
        let random = for_endpoint(None);
        assert_eq!(random[0] & 0x03, 0x02, "locally administered unicast: {}", format(&random));
    }

    #[test]
    fn bridge_addresses_are_stable_per_owner() {
        let a = for_bridge("netloom:bridge:n1");
        assert_eq!(a, for_bridge("netloom:bridge:n1"));
        assert_ne!(a, for_bridge("netloom:bridge:n2"));
        assert_eq!(a[0], 0x06);
    }

    #[test]
    fn parse_round_trips_and_rejects_junk() {
        assert_eq!(parse("02:42:AC:12:00:02").unwrap(), [2, 0x42, 0xac, 0x12, 0, 2]);
        for bad in ["", "02:42:ac:12:00", "02:42:ac:12:00:2", "02:42:ac:12:00:zz", "02-42-ac-12-00-02"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
