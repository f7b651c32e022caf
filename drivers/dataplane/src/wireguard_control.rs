//! Keys and peers of a kernel WireGuard link, over generic netlink (family `wireguard`), the
//! interface `wg(8)` uses. Requests are small and answered at once, so a blocking socket is used.

use std::fmt::Debug;
use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use ipnetwork::IpNetwork;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute, WireguardCmd,
    WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use rtnetlink::packet_core::{
    Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use rtnetlink::sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr as NetlinkAddr};

use crate::{names, Netns};

/// A WireGuard key (private or public), raw.
pub type WireguardKey = [u8; 32];

/// A peer as a kernel WireGuard link is told it: who (its public key), where (its UDP endpoint)
/// and which inner source addresses it may use (and is routed to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireguardPeerSpec {
    pub public_key: WireguardKey,
    pub endpoint: SocketAddr,
    pub allowed_ip: IpNetwork,
}

/// What a kernel WireGuard link has carried, summed over its peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireguardTotals {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Peers that completed a handshake at least once.
    pub peers_with_handshake: u64,
}

/// A generic netlink socket in the link's namespace, bound to one link by name.
pub struct WireguardControl {
    socket: Socket,
    family: u16,
    ifname: String,
    sequence: u32,
}

impl WireguardControl {
    /// Connects inside `ns` (where the link lives) and resolves the `wireguard` family; fails
    /// with a clear message when the kernel has no WireGuard.
    pub fn connect_in(ns: &Netns, ifname: &str) -> Result<WireguardControl> {
        names::validate(ifname)?;
        let socket = ns.run(|| -> Result<Socket> {
            let mut socket = Socket::new(NETLINK_GENERIC).context("opening a generic netlink socket")?;
            socket.bind_auto().context("binding a generic netlink socket")?;
            socket.connect(&NetlinkAddr::new(0, 0)).context("connecting a generic netlink socket")?;
            Ok(socket)
        })?;
        let mut control = WireguardControl { socket, family: 0, ifname: ifname.to_string(), sequence: 0 };
        let family = WireguardMessage::family_name();
        let request = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(family.to_string())],
        });
        let replies = control.exchange(request, NLM_F_REQUEST | NLM_F_ACK).map_err(|e| {
            anyhow!("the kernel has no generic netlink family {family:?} (no WireGuard module?): {e:#}")
        })?;
        control.family = replies
            .iter()
            .flat_map(|reply| reply.payload.nlas.iter())
            .find_map(|nla| match nla {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| anyhow!("the kernel named no id for the generic netlink family {family:?}"))?;
        Ok(control)
    }

    /// Sets the link's private key and, when given, its UDP port.
    pub fn set_private_key(&mut self, key: &WireguardKey, listen_port: Option<u16>) -> Result<()> {
        let mut attributes = vec![WireguardAttribute::PrivateKey(*key)];
        attributes.extend(listen_port.map(WireguardAttribute::ListenPort));
        self.set_device(attributes).with_context(|| format!("setting the key of WireGuard link {}", self.ifname))
    }

    /// Adds or updates `upsert` (allowed addresses replaced, sessions of unchanged peers kept)
    /// and removes the peers with the keys in `remove`.
    pub fn update_peers(&mut self, upsert: &[WireguardPeerSpec], remove: &[WireguardKey]) -> Result<()> {
        if upsert.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let attributes = vec![WireguardAttribute::Peers(peer_changes(upsert, remove))];
        self.set_device(attributes).with_context(|| format!("setting the peers of WireGuard link {}", self.ifname))
    }

    /// Bytes carried and handshakes done, summed over the link's peers.
    pub fn totals(&mut self) -> Result<WireguardTotals> {
        let request = self.message(WireguardCmd::GetDevice, Vec::new());
        let replies = self
            .exchange(request, NLM_F_REQUEST | NLM_F_DUMP)
            .with_context(|| format!("reading WireGuard link {}", self.ifname))?;
        Ok(totals_of(replies.iter().map(|reply| &reply.payload)))
    }

    fn set_device(&mut self, mut attributes: Vec<WireguardAttribute>) -> Result<()> {
        attributes.insert(0, WireguardAttribute::IfName(self.ifname.clone()));
        let request = self.message(WireguardCmd::SetDevice, attributes);
        self.exchange(request, NLM_F_REQUEST | NLM_F_ACK).map(|_| ())
    }

    fn message(&self, cmd: WireguardCmd, mut attributes: Vec<WireguardAttribute>) -> GenlMessage<WireguardMessage> {
        if cmd == WireguardCmd::GetDevice {
            attributes.push(WireguardAttribute::IfName(self.ifname.clone()));
        }
        let mut message = GenlMessage::from_payload(WireguardMessage { cmd, attributes });
        message.set_resolved_family_id(self.family);
        message
    }

    /// Sends one request and reads its answers until the acknowledgement (or the end of a dump);
    /// an error answer becomes the error.
    fn exchange<F>(&mut self, payload: GenlMessage<F>, flags: u16) -> Result<Vec<GenlMessage<F>>>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        request.finalize();
        let mut buffer = vec![0; request.buffer_len()];
        request.serialize(&mut buffer);
        self.socket.send(&buffer, 0).context("sending a generic netlink request")?;

        let mut answers = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full().context("reading a generic netlink answer")?;
            let mut offset = 0;
            while offset < datagram.len() {
                let message = NetlinkMessage::<GenlMessage<F>>::deserialize(&datagram[offset..])
                    .map_err(|e| anyhow!("malformed generic netlink answer: {e}"))?;
                let length = message.header.length as usize;
                if length == 0 {
                    bail!("malformed generic netlink answer: a message of length 0");
                }
                offset += (length + 3) & !3;
                if message.header.sequence_number != self.sequence {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(error) if error.code.is_none() => return Ok(answers),
                    NetlinkPayload::Error(error) => return Err(anyhow!(error.to_io())),
                    _ => {}
                }
            }
        }
    }
}

