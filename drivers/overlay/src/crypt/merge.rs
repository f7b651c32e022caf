//! Opened VXLAN packets that carry consecutive segments of one inner TCP stream are merged back
//! into one large packet and written to the inbound device (a TAP device: the kernel takes
//! UDP-tunnel segmentation offload packets from an Ethernet device only) with a virtio header
//! that says so. The VXLAN device then gets a whole run as one packet, as it would from a
//! network card that merges, instead of the run cut apart again and merged once more.
//!
//! The inner TCP checksum is left to the header's partial-checksum description, as the kernel's
//! WireGuard does after authenticating a packet: what was opened came sealed from a peer.

use std::io::Write;

use super::checksum;
use super::coalesce::Written;
use super::segment::VNET_TUNNEL_HDR_LEN;

const ETH: usize = 14;
/// Outer IPv4 (no options), UDP, VXLAN, inner Ethernet.
const INNER_NH: usize = 20 + 8 + 8 + ETH;
const INNER_TH: usize = INNER_NH + 20;
const MAX_TOTAL: usize = 65_000;
const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4_IN_UDP_TUNNEL_IPV4: u8 = 0x01 | 0x20;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// The run being built: a virtio header and an Ethernet header (the device's own address as
/// destination), then the first packet whole and the payloads of the others.
pub(crate) struct Merger {
    buffer: Vec<u8>,
    /// Bytes of the packet after the two headers.
    len: usize,
    segments: usize,
    mss: usize,
    /// Where the next segment's sequence number must be.
    next_seq: u32,
    closed: bool,
    /// Bytes of the packets in the run as they arrived.
    bytes: usize,
    /// The device refused a run (set down, or a kernel that does not take them): merge no more.
    disabled: bool,
}

const HEAD: usize = VNET_TUNNEL_HDR_LEN + ETH;

impl Merger {
    pub(crate) fn new(device_mac: [u8; 6]) -> Merger {
        let mut buffer = vec![0; HEAD + MAX_TOTAL + 2048];
        let eth = &mut buffer[VNET_TUNNEL_HDR_LEN..HEAD];
        eth[..6].copy_from_slice(&device_mac);
        eth[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        eth[12..14].copy_from_slice(&[0x08, 0x00]);
        Merger { buffer, len: 0, segments: 0, mss: 0, next_seq: 0, closed: false, bytes: 0, disabled: false }
    }

    /// Takes `packet` if it is a VXLAN-carried TCP segment with data (written later, joined with
    /// its neighbours); false if it is something else (the caller writes it its own way, after
    /// [`Merger::flush`] so that order is kept).
    pub(crate) fn push(&mut self, packet: &[u8], device: &mut impl Write, written: &mut Written) -> bool {
        let Some(payload) = mergeable_payload(packet).filter(|_| !self.disabled) else {
            return false;
        };
        if !self.takes(packet, payload) {
            self.flush(device, written);
            self.buffer[HEAD..HEAD + packet.len()].copy_from_slice(packet);
            self.len = packet.len();
            self.segments = 1;
            self.mss = payload;
        } else {
            let start = HEAD + self.len;
            self.buffer[start..start + payload].copy_from_slice(&packet[packet.len() - payload..]);
            self.len += payload;
            self.segments += 1;
        }
        self.bytes += packet.len();
        let seq = read32(packet, INNER_TH + 4);
        self.next_seq = seq.wrapping_add(payload as u32);
        self.closed = payload < self.mss || packet[INNER_TH + 13] & TCP_PSH != 0;
        if self.closed {
            let head = HEAD + INNER_TH + 13;
            self.buffer[head] |= packet[INNER_TH + 13] & TCP_PSH;
        }
        true
    }

    fn takes(&self, packet: &[u8], payload: usize) -> bool {
        if self.segments == 0 || self.closed || payload > self.mss || self.len + payload > MAX_TOTAL {
            return false;
        }
        let head = &self.buffer[HEAD..HEAD + self.len];
        let options_end = INNER_TH + (packet[INNER_TH + 12] >> 4) as usize * 4;
        let same = |range: std::ops::Range<usize>| head.get(range.clone()) == packet.get(range);
        read32(packet, INNER_TH + 4) == self.next_seq
            && same(0..2)
            && same(6..10)
            && same(12..24)
            && same(28..INNER_NH + 2)
            && same(INNER_NH + 6..INNER_NH + 10)
            && same(INNER_NH + 12..INNER_TH + 4)
            && same(INNER_TH + 8..INNER_TH + 13)
            && same(INNER_TH + 14..INNER_TH + 16)
            && same(INNER_TH + 18..options_end)
            && head[INNER_TH + 13] & !TCP_PSH == packet[INNER_TH + 13] & !TCP_PSH
    }

    /// Writes the run built so far.
    pub(crate) fn flush(&mut self, device: &mut impl Write, written: &mut Written) {
        let segments = std::mem::take(&mut self.segments);
        if segments == 0 {
            return;
        }
        let len = self.len;
        let frame = &mut self.buffer[..HEAD + len];
        let (vnet, rest) = frame.split_at_mut(VNET_TUNNEL_HDR_LEN);
        let packet = &mut rest[ETH..];
        vnet.fill(0);
        if segments > 1 {
            describe_run(vnet, packet, self.mss);
        }
        match device.write(frame) {
            Ok(n) if n == frame.len() => {
                written.packets += segments as u64;
                written.bytes += std::mem::take(&mut self.bytes) as u64;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIO)) => {
                tracing::info!(error = %e, "the inbound device refused a merged run; opened packets go to the tunnel \
                    device from now on");
                self.disabled = true;
                written.lost += segments as u64;
            }
            _ => written.lost += segments as u64,
        }
        self.bytes = 0;
    }
}

