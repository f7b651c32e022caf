//! Forwarding-database entries of a VXLAN link (`bridge fdb … self permanent`): which remote
//! tunnel endpoint a MAC address lives behind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;

use crate::{is_errno, mac, Link, Netlink};

/// "Frames for `mac` go to the tunnel endpoint `dst`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub dst: IpAddr,
    /// The remote's UDP port; None means the link's own port.
    pub port: Option<u16>,
}

impl std::fmt::Display for FdbEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dst {}", mac::format(&self.mac), self.dst)?;
        if let Some(port) = self.port {
            write!(f, " port {port}")?;
        }
        Ok(())
    }
}

/// Reads a permanent `self` entry with a destination out of an AF_BRIDGE neighbour message.
pub fn fdb_entry_of(msg: &NeighbourMessage) -> Option<FdbEntry> {
    if !msg.header.flags.contains(NeighbourFlags::Own) || !is_permanent(msg.header.state) {
        return None;
    }
    let mut mac_addr = None;
    let mut dst = None;
    let mut port = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::LinkLayerAddress(lla) if lla.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(lla);
                mac_addr = Some(m);
            }
            NeighbourAttribute::Destination(address) => dst = ip_of(address),
            NeighbourAttribute::Port(p) => port = Some(*p),
            _ => {}
        }
    }
    let mac_addr = mac_addr.filter(|m| *m != [0u8; 6])?;
    Some(FdbEntry { mac: mac_addr, dst: dst?, port })
}

/// The MAC of a dynamic entry a bridge learned: the bridge reports its entries with the bridge
/// as NDA_MASTER (and without NTF_SELF), learned ones neither permanent nor static.
pub fn learned_mac_of(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    let of_bridge = msg.attributes.iter().any(|attr| matches!(attr, NeighbourAttribute::Controller(_)));
    let state = u16::from(msg.header.state);
    let learned =
        of_bridge && !msg.header.flags.contains(NeighbourFlags::Own) && state & (NUD_PERMANENT | NUD_NOARP) == 0;
    if !learned {
        return None;
    }
    msg.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::LinkLayerAddress(lla) if lla.len() == 6 => {
            let mut m = [0u8; 6];
            m.copy_from_slice(lla);
            Some(m)
        }
        _ => None,
    })
}

const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;

/// Whether a neighbour/FDB state has the permanent bit (iproute2's `bridge fdb add … permanent`
/// sets NOARP along with it).
pub(crate) fn is_permanent(state: NeighbourState) -> bool {
    u16::from(state) & NUD_PERMANENT != 0
}

/// AF_BRIDGE messages carry NDA_DST as raw bytes.
fn ip_of(address: &NeighbourAddress) -> Option<IpAddr> {
    match address {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
            16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(bytes);
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        },
        _ => None,
    }
}

