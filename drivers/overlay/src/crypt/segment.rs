//! Cutting the tunnel device's large packets into wire-sized ones. With TCP and UDP-tunnel
//! segmentation offloads on the device, the kernel hands over a whole run of an encrypted
//! network's VXLAN traffic (outer IPv4/UDP/VXLAN, inner Ethernet/IPv4/TCP, up to 64 KB) in one
//! read, with a virtio header saying where each header starts and the inner TCP segment size.
//! Cutting it here costs one pass over the bytes; reading the same data 1.4 kB at a time cost a
//! system call and a trip through the stack per packet.
//!
//! Each segment gets its own lengths, IP identification and checksums, its share of the TCP
//! sequence space and only the flags that belong to it (CWR on the first, FIN and PSH on the
//! last), as the kernel's own segmentation would produce.

use super::checksum;

/// `struct virtio_net_hdr_v1_hash_tunnel` (Linux 6.17+): the basic header, the hash report
/// fields (unused here) and the outer transport and inner network header offsets.
pub(crate) const VNET_TUNNEL_HDR_LEN: usize = 24;
/// `struct virtio_net_hdr`, which a device without the tunnel offload uses.
pub(crate) const VNET_BASIC_HDR_LEN: usize = 10;

const NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_TUNNEL_IPV4: u8 = 0x20;
const GSO_UDP_TUNNEL_IPV6: u8 = 0x40;
const GSO_ECN: u8 = 0x80;

const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The virtio header the device put before a packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VnetHeader {
    pub(crate) flags: u8,
    pub(crate) gso_type: u8,
    pub(crate) gso_size: u16,
    pub(crate) csum_start: u16,
    pub(crate) csum_offset: u16,
    /// Where the outer UDP header starts (tunnel segmentation only).
    pub(crate) outer_th_offset: u16,
    /// Where the inner IP header starts (tunnel segmentation only).
    pub(crate) inner_nh_offset: u16,
}

impl VnetHeader {
    /// Reads a header of `bytes.len()` bytes (the basic 10 or the tunnel 24).
    pub(crate) fn parse(bytes: &[u8]) -> VnetHeader {
        let word = |at: usize| bytes.get(at..at + 2).map_or(0, |w| u16::from_le_bytes([w[0], w[1]]));
        VnetHeader {
            flags: bytes.first().copied().unwrap_or(0),
            gso_type: bytes.get(1).copied().unwrap_or(0),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
            outer_th_offset: word(20),
            inner_nh_offset: word(22),
        }
    }

    /// Whether the packet is ready to send as it is.
    pub(crate) fn is_plain(&self) -> bool {
        self.gso_type == GSO_NONE && self.flags & NEEDS_CSUM == 0
    }
}

/// Why a packet could not be cut (it is dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A segmentation type the device was not told to hand over.
    UnknownType(u8),
    /// Offsets or lengths that do not fit the packet.
    Malformed,
}

