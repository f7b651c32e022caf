//! Gratuitous ARP: "this address is now at this MAC", broadcast on a link of the calling
//! thread's namespace. Hosts update the entries they already have for the address.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use nix::libc;

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame holding an ARP reply from `ip` at `mac` to everyone (60 bytes: the minimum
/// Ethernet payload, padded).
pub fn frame(ip: Ipv4Addr, mac: [u8; 6]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&2u16.to_be_bytes()); // reply
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // A gratuitous reply names the sender as the target too (else Linux doesn't take it as one).
    f[32..38].copy_from_slice(&mac);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends one gratuitous ARP per entry out of link `ifindex`.
pub fn send(ifindex: u32, entries: &[(Ipv4Addr, [u8; 6])]) -> Result<()> {
    // SAFETY: plain socket calls on a descriptor owned here and closed before returning; the
    // address and buffers outlive the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ARP.to_be()));
        if fd < 0 {
            bail!("opening a packet socket: {}", std::io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&BROADCAST);
        let mut result = Ok(());
        for (ip, mac) in entries {
            let f = frame(*ip, *mac);
            let sent = libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent < 0 {
                result = Err(anyhow::anyhow!("sending gratuitous ARP for {ip}: {}", std::io::Error::last_os_error()));
            }
        }
        libc::close(fd);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_reply_layout() {
        let f = frame(Ipv4Addr::new(10, 9, 0, 2), [2, 0x42, 10, 9, 0, 2]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 2], "a reply, which a VXLAN link answering ARP drops");
        assert_eq!(&f[28..32], &[10, 9, 0, 2], "sender address");
        assert_eq!(&f[38..42], &[10, 9, 0, 2], "target address: the same");
        assert_eq!(&f[32..38], &f[22..28], "target MAC: the same");
        assert!(f[42..].iter().all(|b| *b == 0));
    }
}
