//! ICMP echo to tunnel endpoints: whether a host whose driver stopped renewing its lease is still
//! there. A raw socket per address family (the driver runs as root); replies are told apart from
//! other pings by the identifier, and from other hosts by their source.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::libc;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const PAYLOAD: &[u8; 8] = b"netloom\0";

static SEQUENCE: AtomicU16 = AtomicU16::new(1);

/// The targets that answered an echo request within `wait`. Blocking: run it off the runtime.
pub fn answering(targets: &BTreeSet<IpAddr>, wait: Duration) -> Result<BTreeSet<IpAddr>> {
    let v4: BTreeSet<IpAddr> = targets.iter().filter(|t| t.is_ipv4()).copied().collect();
    let v6: BTreeSet<IpAddr> = targets.iter().filter(|t| t.is_ipv6()).copied().collect();
    let mut answered = BTreeSet::new();
    for family in [v4, v6].into_iter().filter(|f| !f.is_empty()) {
        answered.extend(ping_family(&family, wait)?);
    }
    Ok(answered)
}

/// An echo request: type, code 0, checksum, identifier, sequence, payload.
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if !v6 {
        // ICMPv6's checksum covers a pseudo-header: the kernel fills it in for raw ICMPv6 sockets.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The identifier of an echo reply in `data` (an IPv4 raw socket's data starts with the IP
/// header, an IPv6 one's with the ICMPv6 header), or None for anything else.
pub fn reply_id(v6: bool, data: &[u8]) -> Option<u16> {
    let icmp = if v6 {
        data
    } else {
        let header = usize::from(data.first()? & 0x0f) * 4;
        data.get(header..)?
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    (icmp.len() >= 8 && icmp[0] == want && icmp[1] == 0).then(|| u16::from_be_bytes([icmp[4], icmp[5]]))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw socket closed when dropped.
struct Fd(i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor was opened by this module and is closed once.
        unsafe { libc::close(self.0) };
    }
}

fn ping_family(targets: &BTreeSet<IpAddr>, wait: Duration) -> Result<BTreeSet<IpAddr>> {
    let v6 = targets.iter().next().is_some_and(IpAddr::is_ipv6);
    let (domain, protocol) =
        if v6 { (libc::AF_INET6, libc::IPPROTO_ICMPV6) } else { (libc::AF_INET, libc::IPPROTO_ICMP) };
    // SAFETY: plain socket calls on a descriptor owned by `fd`; every buffer and address outlives
    // the call that reads or writes it, with its true length passed along.
    unsafe {
        let raw = libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol);
        if raw < 0 {
            bail!("opening a raw ICMP socket: {}", std::io::Error::last_os_error());
        }
        let fd = Fd(raw);
        let step = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&step as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        let id = (std::process::id() as u16) ^ 0x6e6c;
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let packet = echo_request(v6, id, seq);
        for target in targets {
            let mut addr: libc::sockaddr_storage = std::mem::zeroed();
            let len = write_sockaddr(&mut addr, *target);
            let sent = libc::sendto(
                fd.0,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_storage).cast(),
                len,
            );
            if sent < 0 {
                // Unreachable right now (no route, link down): that target simply won't answer.
                tracing::debug!(target = %target, "echo request not sent: {}", std::io::Error::last_os_error());
            }
        }
        let mut answered = BTreeSet::new();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline && answered.len() < targets.len() {
            let mut from: libc::sockaddr_storage = std::mem::zeroed();
            let mut from_len = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            let got = libc::recvfrom(
                fd.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut from_len,
            );
            if got <= 0 {
                continue;
            }
            let Some(source) = read_sockaddr(&from) else { continue };
            if targets.contains(&source) && reply_id(v6, &buf[..got as usize]) == Some(id) {
                answered.insert(source);
            }
        }
        Ok(answered)
    }
}

fn write_sockaddr(storage: &mut libc::sockaddr_storage, ip: IpAddr) -> u32 {
    // SAFETY: sockaddr_storage is large enough and suitably aligned for either address type.
    unsafe {
        match ip {
            IpAddr::V4(v4) => {
                let addr = &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                addr.sin_family = libc::AF_INET as u16;
                addr.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                std::mem::size_of::<libc::sockaddr_in>() as u32
            }
            IpAddr::V6(v6) => {
                let addr = &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                addr.sin6_family = libc::AF_INET6 as u16;
                addr.sin6_addr.s6_addr = v6.octets();
                std::mem::size_of::<libc::sockaddr_in6>() as u32
            }
        }
    }
}

fn read_sockaddr(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    // SAFETY: the family field says which address type the storage holds.
    unsafe {
        match i32::from(storage.ss_family) {
            libc::AF_INET => {
                let addr = &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(Ipv4Addr::from(addr.sin_addr.s_addr.to_ne_bytes())))
            }
            libc::AF_INET6 => {
                let addr = &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(IpAddr::V6(Ipv6Addr::from(addr.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_packets() {
        let request = echo_request(false, 0x1234, 7);
        assert_eq!(&request[..2], &[8, 0]);
        assert_eq!(checksum(&request), 0, "a packet with its checksum sums to zero");
        assert_eq!(&request[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(&echo_request(true, 1, 1)[..4], &[128, 0, 0, 0], "the kernel fills in ICMPv6's checksum");

        // An IPv4 reply as the raw socket sees it: a 20-byte IP header first.
        let mut reply = vec![0x45; 1];
        reply.extend_from_slice(&[0; 19]);
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert_eq!(reply_id(false, &reply), Some(0x1234));
        reply[20] = 8;
        assert_eq!(reply_id(false, &reply), None, "a request is not a reply");
        assert_eq!(reply_id(true, &[129, 0, 0, 0, 0xab, 0xcd, 0, 1]), Some(0xabcd));
        assert_eq!(reply_id(true, &[129, 0, 0]), None);
        assert_eq!(reply_id(false, &[]), None);
    }

    #[test]
    fn loopback_answers_and_an_unrouted_address_does_not() {
        // In a network namespace of its own: only `lo`, so 10.250.0.9 has no route at all.
        netloom_driver_kit::testing::in_new_netns(|| {
            Box::pin(async {
                let netlink = netloom_dataplane::Netlink::connect().unwrap();
                let lo = netlink.link("lo").await.unwrap().unwrap();
                netlink.set_up(&lo).await.unwrap();
                let targets: BTreeSet<IpAddr> = ["127.0.0.1".parse().unwrap(), "10.250.0.9".parse().unwrap()].into();
                let answered = answering(&targets, Duration::from_millis(500)).unwrap();
                assert_eq!(answered, ["127.0.0.1".parse().unwrap()].into());
            })
        });
    }
}
