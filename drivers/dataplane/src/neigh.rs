//! Permanent neighbour (ARP / NDP) entries: "`ip` is at `mac`" on a link, so the kernel — or a
//! VXLAN link answering ARP itself — never has to ask.

use std::net::IpAddr;

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::AddressFamily;

use crate::{is_errno, mac, Link, Netlink};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighbourEntry {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

impl std::fmt::Display for NeighbourEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} lladdr {}", self.ip, mac::format(&self.mac))
    }
}

/// Reads a permanent IPv4/IPv6 entry out of a neighbour message.
pub fn neighbour_entry_of(msg: &NeighbourMessage) -> Option<NeighbourEntry> {
    if !crate::fdb::is_permanent(msg.header.state) {
        return None;
    }
    let mut ip = None;
    let mut mac_addr = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLayerAddress(lla) if lla.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(lla);
                mac_addr = Some(m);
            }
            _ => {}
        }
    }
    Some(NeighbourEntry { ip: ip?, mac: mac_addr? })
}

impl Netlink {
    /// The permanent neighbour entries on `link`, both families.
    pub async fn permanent_neighbours(&self, link: &Link) -> Result<Vec<NeighbourEntry>> {
        let messages: Vec<NeighbourMessage> = self
            .handle()
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("listing neighbour entries of {}", link.name))?;
        let mut entries: Vec<NeighbourEntry> = messages
            .iter()
            .filter(|m| m.header.ifindex == link.index)
            .filter(|m| matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6))
            .filter_map(neighbour_entry_of)
            .collect();
        entries.sort();
        Ok(entries)
    }

    /// Adds a permanent entry, replacing whatever the kernel had for that address on `link`.
    pub async fn ensure_neighbour(&self, link: &Link, entry: &NeighbourEntry) -> Result<()> {
        self.handle()
            .neighbours()
            .add(link.index, entry.ip)
            .link_layer_address(&entry.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("adding neighbour {entry} on {}", link.name))
    }

    /// Removes the entry for `ip` from `link`; returns false when there was none.
    pub async fn delete_neighbour(&self, link: &Link, ip: IpAddr) -> Result<bool> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.ifindex = link.index;
        msg.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        match self.handle().neighbours().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, Errno::ENOENT) => Ok(false),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("removing neighbour {ip} from {}", link.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_entries_only() {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.state = NeighbourState::Permanent;
        msg.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet("10.9.0.5".parse().unwrap())),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0x42, 10, 9, 0, 5]),
        ];
        let entry = neighbour_entry_of(&msg).unwrap();
        assert_eq!(entry.to_string(), "10.9.0.5 lladdr 02:42:0a:09:00:05");
        msg.header.state = NeighbourState::Stale;
        assert_eq!(neighbour_entry_of(&msg), None);
    }
}