/// Calls `each` with every wire-sized packet `packet` stands for: the packet itself with its
/// checksum completed when it is a single one, else its segments, built one at a time in
/// `scratch`. `packet` may be changed (a checksum completed in place).
pub(crate) fn for_each_segment(
    header: &VnetHeader,
    packet: &mut [u8],
    scratch: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> Result<(), Refused> {
    let tunnel = header.gso_type & (GSO_UDP_TUNNEL_IPV4 | GSO_UDP_TUNNEL_IPV6);
    match header.gso_type & !(GSO_ECN | tunnel) {
        GSO_NONE => {
            if header.flags & NEEDS_CSUM != 0 {
                complete_checksum(packet, header.csum_start as usize, header.csum_offset as usize)?;
            }
            each(packet);
            Ok(())
        }
        GSO_TCPV4 => {
            let layout = Layout::of(header, packet, tunnel != 0)?;
            layout.cut(packet, scratch, each);
            Ok(())
        }
        other => Err(Refused::UnknownType(other)),
    }
}

/// Fills in a checksum the device left partial: the field holds the pseudo-header's sum, the
/// sum runs from `start` to the end.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), Refused> {
    let field = start + offset;
    if field + 2 > packet.len() {
        return Err(Refused::Malformed);
    }
    let value = checksum::finish(checksum::sum(&packet[start..]));
    packet[field..field + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// Where the headers of a TCP super-packet are.
#[derive(Debug)]
struct Layout {
    /// The outer IP version and UDP header offset when the TCP rides in a UDP tunnel.
    outer: Option<(u8, usize)>,
    inner_nh: usize,
    th: usize,
    payload: usize,
    mss: usize,
}

impl Layout {
    fn of(header: &VnetHeader, packet: &[u8], tunnel: bool) -> Result<Layout, Refused> {
        let inner_nh = if tunnel { header.inner_nh_offset as usize } else { 0 };
        let th = header.csum_start as usize;
        let mss = header.gso_size as usize;
        let inner = packet.get(inner_nh..).ok_or(Refused::Malformed)?;
        if mss == 0 || inner.len() < 20 || inner[0] >> 4 != 4 || inner[9] != TCP {
            return Err(Refused::Malformed);
        }
        if th != inner_nh + (inner[0] & 0x0f) as usize * 4 || packet.len() < th + 20 {
            return Err(Refused::Malformed);
        }
        let payload = th + (packet[th + 12] >> 4) as usize * 4;
        if payload < th + 20 || payload > packet.len() {
            return Err(Refused::Malformed);
        }
        let outer = if tunnel {
            let version = packet[0] >> 4;
            let udp = header.outer_th_offset as usize;
            let ip_len = if version == 4 { (packet[0] & 0x0f) as usize * 4 } else { 40 };
            let protocol = if version == 4 { packet[9] } else { packet.get(6).copied().unwrap_or(0) };
            if !(version == 4 || version == 6) || udp != ip_len || protocol != UDP || udp + 8 > inner_nh {
                return Err(Refused::Malformed);
            }
            Some((version, udp))
        } else {
            None
        };
        Ok(Layout { outer, inner_nh, th, payload, mss })
    }

    fn cut(&self, packet: &[u8], scratch: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
        let headers = &packet[..self.payload];
        let data = &packet[self.payload..];
        let count = data.len().div_ceil(self.mss).max(1);
        let read16 = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
        let first_seq =
            u32::from_be_bytes([packet[self.th + 4], packet[self.th + 5], packet[self.th + 6], packet[self.th + 7]]);
        let inner_id = read16(self.inner_nh + 4);
        let outer_id = read16(4);
        let flags = packet[self.th + 13];
        for (n, chunk) in data.chunks(self.mss).chain(data.is_empty().then_some(&[][..])).enumerate() {
            scratch.clear();
            scratch.extend_from_slice(headers);
            scratch.extend_from_slice(chunk);
            let segment = &mut scratch[..];
            let len = segment.len();
            let (first, last) = (n == 0, n + 1 == count);

            let ip = &mut segment[self.inner_nh..self.th];
            ip[2..4].copy_from_slice(&((len - self.inner_nh) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&inner_id.wrapping_add(n as u16).to_be_bytes());
            checksum::set_ipv4_header(ip);

            let seq = first_seq.wrapping_add((n * self.mss) as u32);
            let tcp = &mut segment[self.th..];
            tcp[4..8].copy_from_slice(&seq.to_be_bytes());
            let mut segment_flags = flags;
            if !first {
                segment_flags &= !TCP_CWR;
            }
            if !last {
                segment_flags &= !(TCP_FIN | TCP_PSH);
            }
            tcp[13] = segment_flags;
            tcp[16..18].copy_from_slice(&[0, 0]);
            let tcp_len = tcp.len();
            let addresses = &segment[self.inner_nh + 12..self.inner_nh + 20];
            let pseudo = checksum::pseudo_v4(addresses, TCP, tcp_len);
            let value = checksum::finish(checksum::add(pseudo, checksum::sum(&segment[self.th..])));
            segment[self.th + 16..self.th + 18].copy_from_slice(&value.to_be_bytes());

            if let Some((version, udp)) = self.outer {
                self.fill_outer(segment, version, udp, outer_id.wrapping_add(n as u16));
            }
            each(segment);
        }
    }

    /// The outer IP and UDP headers of one segment. Over IPv4 the UDP checksum is left out (0,
    /// allowed there; the inner TCP checksum and the tunnel's authentication cover the bytes);
    /// IPv6 requires it.
    fn fill_outer(&self, segment: &mut [u8], version: u8, udp: usize, id: u16) {
        let len = segment.len();
        let udp_len = (len - udp) as u16;
        segment[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
        segment[udp + 6..udp + 8].copy_from_slice(&[0, 0]);
        if version == 4 {
            segment[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            segment[4..6].copy_from_slice(&id.to_be_bytes());
            checksum::set_ipv4_header(&mut segment[..udp]);
        } else {
            segment[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            let pseudo = checksum::pseudo_v6(&segment[8..40], UDP, udp_len as usize);
            let value = match checksum::finish(checksum::add(pseudo, checksum::sum(&segment[udp..]))) {
                0 => 0xffff,
                value => value,
            };
            segment[udp + 6..udp + 8].copy_from_slice(&value.to_be_bytes());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const MSS: usize = 100;

    /// A VXLAN-carried TCP run of 5.37 segments (the last short) with its virtio header.
    pub(crate) fn tcp_super_packet() -> (VnetHeader, Vec<u8>) {
        (tunnel_header(), vxlan(&tcp_packet(5 * MSS + 37, 0x18)))
    }

    /// RFC 1071 checked word by word, independently of the module's sum.
    fn verifies(bytes: &[u8], pseudo: &[u8]) -> bool {
        let all: Vec<u8> = pseudo.iter().chain(bytes).copied().collect();
        let mut total: u64 =
            all.chunks(2).map(|pair| u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u64).sum();
        while total > 0xffff {
            total = (total & 0xffff) + (total >> 16);
        }
        total == 0xffff
    }

    fn be16(bytes: &[u8], at: usize) -> usize {
        u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize
    }

    fn pseudo(ip: &[u8], protocol: u8, len: usize) -> Vec<u8> {
        let mut p = ip[12..20].to_vec();
        p.extend_from_slice(&[0, protocol]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p
    }

    /// Inner IPv4 + TCP (20-byte header plus 12 bytes of options) + `payload` bytes counting up.
    fn tcp_packet(payload: usize, flags: u8) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0x10, 0x00, 0x40, 0, 64, TCP, 0, 0, 192, 168, 50, 1, 192, 168, 50, 2];
        p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51]); // ports
        p.extend_from_slice(&0xffff_ff00u32.to_be_bytes()); // sequence, wraps within the run
        p.extend_from_slice(&7u32.to_be_bytes()); // acknowledgement
        p.extend_from_slice(&[0x80, flags, 0x01, 0xf5, 0xde, 0xad, 0, 0]); // offset 8 words, window, junk sum
        p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
        p.extend((0..payload).map(|n| (n * 7 + n / 256) as u8));
        let total = p.len();
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p
    }

    /// Outer IPv4/UDP/VXLAN/Ethernet around `inner` (with a junk outer UDP checksum).
    fn vxlan(inner: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0x20, 0x00, 0, 0, 64, UDP, 0, 0, 100, 64, 0, 1, 100, 64, 0, 2];
        p.extend_from_slice(&[0xc3, 0x50, 0x12, 0xb5, 0, 0, 0x12, 0x34]);
        p.extend_from_slice(&[8, 0, 0, 0, 0, 0, 77, 0]);
        p.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0]);
        p.extend_from_slice(inner);
        let total = p.len();
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
        p
    }

    fn cut(header: &VnetHeader, packet: &[u8]) -> Result<Vec<Vec<u8>>, Refused> {
        let mut packet = packet.to_vec();
        let mut segments = Vec::new();
        for_each_segment(header, &mut packet, &mut Vec::new(), |s| segments.push(s.to_vec()))?;
        Ok(segments)
    }

    const INNER_NH: usize = 20 + 8 + 8 + 14;

    fn tunnel_header() -> VnetHeader {
        VnetHeader {
            flags: NEEDS_CSUM | 8,
            gso_type: GSO_TCPV4 | GSO_UDP_TUNNEL_IPV4,
            gso_size: MSS as u16,
            csum_start: (INNER_NH + 20) as u16,
            csum_offset: 16,
            outer_th_offset: 20,
            inner_nh_offset: INNER_NH as u16,
        }
    }

    /// Every check a receiver makes, on one segment of a VXLAN-carried TCP run: lengths, both
    /// IPv4 checksums, the inner TCP checksum, outer UDP checksum 0; returns (sequence, flags,
    /// payload, outer id, inner id).
    fn check_vxlan_segment(segment: &[u8]) -> (u32, u8, Vec<u8>, usize, usize) {
        assert_eq!(be16(segment, 2), segment.len(), "outer IP total length");
        assert!(verifies(&segment[..20], &[]), "outer IP checksum");
        assert_eq!(be16(segment, 24), segment.len() - 20, "outer UDP length");
        assert_eq!(be16(segment, 26), 0, "outer UDP checksum left out");
        let inner = &segment[INNER_NH..];
        assert_eq!(be16(inner, 2), inner.len(), "inner IP total length");
        assert!(verifies(&inner[..20], &[]), "inner IP checksum");
        let tcp = &inner[20..];
        assert!(verifies(tcp, &pseudo(inner, TCP, tcp.len())), "TCP checksum");
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        (seq, tcp[13], tcp[32..].to_vec(), be16(segment, 4), be16(inner, 4))
    }

    #[test]
    fn a_vxlan_tcp_run_is_cut_into_segments_a_receiver_accepts() {
        let inner = tcp_packet(5 * MSS + 37, TCP_CWR | TCP_PSH | TCP_FIN | 0x10);
        let packet = vxlan(&inner);
        let segments = cut(&tunnel_header(), &packet).unwrap();
        assert_eq!(segments.len(), 6);
        let mut payload = Vec::new();
        for (n, segment) in segments.iter().enumerate() {
            for kept in [0..2, 6..10, 12..24] {
                assert_eq!(segment[kept.clone()], packet[kept], "outer addresses, TTL, protocol and ports kept");
            }
            assert_eq!(segment[36..INNER_NH], packet[36..INNER_NH], "the inner Ethernet header kept");
            let (seq, flags, data, outer_id, inner_id) = check_vxlan_segment(segment);
            assert_eq!(seq, 0xffff_ff00u32.wrapping_add((n * MSS) as u32), "segment {n}");
            assert_eq!((outer_id, inner_id), (0x2000 + n, 0x1000 + n));
            let last = n == 5;
            assert_eq!(flags & TCP_CWR != 0, n == 0, "CWR on the first only");
            assert_eq!(flags & (TCP_PSH | TCP_FIN) != 0, last, "PSH and FIN on the last only");
            assert_eq!(flags & 0x10, 0x10, "ACK on all");
            assert_eq!(data.len(), if last { 37 } else { MSS });
            payload.extend(data);
        }
        assert_eq!(payload, inner[52..], "the payload, in order, nothing lost or repeated");
    }

    #[test]
    fn over_an_ipv6_underlay_each_segment_gets_its_payload_length_and_a_udp_checksum() {
        let inner = tcp_packet(2 * MSS + 1, 0x10);
        let v4 = vxlan(&inner);
        let mut packet = vec![0x60, 0, 0, 0, 0, 0, UDP, 64];
        packet.extend((0..32).map(|n| n as u8 + 1));
        packet.extend_from_slice(&v4[20..]);
        let header = VnetHeader {
            gso_type: GSO_TCPV4 | GSO_UDP_TUNNEL_IPV6,
            csum_start: (INNER_NH + 40) as u16,
            outer_th_offset: 40,
            inner_nh_offset: (INNER_NH + 20) as u16,
            ..tunnel_header()
        };
        let segments = cut(&header, &packet).unwrap();
        assert_eq!(segments.len(), 3);
        for segment in &segments {
            assert_eq!(be16(segment, 4), segment.len() - 40, "IPv6 payload length");
            let udp = &segment[40..];
            assert_eq!(be16(udp, 4), udp.len(), "UDP length");
            let mut pseudo = segment[8..40].to_vec();
            pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, UDP]);
            assert_ne!(be16(udp, 6), 0, "IPv6 requires a UDP checksum");
            assert!(verifies(udp, &pseudo), "UDP checksum");
            let inner = &segment[INNER_NH + 20..];
            assert!(verifies(&inner[20..], &super::tests::pseudo(inner, TCP, inner.len() - 20)), "TCP checksum");
        }
    }

    #[test]
    fn a_plain_tcp_run_is_cut_and_its_segments_verify() {
        let packet = tcp_packet(3 * MSS, 0x18);
        let header = VnetHeader {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            gso_size: MSS as u16,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHeader::default()
        };
        let segments = cut(&header, &packet).unwrap();
        assert_eq!(segments.len(), 3, "a run of exactly three segments gives three");
        for (n, segment) in segments.iter().enumerate() {
            assert_eq!(segment.len(), 52 + MSS);
            assert_eq!(be16(segment, 2), segment.len());
            assert!(verifies(&segment[..20], &[]));
            assert!(verifies(&segment[20..], &pseudo(segment, TCP, segment.len() - 20)));
            assert_eq!(segment[33] & TCP_PSH != 0, n == 2);
        }
    }

    #[test]
    fn single_packets_pass_unchanged_or_with_their_checksum_completed() {
        let plain = vxlan(&tcp_packet(40, 0x10));
        assert!(VnetHeader::default().is_plain());
        assert_eq!(cut(&VnetHeader::default(), &plain).unwrap(), vec![plain.clone()], "untouched");

        // A partial checksum: the field holds the pseudo-header's sum, the device says where.
        let mut partial = tcp_packet(41, 0x10);
        let len = partial.len() - 20;
        let start = checksum::pseudo_v4(&partial[12..20], TCP, len);
        partial[36..38].copy_from_slice(&start.to_be_bytes());
        let header = VnetHeader { flags: NEEDS_CSUM, csum_start: 20, csum_offset: 16, ..VnetHeader::default() };
        assert!(!header.is_plain());
        let out = cut(&header, &partial).unwrap();
        assert_eq!(out.len(), 1);
        assert!(verifies(&out[0][20..], &pseudo(&out[0], TCP, len)), "completed checksum verifies");
        assert_eq!(out[0][..36], partial[..36], "nothing else changed");
        assert_eq!(out[0][38..], partial[38..]);
    }

    #[test]
    fn unknown_types_and_lying_offsets_are_refused() {
        let packet = vxlan(&tcp_packet(3 * MSS, 0x10));
        let udp_l4 = VnetHeader { gso_type: 5, ..tunnel_header() };
        assert_eq!(cut(&udp_l4, &packet), Err(Refused::UnknownType(5)));
        let tcpv6 = VnetHeader { gso_type: 4, ..tunnel_header() };
        assert_eq!(cut(&tcpv6, &packet), Err(Refused::UnknownType(4)));
        for bad in [
            VnetHeader { gso_size: 0, ..tunnel_header() },
            VnetHeader { csum_start: 60, ..tunnel_header() },
            VnetHeader { inner_nh_offset: 2000, ..tunnel_header() },
            VnetHeader { inner_nh_offset: 22, ..tunnel_header() },
            VnetHeader { outer_th_offset: 24, ..tunnel_header() },
            VnetHeader { csum_start: 9000, csum_offset: 16, gso_type: 0, ..tunnel_header() },
        ] {
            assert_eq!(cut(&bad, &packet), Err(Refused::Malformed), "{bad:?}");
        }
        assert_eq!(cut(&tunnel_header(), &packet[..INNER_NH + 30]), Err(Refused::Malformed), "truncated");
        assert_eq!(cut(&tunnel_header(), &packet).unwrap().len(), 3, "the same packet with honest offsets is cut");
    }

    #[test]
    fn the_tunnel_header_is_read_little_endian_at_its_offsets() {
        let bytes = [9, 0x21, 0x66, 0, 0x3a, 5, 0x46, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14, 0, 0x32, 0];
        let header = VnetHeader::parse(&bytes);
        assert_eq!(
            header,
            VnetHeader {
                flags: 9,
                gso_type: 0x21,
                gso_size: 1338,
                csum_start: 70,
                csum_offset: 16,
                outer_th_offset: 20,
                inner_nh_offset: 50
            }
        );
        assert_eq!(VnetHeader::parse(&bytes[..VNET_BASIC_HDR_LEN]).inner_nh_offset, 0);
    }
}
