//! A packet capture on the wire: `tcpdump -w` in the underlay namespace (or on a host), read back
//! while it runs. Scenarios count what crossed the wire (all frames, the UDP datagrams to or from
//! a port, VXLAN frames of one VNI) and how many frames carry a marker byte string in clear.
//!
//! tcpdump runs with `--immediate-mode -U`: every frame is in the file a moment after it was
//! seen, so a scenario marks where a phase starts (`Capture::mark`) and counts that phase alone
//! (`Capture::since`) without stopping the capture.

use std::fmt;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::Cluster;
use crate::host::Host;
use crate::proc::NsProc;
use crate::util::{tail, wait_until};

/// libpcap link types this reader understands.
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

/// A running capture. The process is killed with its host (or the cluster, for the underlay);
/// a capture on a host is also killed when this is dropped.
pub struct Capture {
    file: PathBuf,
    log: PathBuf,
    what: String,
    _proc: Option<NsProc>,
}

/// One captured frame: the bytes as the link type gives them.
#[derive(Debug, Clone)]
pub struct Frame {
    pub data: Vec<u8>,
    linktype: u32,
}

/// The outer IPv4/UDP headers of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterUdp<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub payload: &'a [u8],
}

/// What one phase of a capture saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub frames: usize,
    /// Frames holding the marker (anywhere in their bytes).
    pub marker_hits: usize,
    /// UDP datagrams with the watched port as source or destination.
    pub port_frames: usize,
    /// UDP datagrams to the VXLAN port whose VXLAN header names the watched VNI.
    pub vni_frames: usize,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} frames, {} with the marker, {} to/from the port, {} of the VNI",
            self.frames, self.marker_hits, self.port_frames, self.vni_frames
        )
    }
}

/// What a phase counts: a marker, a UDP port, a VNI on a VXLAN port.
#[derive(Debug, Clone, Default)]
pub struct Watch<'a> {
    pub marker: &'a [u8],
    pub port: Option<u16>,
    /// (VXLAN UDP port, VNI)
    pub vni: Option<(u16, u32)>,
}

impl Capture {
    /// Captures every frame on `iface` of the underlay namespace (`br0` sees all that crosses the
    /// underlay bridge: tcpdump puts it in promiscuous mode, which makes the bridge pass forwarded
    /// frames up too).
    pub fn on_underlay(c: &Cluster, name: &str, iface: &str) -> Result<Capture> {
        let file = pcap_path(c.dir(), name);
        let log = c.dir().join(format!("{name}.log"));
        c.spawn_underlay(name, &tcpdump_argv(iface, &file))?;
        Self::ready(file, log, format!("the underlay's {iface}"), None)
    }

    /// Captures on `iface` of a host's (or LAN neighbour's) namespace.
    pub fn on_host(h: &Host, name: &str, iface: &str) -> Result<Capture> {
        let file = pcap_path(h.dir(), name);
        let proc = h.spawn(name, &tcpdump_argv(iface, &file))?;
        let log = proc.log_path().to_path_buf();
        Self::ready(file, log, format!("{}'s {iface}", h.name()), Some(proc))
    }

    /// Waits until tcpdump says it listens (frames before that are not in the file).
    fn ready(file: PathBuf, log: PathBuf, what: String, proc: Option<NsProc>) -> Result<Capture> {
        wait_until(Duration::from_secs(10), Duration::from_millis(20), &format!("tcpdump on {what}"), || {
            Ok(fs::read_to_string(&log).is_ok_and(|l| l.contains("listening on")))
        })
        .with_context(|| format!("tcpdump log:\n{}", tail(&log, 10)))?;
        Ok(Capture { file, log, what, _proc: proc })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Every frame captured so far.
    pub fn frames(&self) -> Result<Vec<Frame>> {
        let bytes = fs::read(&self.file).with_context(|| format!("capture of {}", self.what))?;
        parse_pcap(&bytes).with_context(|| format!("{} (tcpdump log: {})", self.file.display(), tail(&self.log, 5)))
    }

    /// Where the next phase starts: the number of frames captured so far.
    pub fn mark(&self) -> Result<usize> {
        self.settle()?;
        Ok(self.frames()?.len())
    }

    /// Waits until the file stopped growing for 300 ms (at most 3 s): frames of the traffic just
    /// sent have been written.
    pub fn settle(&self) -> Result<()> {
        let t0 = Instant::now();
        let mut last = (fs::metadata(&self.file)?.len(), Instant::now());
        while t0.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(50));
            let len = fs::metadata(&self.file)?.len();
            if len != last.0 {
                last = (len, Instant::now());
            } else if last.1.elapsed() >= Duration::from_millis(300) {
                break;
            }
        }
        Ok(())
    }

    /// What the frames from `mark` on show (after the capture settled).
    pub fn since(&self, mark: usize, watch: &Watch) -> Result<Seen> {
        self.settle()?;
        let frames = self.frames()?;
        Ok(count(&frames[mark.min(frames.len())..], watch))
    }
}

fn pcap_path(dir: &Path, name: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    dir.join(format!("{name}-{}.pcap", SEQ.fetch_add(1, Ordering::SeqCst)))
}

