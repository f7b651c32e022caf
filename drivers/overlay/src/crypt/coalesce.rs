//! Opened packets go to the TUN device joined where they can be: consecutive IPv4 UDP datagrams
//! of one flow and one size (the VXLAN traffic of an encrypted network in bulk) are written as
//! one UDP segmentation-offload packet. The kernel cuts it apart again in one pass, so the
//! VXLAN device gets the whole run at once and its GRO can merge the inner TCP segments, where
//! packet-by-packet writes would walk the stack once per 1.4 kB.

use std::fs::File;
use std::io::Write;

use super::checksum;
#[cfg(test)]
use super::segment::VNET_BASIC_HDR_LEN;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const HEADERS: usize = IPV4_HEADER + UDP_HEADER;
const MAX_SEGMENTS: usize = 64;
const MAX_TOTAL: usize = 65_000;

/// The run being built: one header, then the payloads.
pub(crate) struct Coalescer {
    /// The device's virtio header size (the header's fields past the basic ones stay zero).
    vnet_len: usize,
    buffer: Vec<u8>,
    /// Bytes of the run (headers included) after the virtio header.
    len: usize,
    segments: usize,
    segment_size: usize,
    /// A shorter segment ended the run.
    closed: bool,
    /// Writing joined packets failed once (a kernel without it): one by one from then on.
    pub(crate) disabled: bool,
}

/// What one flush wrote: (packets, bytes) delivered, packets lost.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) lost: u64,
}

impl Coalescer {
    pub(crate) fn new(vnet_len: usize) -> Coalescer {
        Coalescer {
            vnet_len,
            buffer: vec![0; vnet_len + MAX_TOTAL + 2048],
            len: 0,
            segments: 0,
            segment_size: 0,
            closed: false,
            disabled: false,
        }
    }

    /// Adds one packet; runs that cannot take it are written first.
    pub(crate) fn push(&mut self, packet: &[u8], tun: &File, written: &mut Written) {
        let payload = joinable_payload(packet);
        if let Some(payload) = payload {
            if self.takes(packet, payload) {
                let start = self.vnet_len + self.len;
                self.buffer[start..start + payload].copy_from_slice(&packet[HEADERS..]);
                self.len += payload;
                self.segments += 1;
                self.closed = payload < self.segment_size;
                return;
            }
        }
        self.flush(tun, written);
        match payload {
            Some(payload) if !self.disabled && packet.len() <= MAX_TOTAL => {
                self.buffer[self.vnet_len..self.vnet_len + packet.len()].copy_from_slice(packet);
                self.len = packet.len();
                self.segments = 1;
                self.segment_size = payload;
                self.closed = false;
            }
            _ => write_one(tun, self.vnet_len, packet, written),
        }
    }

    fn takes(&self, packet: &[u8], payload: usize) -> bool {
        if self.segments == 0 || self.closed || self.disabled {
            return false;
        }
        let head = &self.buffer[self.vnet_len..self.vnet_len + HEADERS];
        payload <= self.segment_size
            && payload > 0
            && self.segments < MAX_SEGMENTS
            && self.len + payload <= MAX_TOTAL
            && same_flow(head, packet)
    }

    /// Writes the run built so far.
    pub(crate) fn flush(&mut self, tun: &File, written: &mut Written) {
        let segments = std::mem::take(&mut self.segments);
        if segments == 0 {
            return;
        }
        let len = self.len;
        if segments == 1 {
            let packet = self.buffer[self.vnet_len..self.vnet_len + len].to_vec();
            return write_one(tun, self.vnet_len, &packet, written);
        }
        let run = &mut self.buffer[..self.vnet_len + len];
        join_headers(run, self.vnet_len, self.segment_size);
        match (&*tun).write(run) {
            Ok(n) if n == run.len() => {
                written.packets += segments as u64;
                written.bytes += (len + (segments - 1) * HEADERS) as u64;
            }
            Ok(_) => written.lost += segments as u64,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!("the TUN device refused a joined packet; writing packets one by one");
                self.disabled = true;
                written.lost += segments as u64;
            }
            Err(_) => written.lost += segments as u64,
        }
    }
}

