//! The key layout under the store prefix (default `/netloom/v1/`); KEYS.md describes it.

use std::net::IpAddr;

use netloom_store::percent_encode;

use super::cidr::Subnet;

pub const HOSTS: &str = "hosts/";
pub const POOLS: &str = "ipam/pools/";
pub const ADDRS: &str = "ipam/addrs/";
pub const VNI_BITS: &str = "ipam/vnis/bits/";
pub const VNI_IDS: &str = "ipam/vnis/ids/";
pub const VNI_OWNERS: &str = "ipam/vnis/owners/";

pub fn host(host_id: &str) -> String {
    format!("{HOSTS}{host_id}")
}

pub fn space_index(space: &str) -> String {
    format!("ipam/spaces/{space}")
}

pub fn pool(space: &str, subnet: &Subnet) -> String {
    format!("{POOLS}{space}/{}", subnet.key())
}

/// Everything about one pool's addresses; deleted with the pool.
pub fn addr_root(space: &str, subnet: &Subnet) -> String {
    format!("{ADDRS}{space}/{}/", subnet.key())
}

pub fn addr_bits(space: &str, subnet: &Subnet) -> String {
    format!("{}bits/", addr_root(space, subnet))
}

pub fn addr_owners(space: &str, subnet: &Subnet) -> String {
    format!("{}ips/", addr_root(space, subnet))
}

pub fn addr_owner(space: &str, subnet: &Subnet, ip: IpAddr) -> String {
    format!("{}{ip}", addr_owners(space, subnet))
}

pub fn chunk(prefix: &str, index: u128) -> String {
    format!("{prefix}{index:x}")
}

pub fn parse_chunk(prefix: &str, key: &str) -> Option<u128> {
    u128::from_str_radix(key.strip_prefix(prefix)?, 16).ok()
}

pub fn vni_id(vni: u32) -> String {
    format!("{VNI_IDS}{vni}")
}

pub fn vni_owner(owner: &str) -> String {
    format!("{VNI_OWNERS}{}", escape(owner))
}

/// Percent-encodes anything but letters, digits and `._-:` so a free-form name is one key segment.
pub fn escape(s: &str) -> String {
    percent_encode(s, b"._-:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let net = Subnet::parse("10.1.0.0/16").unwrap();
        assert_eq!(pool("LocalDefault", &net), "ipam/pools/LocalDefault/10.1.0.0_16");
        assert_eq!(addr_bits("LocalDefault", &net), "ipam/addrs/LocalDefault/10.1.0.0_16/bits/");
        assert_eq!(
            addr_owner("LocalDefault", &net, "10.1.0.5".parse().unwrap()),
            "ipam/addrs/LocalDefault/10.1.0.0_16/ips/10.1.0.5"
        );
        assert_eq!(chunk("p/", 255), "p/ff");
        assert_eq!(parse_chunk("p/", "p/ff"), Some(255));
        assert_eq!(parse_chunk("p/", "q/ff"), None);
        assert_eq!(vni_owner("net/one two"), "ipam/vnis/owners/net%2Fone%20two");
        // A pool's keys never share a prefix with a longer-prefixed neighbour.
        let (wide, narrow) = (Subnet::parse("0.0.0.0/1").unwrap(), Subnet::parse("0.0.0.0/16").unwrap());
        assert!(!addr_root("s", &narrow).starts_with(&addr_root("s", &wide)));
    }
}