/// `-Z root`: tcpdump would otherwise write the file as its own unprivileged user, into a
/// directory only root may write.
fn tcpdump_argv(iface: &str, file: &Path) -> Vec<String> {
    let file = file.display().to_string();
    ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-Z", "root", "-w", file.as_str()]
        .map(String::from)
        .to_vec()
}

/// Counts `frames` against `watch`.
pub fn count(frames: &[Frame], watch: &Watch) -> Seen {
    let mut seen = Seen { frames: frames.len(), ..Seen::default() };
    for f in frames {
        if !watch.marker.is_empty() && f.contains(watch.marker) {
            seen.marker_hits += 1;
        }
        let Some(udp) = f.outer_udp() else { continue };
        if watch.port.is_some_and(|p| udp.sport == p || udp.dport == p) {
            seen.port_frames += 1;
        }
        if let Some((port, vni)) = watch.vni {
            if udp.dport == port && vxlan_vni(udp.payload) == Some(vni) {
                seen.vni_frames += 1;
            }
        }
    }
    seen
}

/// The VNI of a VXLAN header (its I flag set).
fn vxlan_vni(payload: &[u8]) -> Option<u32> {
    if payload.len() < 8 || payload[0] & 0x08 == 0 {
        return None;
    }
    Some(u32::from_be_bytes([0, payload[4], payload[5], payload[6]]))
}

impl Frame {
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.data.windows(needle.len()).any(|w| w == needle)
    }

    /// The network-layer packet and its EtherType.
    fn network(&self) -> Option<(u16, &[u8])> {
        let d = &self.data;
        let (proto_at, start) = match self.linktype {
            LINKTYPE_ETHERNET => (12, 14),
            LINKTYPE_LINUX_SLL => (14, 16),
            LINKTYPE_LINUX_SLL2 => (0, 20),
            _ => return None,
        };
        let proto = u16::from_be_bytes([*d.get(proto_at)?, *d.get(proto_at + 1)?]);
        Some((proto, d.get(start..)?))
    }

    /// The outer IPv4 and UDP headers, if the frame is a UDP datagram over IPv4 (first fragment).
    pub fn outer_udp(&self) -> Option<OuterUdp<'_>> {
        let (ethertype, ip) = self.network()?;
        if ethertype != ETHERTYPE_IPV4 || ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != IPPROTO_UDP {
            return None;
        }
        let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
        if fragment_offset != 0 {
            return None;
        }
        let udp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
        if udp.len() < 8 {
            return None;
        }
        Some(OuterUdp {
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            sport: u16::from_be_bytes([udp[0], udp[1]]),
            dport: u16::from_be_bytes([udp[2], udp[3]]),
            payload: &udp[8..],
        })
    }
}

/// Reads a pcap file (micro- or nanosecond, either byte order). A record cut short at the end
/// (tcpdump still writing it) is left out.
pub fn parse_pcap(bytes: &[u8]) -> Result<Vec<Frame>> {
    if bytes.len() < 24 {
        // tcpdump writes the file header when it starts; an empty file is no capture yet.
        bail!("the capture has no pcap header ({} bytes)", bytes.len());
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file (magic {magic:02x?})"),
    };
    let u32_at = |at: usize| {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let linktype = u32_at(20) & 0x0fff_ffff;
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32_at(at + 8) as usize;
        let start = at + 16;
        let Some(data) = bytes.get(start..start + len) else { break };
        frames.push(Frame { data: data.to_vec(), linktype });
        at = start + len;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file (little-endian, microseconds, Ethernet) holding `frames`.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        for f in frames {
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    /// Ethernet + IPv4 + UDP from .1:sport to .2:dport carrying `payload`.
    fn udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0; 12];
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn counts_marker_port_and_vni() {
        let vxlan = [0x08, 0, 0, 0, 0, 0x15, 0xe3, 0];
        let mut plain = vxlan.to_vec();
        plain.extend_from_slice(b"..MARK..");
        let file = pcap(&[
            udp_frame(40000, 51820, b"sealed bytes"),
            udp_frame(51820, 40000, b"sealed too"),
            udp_frame(40001, 4789, &plain),
            vec![0; 20],
        ]);
        let frames = parse_pcap(&file).unwrap();
        assert_eq!(frames.len(), 4);
        let seen = count(&frames, &Watch { marker: b"MARK", port: Some(51820), vni: Some((4789, 5603)) });
        assert_eq!(seen, Seen { frames: 4, marker_hits: 1, port_frames: 2, vni_frames: 1 });
        let udp = frames[2].outer_udp().unwrap();
        assert_eq!((udp.src, udp.dst, udp.dport), (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 4789));
    }

    #[test]
    fn a_record_being_written_is_left_out() {
        let mut file = pcap(&[udp_frame(1, 2, b"x"), udp_frame(3, 4, b"y")]);
        file.truncate(file.len() - 5);
        assert_eq!(parse_pcap(&file).unwrap().len(), 1);
        assert!(parse_pcap(&file[..10]).is_err());
        assert!(parse_pcap(&[0u8; 24]).is_err());
    }
}