fn destination(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

impl Netlink {
    /// Every FDB entry the kernel holds for `link`, as netlink messages.
    async fn fdb_messages(&self, link: &Link) -> Result<Vec<NeighbourMessage>> {
        let messages: Vec<NeighbourMessage> = self
            .handle()
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("listing FDB entries of {}", link.name))?;
        Ok(messages.into_iter().filter(|m| m.header.ifindex == link.index).collect())
    }

    /// The permanent `self` FDB entries of `link` that point at a tunnel endpoint.
    pub async fn fdb_entries(&self, link: &Link) -> Result<Vec<FdbEntry>> {
        let mut entries: Vec<FdbEntry> = self.fdb_messages(link).await?.iter().filter_map(fdb_entry_of).collect();
        entries.sort();
        Ok(entries)
    }

    /// Adds `entry` to `link`, replacing an entry for the same MAC that points elsewhere.
    pub async fn ensure_fdb(&self, link: &Link, entry: &FdbEntry) -> Result<()> {
        let mut request = self
            .handle()
            .neighbours()
            .add_bridge(link.index, &entry.mac)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace();
        request.message_mut().attributes.push(NeighbourAttribute::Destination(destination(entry.dst)));
        if let Some(port) = entry.port {
            request.message_mut().attributes.push(NeighbourAttribute::Port(port));
        }
        request
            .execute()
            .await
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("adding FDB entry {entry} on {}", link.name))
    }

    /// The MACs a bridge learned behind its port `port` (dynamic `master` entries).
    pub async fn learned_macs(&self, port: &Link) -> Result<Vec<[u8; 6]>> {
        let mut macs: Vec<[u8; 6]> = self.fdb_messages(port).await?.iter().filter_map(learned_mac_of).collect();
        macs.sort();
        macs.dedup();
        Ok(macs)
    }

    /// Makes the bridge forget that `mac` is behind `port` (it learns it again from traffic);
    /// returns false when it had no such entry.
    pub async fn forget_learned(&self, port: &Link, mac_addr: &[u8; 6]) -> Result<bool> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = port.index;
        msg.header.flags = NeighbourFlags::Controller;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac_addr.to_vec()));
        match self.handle().neighbours().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, Errno::ENOENT) => Ok(false),
            Err(e) => Err(anyhow!(e)).with_context(|| {
                format!("removing the learned FDB entry {} from {}", mac::format(mac_addr), port.name)
            }),
        }
    }

    /// Removes every `self` entry for `mac` from `link`; returns false when there was none.
    pub async fn delete_fdb(&self, link: &Link, mac_addr: &[u8; 6]) -> Result<bool> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = link.index;
        msg.header.flags = NeighbourFlags::Own;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes.push(NeighbourAttribute::LinkLayerAddress(mac_addr.to_vec()));
        match self.handle().neighbours().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, Errno::ENOENT) => Ok(false),
            Err(e) => Err(anyhow!(e))
                .with_context(|| format!("removing FDB entry {} from {}", mac::format(mac_addr), link.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(flags: NeighbourFlags, state: NeighbourState, attrs: Vec<NeighbourAttribute>) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.flags = flags;
        msg.header.state = state;
        msg.attributes = attrs;
        msg
    }

    #[test]
    fn reads_self_permanent_entries_only() {
        let mac_attr = NeighbourAttribute::LinkLayerAddress(vec![2, 0x42, 10, 0, 0, 5]);
        let dst = NeighbourAttribute::Destination(NeighbourAddress::Other(vec![10, 250, 0, 2]));
        let entry =
            fdb_entry_of(&message(NeighbourFlags::Own, NeighbourState::Permanent, vec![mac_attr.clone(), dst.clone()]));
        assert_eq!(
            entry,
            Some(FdbEntry { mac: [2, 0x42, 10, 0, 0, 5], dst: "10.250.0.2".parse().unwrap(), port: None })
        );
        // iproute2 adds permanent entries as PERMANENT|NOARP.
        let iproute2 = message(NeighbourFlags::Own, NeighbourState::Other(0xc0), vec![mac_attr.clone(), dst.clone()]);
        assert_eq!(fdb_entry_of(&iproute2).map(|e| e.mac), Some([2, 0x42, 10, 0, 0, 5]));
        // Learned by the bridge (master), or not permanent, or without a destination: not ours.
        assert_eq!(
            fdb_entry_of(&message(
                NeighbourFlags::Controller,
                NeighbourState::Permanent,
                vec![mac_attr.clone(), dst.clone()]
            )),
            None
        );
        assert_eq!(
            fdb_entry_of(&message(NeighbourFlags::Own, NeighbourState::Reachable, vec![mac_attr.clone(), dst])),
            None
        );
        assert_eq!(
            fdb_entry_of(&message(NeighbourFlags::Own, NeighbourState::Permanent, vec![mac_attr.clone()])),
            None
        );
    }

    #[test]
    fn learned_entries() {
        let attrs =
            vec![NeighbourAttribute::LinkLayerAddress(vec![2, 0x42, 10, 0, 0, 5]), NeighbourAttribute::Controller(4)];
        let learned = message(NeighbourFlags::empty(), NeighbourState::Reachable, attrs.clone());
        assert_eq!(learned_mac_of(&learned), Some([2, 0x42, 10, 0, 0, 5]));
        // The port's own address (permanent), static entries and the link's own are not learned.
        assert_eq!(learned_mac_of(&message(NeighbourFlags::empty(), NeighbourState::Permanent, attrs.clone())), None);
        assert_eq!(learned_mac_of(&message(NeighbourFlags::empty(), NeighbourState::Noarp, attrs.clone())), None);
        assert_eq!(learned_mac_of(&message(NeighbourFlags::Own, NeighbourState::Reachable, attrs[..1].to_vec())), None);
    }

    #[test]
    fn reads_ports_and_ipv6_destinations() {
        let v6: Ipv6Addr = "fd00::2".parse().unwrap();
        let msg = message(
            NeighbourFlags::Own,
            NeighbourState::Permanent,
            vec![
                NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
                NeighbourAttribute::Destination(NeighbourAddress::Other(v6.octets().to_vec())),
                NeighbourAttribute::Port(8472),
            ],
        );
        let entry = fdb_entry_of(&msg).unwrap();
        assert_eq!(entry.dst, IpAddr::V6(v6));
        assert_eq!(entry.port, Some(8472));
        assert_eq!(entry.to_string(), "02:00:00:00:00:01 dst fd00::2 port 8472");
    }
}
