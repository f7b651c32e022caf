//! Encrypted overlay networks (`-o encrypted`): the VXLAN traffic of such a network between
//! hosts rides in WireGuard tunnels between the member hosts.
//!
//! Per host, one WireGuard device (`loomwg0`: the kernel's, or a TUN device served in userspace
//! by boringtun, see [`engine`]) lives in a namespace of its own (`<netns-dir>/ovl-crypt`) with
//! this host's tunnel address and nothing else but, in userspace, the TAP device opened packets
//! are written to (`merge`). The VXLAN links of encrypted networks are made
//! in that namespace (their UDP socket stays there) and then moved into their network's
//! namespace, so encrypted VNIs are only reachable through the tunnel: a VXLAN packet from the
//! LAN cannot reach them, and their frames never leave the host in clear. The WireGuard UDP
//! socket itself is in the host's namespace, on the advertise address.
//!
//! Keys: [`keys`] (private key in the state directory, 0600; only public keys go to the store).

mod checksum;
mod coalesce;
pub mod engine;
#[cfg(test)]
mod engine_tests;
mod gso;
mod kernel;
pub mod keys;
mod merge;
mod segment;
mod tun;
mod userspace;

use std::net::{IpAddr, SocketAddr};

use tracing::warn;

pub use engine::{Tunnel, TunnelConfig, WireguardMode, DEFAULT_TUN_PATH};
pub use keys::{KeyPair, PublicKey};

/// The WireGuard device's name inside the tunnel namespace.
pub const DEVICE: &str = "loomwg0";
/// The tunnel namespace's file name under the netns dir.
pub const NETNS_NAME: &str = "ovl-crypt";
/// Bytes WireGuard adds over an IPv4 underlay: outer IPv4 (20), UDP (8), header (16), tag (16).
pub const WIREGUARD_OVERHEAD_V4: u32 = 60;
/// ... over an IPv6 underlay (outer IPv6 is 40 bytes).
pub const WIREGUARD_OVERHEAD_V6: u32 = 80;
/// Default UDP port of the WireGuard socket (on the advertise address).
pub const DEFAULT_PORT: u16 = 51820;

/// Another member host, as the tunnel needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPeer {
    pub host: String,
    pub public_key: PublicKey,
    /// Its WireGuard socket on the underlay.
    pub endpoint: SocketAddr,
    /// Its address inside the tunnel namespace (its encrypted VXLAN links' local address).
    pub tunnel_ip: IpAddr,
}

/// Which WireGuard serves the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelKind {
    Kernel,
    Userspace,
}

impl std::fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TunnelKind::Kernel => "kernel WireGuard",
            TunnelKind::Userspace => "userspace WireGuard (boringtun)",
        })
    }
}

/// Packet and byte counts of the tunnel (for metrics and `loomctl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunnelStats {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Datagrams dropped: unknown sender, failed authentication, no session yet.
    pub dropped: u64,
    pub handshakes: u64,
}

/// The peers a tunnel can serve, in order: one whose tunnel address or endpoint repeats an
/// earlier one's, or whose tunnel address is this host's own, would make the tunnel ambiguous
/// and is left out with a warning.
pub(crate) fn usable_peers(peers: &[TunnelPeer], own_tunnel_ip: IpAddr) -> Vec<&TunnelPeer> {
    let mut usable: Vec<&TunnelPeer> = Vec::new();
    for peer in peers {
        let taken = peer.tunnel_ip == own_tunnel_ip
            || usable.iter().any(|kept| kept.tunnel_ip == peer.tunnel_ip || kept.endpoint == peer.endpoint);
        if taken {
            warn!(host = %peer.host, tunnel_ip = %peer.tunnel_ip, endpoint = %peer.endpoint,
                "tunnel peer left out: its tunnel address or endpoint is already taken");
            continue;
        }
        usable.push(peer);
    }
    usable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(host: &str, endpoint: &str, tunnel_ip: &str) -> TunnelPeer {
        TunnelPeer {
            host: host.into(),
            public_key: PublicKey([host.len() as u8; 32]),
            endpoint: endpoint.parse().unwrap(),
            tunnel_ip: tunnel_ip.parse().unwrap(),
        }
    }

    #[test]
    fn ambiguous_peers_and_this_hosts_address_are_left_out() {
        let peers = [
            peer("b", "192.0.2.2:51820", "100.64.0.2"),
            peer("c-same-tunnel-ip", "192.0.2.3:51820", "100.64.0.2"),
            peer("d-same-endpoint", "192.0.2.2:51820", "100.64.0.4"),
            peer("self", "192.0.2.5:51820", "100.64.0.1"),
            peer("e", "192.0.2.6:51820", "100.64.0.6"),
        ];
        let usable: Vec<&str> =
            usable_peers(&peers, "100.64.0.1".parse().unwrap()).iter().map(|p| p.host.as_str()).collect();
        assert_eq!(usable, vec!["b", "e"]);
    }
}