/// The virtio header of a merged run and its headers' lengths; IP checksums in full, the TCP
/// checksum as the partial sum the header describes.
fn describe_run(vnet: &mut [u8], packet: &mut [u8], mss: usize) {
    let total = packet.len();
    let payload_start = INNER_TH + (packet[INNER_TH + 12] >> 4) as usize * 4;
    vnet[0] = NEEDS_CSUM;
    vnet[1] = GSO_TCPV4_IN_UDP_TUNNEL_IPV4;
    vnet[2..4].copy_from_slice(&((ETH + payload_start) as u16).to_le_bytes());
    vnet[4..6].copy_from_slice(&(mss as u16).to_le_bytes());
    vnet[6..8].copy_from_slice(&((ETH + INNER_TH) as u16).to_le_bytes());
    vnet[8..10].copy_from_slice(&16u16.to_le_bytes());
    vnet[20..22].copy_from_slice(&((ETH + 20) as u16).to_le_bytes());
    vnet[22..24].copy_from_slice(&((ETH + INNER_NH) as u16).to_le_bytes());
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    checksum::set_ipv4_header(&mut packet[..20]);
    packet[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    packet[26..28].copy_from_slice(&[0, 0]);
    packet[INNER_NH + 2..INNER_NH + 4].copy_from_slice(&((total - INNER_NH) as u16).to_be_bytes());
    checksum::set_ipv4_header(&mut packet[INNER_NH..INNER_TH]);
    let pseudo = checksum::pseudo_v4(&packet[INNER_NH + 12..INNER_NH + 20], 6, total - INNER_TH);
    packet[INNER_TH + 16..INNER_TH + 18].copy_from_slice(&pseudo.to_be_bytes());
}

fn read32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The TCP payload length of a packet that can be merged: outer IPv4 without options or
/// fragments carrying UDP, an inner IPv4 (no options, no fragments) TCP segment with data and
/// no flags but ACK and PSH, every length consistent.
fn mergeable_payload(packet: &[u8]) -> Option<usize> {
    if packet.len() <= INNER_TH + 20 || packet[0] != 0x45 || packet[9] != 17 {
        return None;
    }
    let be16 = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]) as usize;
    let outer_ok = be16(2) == packet.len() && be16(6) & 0x3fff == 0 && be16(24) == packet.len() - 20;
    let inner = &packet[INNER_NH..];
    let inner_ok = packet[INNER_NH - 2..INNER_NH] == [0x08, 0x00]
        && inner[0] == 0x45
        && inner[9] == 6
        && be16(INNER_NH + 2) == inner.len()
        && be16(INNER_NH + 6) & 0x3fff == 0;
    if !outer_ok || !inner_ok || packet[INNER_TH + 13] & !(TCP_ACK | TCP_PSH) != 0 {
        return None;
    }
    let header = (packet[INNER_TH + 12] >> 4) as usize * 4;
    let payload = packet.len().checked_sub(INNER_TH + header)?;
    (header >= 20 && payload > 0).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::segment::tests::{tcp_super_packet, MSS};
    use crate::crypt::segment::{for_each_segment, VnetHeader};

    const MAC: [u8; 6] = [2, 0xaa, 0, 0, 0, 7];

    fn segments_of() -> Vec<Vec<u8>> {
        let (header, packet) = tcp_super_packet();
        let mut packet = packet.to_vec();
        let mut out = Vec::new();
        for_each_segment(&header, &mut packet, &mut Vec::new(), |s| out.push(s.to_vec())).unwrap();
        out
    }

    fn merge_all(packets: &[Vec<u8>]) -> (Vec<u8>, Written, bool) {
        let mut merger = Merger::new(MAC);
        let mut device = Vec::new();
        let mut written = Written::default();
        let mut all_taken = true;
        for packet in packets {
            all_taken &= merger.push(packet, &mut device, &mut written);
        }
        merger.flush(&mut device, &mut written);
        (device, written, all_taken)
    }

    #[test]
    fn the_segments_of_a_run_are_merged_back_into_one_described_packet() {
        let (header, original) = tcp_super_packet();
        let segments = segments_of();
        assert_eq!(segments.len(), 6);
        let (frame, written, taken) = merge_all(&segments);
        assert!(taken);
        assert_eq!(written, Written { packets: 6, bytes: segments.iter().map(|s| s.len() as u64).sum(), lost: 0 });
        let (vnet, rest) = frame.split_at(VNET_TUNNEL_HDR_LEN);
        assert_eq!(&rest[..6], &MAC, "addressed to the device");
        assert_eq!(&rest[12..14], &[8, 0]);
        let packet = &rest[ETH..];
        let described = VnetHeader::parse(vnet);
        assert_eq!(described.gso_type, GSO_TCPV4_IN_UDP_TUNNEL_IPV4);
        assert_eq!(described.flags, NEEDS_CSUM);
        assert_eq!(described.gso_size as usize, MSS);
        assert_eq!(
            (described.csum_start, described.csum_offset, described.outer_th_offset, described.inner_nh_offset),
            (header.csum_start + 14, 16, 34, header.inner_nh_offset + 14),
            "offsets count the Ethernet header"
        );
        assert_eq!(packet.len(), original.len());
        assert_eq!(packet[INNER_TH + 32..], original[INNER_TH + 32..], "the payload whole, in order");
        assert_eq!(checksum::sum(&packet[..20]), 0xffff, "outer IP checksum");
        assert_eq!(checksum::sum(&packet[INNER_NH..INNER_TH]), 0xffff, "inner IP checksum");
        assert_eq!(u16::from_be_bytes([packet[2], packet[3]]) as usize, packet.len());
        assert_eq!(u16::from_be_bytes([packet[24], packet[25]]) as usize, packet.len() - 20);
        assert_eq!(packet[INNER_TH + 13], original[INNER_TH + 13], "the flags of the whole");
        // Cut again as the kernel would: the same segments come out.
        let mut again = packet.to_vec();
        let mut header = described;
        header.csum_start -= 14;
        header.outer_th_offset -= 14;
        header.inner_nh_offset -= 14;
        let mut recut = Vec::new();
        for_each_segment(&header, &mut again, &mut Vec::new(), |s| recut.push(s.to_vec())).unwrap();
        for (a, b) in recut.iter().zip(&segments) {
            assert_eq!(a[INNER_NH..], b[INNER_NH..], "inner packets as sent");
        }
    }

    #[test]
    fn gaps_other_flows_and_other_packets_are_not_merged() {
        let segments = segments_of();
        let mut gap = segments.clone();
        gap.remove(2);
        let (frames, written, _) = merge_all(&gap);
        assert_eq!(written.packets, 5);
        assert!(frames.len() > 2 * (VNET_TUNNEL_HDR_LEN + ETH + INNER_TH), "two runs written");

        let mut other_port = segments.clone();
        other_port[3][INNER_TH + 1] ^= 1;
        assert_eq!(merge_all(&other_port).1.packets, 6);

        let mut syn = segments[0].clone();
        syn[INNER_TH + 13] |= 0x02;
        assert!(!Merger::new(MAC).push(&syn, &mut Vec::new(), &mut Written::default()), "SYN not merged");
        let mut udp_inside = segments[0].clone();
        udp_inside[INNER_NH + 9] = 17;
        assert!(!Merger::new(MAC).push(&udp_inside, &mut Vec::new(), &mut Written::default()));
        let ack_only = &segments[0][..INNER_TH + 32];
        assert!(mergeable_payload(ack_only).is_none(), "a segment without data is not merged");
    }
}