/// The UDP payload length of a packet that can be joined: IPv4 without options or fragments,
/// UDP, lengths consistent.
fn joinable_payload(packet: &[u8]) -> Option<usize> {
    if packet.len() <= HEADERS || packet[0] != 0x45 || packet[9] != libc::IPPROTO_UDP as u8 {
        return None;
    }
    let total = u16::from_be_bytes([packet[2], packet[3]]) as usize;
    let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff;
    let udp_len = u16::from_be_bytes([packet[24], packet[25]]) as usize;
    (total == packet.len() && fragment == 0 && udp_len == total - IPV4_HEADER).then(|| total - HEADERS)
}

/// Same addresses, protocol, TOS, TTL, DF and ports: segments of one run only differ in payload.
fn same_flow(head: &[u8], packet: &[u8]) -> bool {
    head[1] == packet[1] && head[6] == packet[6] && head[8..10] == packet[8..10] && head[12..24] == packet[12..24]
}

fn write_one(tun: &File, vnet_len: usize, packet: &[u8], written: &mut Written) {
    let mut framed = vec![0; vnet_len];
    framed.extend_from_slice(packet);
    match (&*tun).write(&framed) {
        Ok(n) if n == framed.len() => {
            written.packets += 1;
            written.bytes += packet.len() as u64;
        }
        _ => written.lost += 1,
    }
}

/// Fills in the virtio header and the run's IPv4 and UDP headers: lengths of the whole, the IP
/// checksum, and the UDP pseudo-header sum the kernel completes per segment.
fn join_headers(run: &mut [u8], vnet_len: usize, segment_size: usize) {
    let total = run.len() - vnet_len;
    let (vnet, packet) = run.split_at_mut(vnet_len);
    vnet[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    vnet[1] = VIRTIO_NET_HDR_GSO_UDP_L4;
    vnet[2..4].copy_from_slice(&(HEADERS as u16).to_le_bytes());
    vnet[4..6].copy_from_slice(&(segment_size as u16).to_le_bytes());
    vnet[6..8].copy_from_slice(&(IPV4_HEADER as u16).to_le_bytes());
    vnet[8..10].copy_from_slice(&6u16.to_le_bytes());
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    checksum::set_ipv4_header(&mut packet[..IPV4_HEADER]);
    let udp_len = total - IPV4_HEADER;
    packet[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let pseudo = checksum::pseudo_v4(&packet[12..20], libc::IPPROTO_UDP as u8, udp_len);
    packet[26..28].copy_from_slice(&pseudo.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_packet(dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let total = HEADERS + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&4789u16.to_be_bytes());
        p.extend_from_slice(&dst_port.to_be_bytes());
        p.extend_from_slice(&((total - IPV4_HEADER) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn runs_of_one_flow_and_size_are_joined_and_others_are_not() {
        assert_eq!(joinable_payload(&udp_packet(4789, &[1; 100])), Some(100));
        let mut tcp = udp_packet(4789, &[1; 100]);
        tcp[9] = 6;
        assert_eq!(joinable_payload(&tcp), None);
        let mut fragment = udp_packet(4789, &[1; 100]);
        fragment[6] = 0x20;
        assert_eq!(joinable_payload(&fragment), None);
        assert_eq!(joinable_payload(&udp_packet(4789, &[1; 100])[..50]), None, "truncated");

        let head = udp_packet(4789, &[1; 100]);
        assert!(same_flow(&head, &udp_packet(4789, &[2; 100])));
        assert!(!same_flow(&head, &udp_packet(4790, &[2; 100])));
    }

    #[test]
    fn joined_headers_carry_the_whole_length_and_valid_ip_checksum() {
        let mut run = vec![0u8; VNET_BASIC_HDR_LEN];
        run.extend_from_slice(&udp_packet(4789, &[7; 100]));
        run.extend_from_slice(&[7; 100]);
        join_headers(&mut run, VNET_BASIC_HDR_LEN, 100);
        let packet = &run[VNET_BASIC_HDR_LEN..];
        assert_eq!(u16::from_be_bytes([packet[2], packet[3]]) as usize, HEADERS + 200);
        assert_eq!(checksum::sum(&packet[..IPV4_HEADER]), 0xffff, "IP checksum verifies");
        assert_eq!(u16::from_be_bytes([packet[24], packet[25]]) as usize, UDP_HEADER + 200);
        assert_eq!(&run[..2], &[VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_UDP_L4]);
        assert_eq!(u16::from_le_bytes([run[4], run[5]]), 100);
    }
}
