//! The kernel's WireGuard serving the tunnel device: a `wireguard` link made from the underlay's
//! namespace (the kernel opens its UDP socket there, on every address, at the WireGuard port)
//! inside the tunnel namespace; its key and peers are set over generic netlink. Each peer may
//! send from, and is routed to, its tunnel address only.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, Context, Result};
use ipnetwork::IpNetwork;
use netloom_dataplane::{Netlink, Netns, WireguardControl, WireguardKey, WireguardPeerSpec};
use tracing::{debug, info};

use super::engine::TunnelConfig;
use super::{usable_peers, KeyPair, PublicKey, TunnelPeer, TunnelStats, DEVICE};

pub(crate) struct KernelDevice {
    control: Mutex<WireguardControl>,
    own_tunnel_ip: IpAddr,
    /// The peers as last set, to change only what differs (unchanged peers keep their sessions).
    peers: Mutex<Vec<TunnelPeer>>,
}

impl KernelDevice {
    /// Makes the device in `ns` with `key` and the configured port. The caller addresses it and
    /// deletes it when this fails.
    pub(crate) async fn start(config: &TunnelConfig<'_>, key: &KeyPair, ns: &Netns) -> Result<KernelDevice> {
        let underlay = match config.underlay_netns {
            None => Netlink::connect()?,
            Some(path) => Netlink::connect_in(
                &Netns::open(path)?.ok_or_else(|| anyhow!("underlay namespace {} does not exist", path.display()))?,
            )?,
        };
        underlay.create_wireguard_in(DEVICE, ns).await?;
        let mut control = WireguardControl::connect_in(ns, DEVICE)?;
        control.set_private_key(&secret_of(key), Some(config.listen.port()))?;
        Ok(KernelDevice { control: Mutex::new(control), own_tunnel_ip: config.tunnel_ip, peers: Mutex::default() })
    }

    pub(crate) fn set_peers(&self, peers: &[TunnelPeer]) -> Result<()> {
        let wanted: Vec<TunnelPeer> = usable_peers(peers, self.own_tunnel_ip).into_iter().cloned().collect();
        let mut current = lock(&self.peers);
        let (upsert, remove) = changes(&current, &wanted)?;
        lock(&self.control).update_peers(&upsert, &remove)?;
        debug!(peers = wanted.len(), changed = upsert.len(), removed = remove.len(), "kernel tunnel peers set");
        *current = wanted;
        Ok(())
    }

    pub(crate) fn set_key(&self, key: &KeyPair) -> Result<()> {
        lock(&self.control).set_private_key(&secret_of(key), None)?;
        info!(public_key = %key.public, "tunnel key replaced");
        Ok(())
    }

    /// Bytes and handshakes as the kernel counts them (it keeps no per-peer packet counts; the
    /// device's own counters have those).
    pub(crate) fn stats(&self) -> Result<TunnelStats> {
        let totals = lock(&self.control).totals().context("reading the kernel tunnel's counters")?;
        Ok(TunnelStats {
            tx_bytes: totals.tx_bytes,
            rx_bytes: totals.rx_bytes,
            handshakes: totals.peers_with_handshake,
            ..TunnelStats::default()
        })
    }

    pub(crate) fn peer_keys(&self) -> Vec<PublicKey> {
        lock(&self.peers).iter().map(|peer| peer.public_key).collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn secret_of(key: &KeyPair) -> WireguardKey {
    key.static_secret().to_bytes()
}

/// What to tell the kernel to go from `current` to `wanted`: peers new or changed (by key), and
/// keys no longer wanted.
fn changes(current: &[TunnelPeer], wanted: &[TunnelPeer]) -> Result<(Vec<WireguardPeerSpec>, Vec<WireguardKey>)> {
    let mut upsert = Vec::new();
    for peer in wanted.iter().filter(|peer| !current.contains(peer)) {
        let prefix = if peer.tunnel_ip.is_ipv4() { 32 } else { 128 };
        upsert.push(WireguardPeerSpec {
            public_key: peer.public_key.0,
            endpoint: peer.endpoint,
            allowed_ip: IpNetwork::new(peer.tunnel_ip, prefix)?,
        });
    }
    let remove = current
        .iter()
        .filter(|old| !wanted.iter().any(|peer| peer.public_key == old.public_key))
        .map(|old| old.public_key.0)
        .collect();
    Ok((upsert, remove))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn peer(n: u8) -> TunnelPeer {
        TunnelPeer {
            host: format!("h{n}"),
            public_key: PublicKey([n; 32]),
            endpoint: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 51820),
            tunnel_ip: IpAddr::V4(Ipv4Addr::new(100, 64, 0, n)),
        }
    }

    #[test]
    fn only_new_and_changed_peers_are_sent_and_departed_ones_removed() {
        let mut moved = peer(3);
        moved.endpoint = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 33)), 51820);
        let (upsert, remove) = changes(&[peer(2), peer(3), peer(4)], &[peer(2), moved.clone(), peer(5)]).unwrap();
        let keys: Vec<u8> = upsert.iter().map(|p| p.public_key[0]).collect();
        assert_eq!(keys, vec![3, 5]);
        assert_eq!(upsert[0].endpoint, moved.endpoint);
        assert_eq!(upsert[1].allowed_ip, "100.64.0.5/32".parse::<IpNetwork>().unwrap());
        assert_eq!(remove, vec![[4; 32]]);
    }

    #[test]
    fn a_new_key_for_a_host_replaces_the_old_one() {
        let mut rotated = peer(2);
        rotated.public_key = PublicKey([20; 32]);
        let (upsert, remove) = changes(&[peer(2)], &[rotated]).unwrap();
        assert_eq!(upsert.len(), 1);
        assert_eq!(upsert[0].public_key, [20; 32]);
        assert_eq!(remove, vec![[2; 32]]);
    }
}