fn peer_changes(upsert: &[WireguardPeerSpec], remove: &[WireguardKey]) -> Vec<WireguardPeer> {
    let mut peers: Vec<WireguardPeer> = upsert
        .iter()
        .map(|peer| {
            let family = match peer.allowed_ip {
                IpNetwork::V4(_) => WireguardAddressFamily::Ipv4,
                IpNetwork::V6(_) => WireguardAddressFamily::Ipv6,
            };
            WireguardPeer(vec![
                WireguardPeerAttribute::PublicKey(peer.public_key),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
                WireguardPeerAttribute::Endpoint(peer.endpoint),
                WireguardPeerAttribute::AllowedIps(vec![WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(family),
                    WireguardAllowedIpAttr::IpAddr(peer.allowed_ip.network()),
                    WireguardAllowedIpAttr::Cidr(peer.allowed_ip.prefix()),
                ])]),
            ])
        })
        .collect();
    peers.extend(remove.iter().map(|key| {
        WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(*key),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
        ])
    }));
    peers
}

fn totals_of<'a>(devices: impl Iterator<Item = &'a WireguardMessage>) -> WireguardTotals {
    let mut totals = WireguardTotals::default();
    let peers = devices.flat_map(|device| device.attributes.iter()).filter_map(|attribute| match attribute {
        WireguardAttribute::Peers(peers) => Some(peers),
        _ => None,
    });
    for peer in peers.flatten() {
        for attribute in &peer.0 {
            match attribute {
                WireguardPeerAttribute::RxBytes(bytes) => totals.rx_bytes += bytes,
                WireguardPeerAttribute::TxBytes(bytes) => totals.tx_bytes += bytes,
                WireguardPeerAttribute::LastHandshake(time) if time.seconds != 0 || time.nano_seconds != 0 => {
                    totals.peers_with_handshake += 1
                }
                _ => {}
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_wireguard::WireguardTimeSpec;
    use std::net::{IpAddr, Ipv4Addr};

    fn spec(last: u8) -> WireguardPeerSpec {
        WireguardPeerSpec {
            public_key: [last; 32],
            endpoint: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)), 51820),
            allowed_ip: IpNetwork::new(IpAddr::V4(Ipv4Addr::new(100, 64, 0, last)), 32).unwrap(),
        }
    }

    /// Emits and parses back a set-device request, as the kernel would read it.
    fn round_trip(peers: Vec<WireguardPeer>) -> WireguardMessage {
        let message = WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes: vec![WireguardAttribute::IfName("loomwg0".into()), WireguardAttribute::Peers(peers)],
        };
        let header = GenlHeader { cmd: message.command(), version: message.version() };
        let mut buffer = vec![0; header.buffer_len() + message.buffer_len()];
        header.emit(&mut buffer);
        message.emit(&mut buffer[header.buffer_len()..]);
        WireguardMessage::parse_with_param(&buffer[header.buffer_len()..], header).unwrap()
    }

    #[test]
    fn peers_are_upserted_with_replaced_allowed_addresses_and_removed_by_key() {
        let parsed = round_trip(peer_changes(&[spec(2), spec(3)], &[[9; 32]]));
        let WireguardAttribute::Peers(peers) = &parsed.attributes[1] else { panic!("no peers in {parsed:?}") };
        assert_eq!(peers.len(), 3);
        let first = &peers[0].0;
        assert!(first.contains(&WireguardPeerAttribute::PublicKey([2; 32])));
        assert!(first.contains(&WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps)));
        assert!(first.contains(&WireguardPeerAttribute::Endpoint(spec(2).endpoint)));
        let allowed = first
            .iter()
            .find_map(|a| match a {
                WireguardPeerAttribute::AllowedIps(ips) => Some(ips),
                _ => None,
            })
            .unwrap();
        assert_eq!(allowed.len(), 1);
        assert!(allowed[0].0.contains(&WireguardAllowedIpAttr::Cidr(32)));
        assert!(allowed[0].0.contains(&WireguardAllowedIpAttr::IpAddr(IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2)))));
        assert!(allowed[0].0.contains(&WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4)));
        assert_eq!(
            peers[2].0,
            vec![
                WireguardPeerAttribute::PublicKey([9; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe)
            ]
        );
    }

    #[test]
    fn totals_sum_bytes_and_count_peers_that_shook_hands() {
        let peer = |rx, tx, seconds| {
            WireguardPeer(vec![
                WireguardPeerAttribute::RxBytes(rx),
                WireguardPeerAttribute::TxBytes(tx),
                WireguardPeerAttribute::LastHandshake(WireguardTimeSpec { seconds, nano_seconds: 0 }),
            ])
        };
        let device = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::Peers(vec![peer(10, 20, 1_700_000_000), peer(1, 2, 0)])],
        };
        let totals = totals_of([&device].into_iter());
        assert_eq!(totals, WireguardTotals { rx_bytes: 11, tx_bytes: 22, peers_with_handshake: 1 });
    }

    #[test]
    fn a_kernel_without_wireguard_is_named_when_connecting() {
        let ns = Netns::open("/proc/self/ns/net").unwrap().unwrap();
        match WireguardControl::connect_in(&ns, "loomwgtest") {
            Ok(_) => println!("this kernel has WireGuard: the refusal is not exercised here"),
            Err(e) => assert!(format!("{e:#}").contains("WireGuard"), "{e:#}"),
        }
    }
}
