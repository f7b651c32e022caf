//! Many WireGuard datagrams per system call: equal-sized datagrams to one endpoint leave in one
//! `sendmsg` with UDP segmentation offload (the kernel cuts them apart as late as it can), and
//! datagrams from one sender arrive coalesced by UDP GRO, cut apart here. A bulk TCP stream
//! through the tunnel is a run of equal-sized packets, so this halves the per-packet work.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Segments the kernel accepts in one segmented send.
const MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one (segmented) send.
const MAX_PAYLOAD: usize = 65_507;

/// Asks the kernel to coalesce arriving datagrams; false when it cannot (older kernels), and
/// then every datagram arrives alone, which [`recv`] handles the same.
pub(crate) fn enable_gro(socket: &UdpSocket) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and an int option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            &on as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Datagrams waiting to leave, laid end to end in one buffer, in the order they were added.
pub(crate) struct Outbox {
    pub(crate) buffer: Vec<u8>,
    /// (endpoint, start, length) of each datagram in `buffer`.
    pending: Vec<(SocketAddr, usize, usize)>,
    used: usize,
    segmentation: bool,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox { buffer: vec![0; capacity], pending: Vec::new(), used: 0, segmentation: true }
    }

    /// Free room at the end of the buffer, for the next datagram to be written into.
    pub(crate) fn room(&mut self) -> &mut [u8] {
        &mut self.buffer[self.used..]
    }

    pub(crate) fn free(&self) -> usize {
        self.buffer.len() - self.used
    }

    /// The datagram just written at the start of `room()`, `len` bytes, is for `to`.
    pub(crate) fn push(&mut self, to: SocketAddr, len: usize) {
        self.pending.push((to, self.used, len));
        self.used += len;
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Sends everything: runs of equal-sized datagrams to one endpoint (the last may be shorter)
    /// as one segmented send, the rest one by one. Returns (datagrams sent, datagrams lost) and
    /// calls `sent` with each datagram that left.
    pub(crate) fn flush(&mut self, socket: &UdpSocket, mut sent: impl FnMut(&[u8])) -> (usize, usize) {
        let (mut ok, mut lost) = (0, 0);
        let mut i = 0;
        while i < self.pending.len() {
            let (to, start, size) = self.pending[i];
            let mut end = i + 1;
            let mut total = size;
            if self.segmentation {
                while end < self.pending.len() && end - i < MAX_SEGMENTS {
                    let (next_to, next_start, next_size) = self.pending[end];
                    let contiguous = next_start == start + total;
                    if next_to != to || !contiguous || next_size > size || total + next_size > MAX_PAYLOAD {
                        break;
                    }
                    total += next_size;
                    end += 1;
                    if next_size < size {
                        break;
                    }
                }
            }
            let run = &self.buffer[start..start + total];
            let result = if end - i > 1 { send_segmented(socket, run, size, to) } else { socket.send_to(run, to) };
            match result {
                Ok(_) => {
                    ok += end - i;
                    for &(_, s, len) in &self.pending[i..end] {
                        sent(&self.buffer[s..s + len]);
                    }
                    i = end;
                }
                Err(e) if end - i > 1 && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                    // No segmentation offload on this path: one by one from now on.
                    self.segmentation = false;
                }
                Err(_) => {
                    lost += end - i;
                    i = end;
                }
            }
        }
        self.pending.clear();
        self.used = 0;
        (ok, lost)
    }
}

fn send_segmented(socket: &UdpSocket, data: &[u8], segment: usize, to: SocketAddr) -> io::Result<usize> {
    let (mut address, address_len) = sockaddr_of(to);
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer in it refers to a live local for the call, and
    // the control buffer has room for the one header written into it.
    unsafe {
        let mut message: libc::msghdr = zeroed();
        message.msg_name = &mut address as *mut libc::sockaddr_storage as *mut libc::c_void;
        message.msg_namelen = address_len;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_UDP;
        (*header).cmsg_type = libc::UDP_SEGMENT;
        (*header).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut u16, segment as u16);
        let rc = libc::sendmsg(socket.as_raw_fd(), &message, 0);
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

/// Receives one datagram, or several coalesced by GRO: (bytes, sender, segment size); the
/// bytes hold consecutive datagrams of `segment` bytes (the last may be shorter). `flags` as
/// recvmsg(2) takes them (MSG_DONTWAIT: only what is there).
pub(crate) fn recv(
    socket: &UdpSocket,
    buffer: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, SocketAddr, usize)> {
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr() as *mut libc::c_void, iov_len: buffer.len() };
    // SAFETY: as in send_segmented; the kernel writes at most the lengths given.
    unsafe {
        let mut address: libc::sockaddr_storage = zeroed();
        let space = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as usize;
        let mut control = [0u8; 64];
        let mut message: libc::msghdr = zeroed();
        message.msg_name = &mut address as *mut libc::sockaddr_storage as *mut libc::c_void;
        message.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        message.msg_controllen = space.min(control.len()) as _;
        let rc = libc::recvmsg(socket.as_raw_fd(), &mut message, flags);
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = rc as usize;
        let mut segment = len;
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_UDP && (*header).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(header) as *const u16) as usize;
                if size > 0 {
                    segment = size;
                }
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        let from = socket_addr_of(&address)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram from an unknown address family"))?;
        Ok((len, from, segment))
    }
}

fn sockaddr_of(address: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, large and aligned enough for either family.
    unsafe {
        let mut storage: libc::sockaddr_storage = zeroed();
        let len = match address {
            SocketAddr::V4(v4) => {
                let out = &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in);
                out.sin_family = libc::AF_INET as libc::sa_family_t;
                out.sin_port = v4.port().to_be();
                out.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) };
                size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                let out = &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6);
                out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                out.sin6_port = v6.port().to_be();
                out.sin6_flowinfo = v6.flowinfo();
                out.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
                out.sin6_scope_id = v6.scope_id();
                size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }
}

fn socket_addr_of(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field says which sockaddr the storage holds.
    unsafe {
        match storage.ss_family as libc::c_int {
            libc::AF_INET => {
                let v4 = &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(v4.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
            }
            libc::AF_INET6 => {
                let v6 = &*(storage as *const libc::sockaddr_storage as *const libc::sockaddr_in6);
                let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(v6.sin6_port),
                    v6.sin6_flowinfo,
                    v6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_run_of_datagrams_leaves_in_one_send_and_arrives_whole() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let gro = enable_gro(&receiver);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let mut outbox = Outbox::new(1 << 17);
        // Ten of 1000 bytes, one of 300 (ends the run), then one of 1000 again.
        for (n, size) in (0..10).map(|n| (n, 1000)).chain([(10, 300), (11, 1000)]) {
            outbox.room()[..size].fill(n as u8);
            outbox.push(to, size);
        }
        let mut seen = 0;
        assert_eq!(outbox.flush(&sender, |_| seen += 1), (12, 0));
        assert_eq!(seen, 12);
        assert!(outbox.is_empty());
        let mut buffer = vec![0u8; 1 << 17];
        let mut datagrams = Vec::new();
        while datagrams.len() < 12 {
            let (len, from, segment) = recv(&receiver, &mut buffer, 0).unwrap();
            assert_eq!(from, sender.local_addr().unwrap());
            datagrams.extend(buffer[..len].chunks(segment).map(|d| (d.len(), d[0])));
        }
        let expected: Vec<(usize, u8)> = (0..10).map(|n| (1000, n)).chain([(300, 10), (1000, 11)]).collect();
        assert_eq!(datagrams, expected, "GRO on: {gro}");
    }
}
