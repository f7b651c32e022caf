//! The kernel side of loom-overlay on one host.
//!
//! Per network, a network namespace of its own (`<netns-dir>/ovl-<VNI>`, kept by a bind mount)
//! holds a bridge `br0` and the VXLAN link `vxlan0`, whose UDP socket stays in the host's
//! namespace, on the underlay. The namespace has no address and no route, so the overlay is cut
//! off from the host's routing and from every other overlay, and the host's firewall never sees
//! its bridged traffic. Per endpoint, a veth pair: one end on `br0`, the other in the host's
//! namespace until Docker moves it into the container.
//!
//! Remote endpoints are static entries on `vxlan0`: FDB (MAC → remote VTEP) and neighbour
//! (IP → MAC, answered by the VXLAN link itself, so ARP never crosses the underlay). No
//! learning, no multicast, no flooding.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use netloom_dataplane::{mac, BridgeSpec, FdbEntry, Link, NeighbourEntry, Netlink, Netns, VethSpec, VxlanSpec};
use netloom_driver_kit::{leftovers, Errors};
use tracing::{debug, info, warn};

use crate::peers::Changes;
use crate::records::{short, LocalEndpoint, NetworkConfig};

pub const BRIDGE: &str = "br0";
pub const VXLAN: &str = "vxlan0";
const NETNS_PREFIX: &str = "ovl-";
/// Every link loom-overlay makes carries an alias starting with this.
pub const OWNER_PREFIX: &str = "netloom:overlay:";

pub fn network_owner(network: &str) -> String {
    format!("{OWNER_PREFIX}{network}")
}

pub fn endpoint_owner(network: &str, endpoint: &str) -> String {
    format!("{OWNER_PREFIX}{network}:{endpoint}")
}

/// One network's live kernel objects on this host.
pub struct NetDataplane {
    pub network: String,
    pub vni: u32,
    pub netns: Netns,
    /// A netlink connection inside the namespace.
    pub netlink: Netlink,
    pub bridge: Link,
    pub vxlan: Link,
    /// Its VXLAN socket is in the tunnel namespace: frames to other hosts go through WireGuard.
    pub encrypted: bool,
}

pub struct Fabric {
    /// In the host's namespace.
    netlink: Netlink,
    netns_dir: PathBuf,
    port: u16,
}

impl Fabric {
    pub fn new(netlink: Netlink, netns_dir: PathBuf, port: u16) -> Self {
        Self { netlink, netns_dir, port }
    }

    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    pub fn netns_path(&self, vni: u32) -> PathBuf {
        self.netns_dir.join(format!("{NETNS_PREFIX}{vni}"))
    }

    /// The VNI a namespace file of ours is for.
    pub fn vni_of_netns(name: &str) -> Option<u32> {
        name.strip_prefix(NETNS_PREFIX)?.parse().ok()
    }

    /// Namespace, bridge and VXLAN link of `config`, made or repaired; what exists in the right
    /// shape is left alone (entries, ports and traffic keep going). The VXLAN link is made
    /// through `underlay` (the tunnel namespace's connection for an encrypted network, with
    /// `vtep` its tunnel address), where its UDP socket then stays; else in the host's namespace.
    pub async fn ensure_network(
        &self,
        config: &NetworkConfig,
        vtep: IpAddr,
        underlay: Option<&Netlink>,
    ) -> Result<NetDataplane> {
        let owner = network_owner(&config.key);
        let netns = Netns::ensure(self.netns_path(config.vni))?;
        let netlink = Netlink::connect_in(&netns)?;
        // The namespace's bridge only switches: keep br_netfilter (loaded by dockerd) out of it.
        let _ = netns.run(|| {
            for key in [
                "net.bridge.bridge-nf-call-iptables",
                "net.bridge.bridge-nf-call-ip6tables",
                "net.bridge.bridge-nf-call-arptables",
            ] {
                let _ = netloom_dataplane::sysctl::ensure(key, "0");
            }
            Ok(())
        });
        let bridge = netlink.ensure_bridge(&BridgeSpec { name: BRIDGE, mtu: Some(config.mtu), owner: &owner }).await?;
        let spec = VxlanSpec {
            name: VXLAN,
            vni: config.vni,
            local: vtep,
            port: self.port,
            mtu: Some(config.mtu),
            proxy_arp: true,
            owner: &owner,
        };
        let vxlan = underlay.unwrap_or(&self.netlink).ensure_vxlan_in(&spec, &netns, &netlink).await?;
        netlink.attach(&vxlan, &bridge).await?;
        let vxlan = netlink.link(VXLAN).await?.ok_or_else(|| anyhow!("{VXLAN} vanished"))?;
        Ok(NetDataplane {
            network: config.key.clone(),
            vni: config.vni,
            netns,
            netlink,
            bridge,
            vxlan,
            encrypted: config.encrypted,
        })
    }

    /// Removes a network's namespace and everything in it. The VXLAN link is deleted first, so
    /// its VNI is free at once (the kernel destroys a namespace's links asynchronously).
    pub async fn teardown_network(&self, vni: u32, dataplane: Option<Arc<NetDataplane>>) -> Result<()> {
        let path = self.netns_path(vni);
        let opened = match &dataplane {
            Some(_) => None,
            None => Netns::open(&path)?.map(|ns| Netlink::connect_in(&ns)).transpose()?,
        };
        let mut errors = Errors::new(format!("removing network namespace {}", path.display()));
        if let Some(netlink) = dataplane.as_ref().map(|dp| &dp.netlink).or(opened.as_ref()) {
            for link in errors.note(netlink.links().await).unwrap_or_default() {
                if link.kind.is_some() && link.name != "lo" {
                    errors.note(netlink.delete_link(&link.name).await);
                }
            }
        }
        // The connection's socket holds the namespace: let its task see the handle gone.
        drop((dataplane, opened));
        tokio::task::yield_now().await;
        errors.note(Netns::delete(&path));
        errors.finish()?;
        info!(vni, "network namespace removed");
        Ok(())
    }

    /// The endpoint's veth pair, made if missing, its bridge end on `br0`.
    pub async fn ensure_endpoint(&self, dp: &NetDataplane, config: &NetworkConfig, ep: &LocalEndpoint) -> Result<()> {
        let owner = crate::fabric::endpoint_owner(&dp.network, &ep.id);
        let inner = dp.netlink.link(&ep.bridge_veth).await?;
        let outer = self.netlink.link(&ep.container_veth).await?;
        let inner = match (inner, outer) {
            (Some(inner), _) if inner.alias.as_deref() == Some(owner.as_str()) => inner,
            (inner, outer) => {
                if inner.is_some() {
                    dp.netlink.delete_link(&ep.bridge_veth).await?;
                }
                if outer.is_some_and(|o| o.alias.as_deref() == Some(owner.as_str())) {
                    self.netlink.delete_link(&ep.container_veth).await?;
                }
                let spec = VethSpec {
                    host_name: &ep.bridge_veth,
                    peer_name: &ep.container_veth,
                    mtu: Some(config.mtu),
                    owner: &owner,
                };
                // Docker gives the container end the endpoint's MAC when it moves it.
                let (inner, _) = self.netlink.create_veth_across(&spec, &dp.netns, &dp.netlink).await?;
                inner
            }
        };
        dp.netlink.attach(&inner, &dp.bridge).await
    }

    /// Removes the endpoint's veth pair, wherever its ends are.
    pub async fn teardown_endpoint(&self, dp: Option<&NetDataplane>, ep: &LocalEndpoint) -> Result<()> {
        let owner = endpoint_owner(&ep.network, &ep.id);
        if let Some(dp) = dp {
            dp.netlink.delete_link(&ep.bridge_veth).await?;
        }
        leftovers::delete_owned_link(&self.netlink, &ep.container_veth, &owner).await
    }

    /// Whether the endpoint's bridge end is still there (the pair dies with a container that
    /// vanished without Docker taking its interface back).
    pub async fn endpoint_alive(&self, dp: &NetDataplane, ep: &LocalEndpoint) -> Result<bool> {
        Ok(dp.netlink.link(&ep.bridge_veth).await?.is_some())
    }

    pub async fn kernel_entries(&self, dp: &NetDataplane) -> Result<(Vec<FdbEntry>, Vec<NeighbourEntry>)> {
        Ok((dp.netlink.fdb_entries(&dp.vxlan).await?, dp.netlink.permanent_neighbours(&dp.vxlan).await?))
    }

    /// Applies peer changes; keeps going past errors and reports them all.
    pub async fn apply(&self, dp: &NetDataplane, changes: &Changes) -> Result<()> {
        let nl = &dp.netlink;
        let vx = &dp.vxlan;
        let mut errors = Errors::new(format!("programming peers of network {}", short(&dp.network)));
        // Removals first: an address moving to a new MAC must not briefly answer with both.
        for ip in &changes.neighbour_remove {
            if errors.note(nl.delete_neighbour(vx, *ip).await).is_some() {
                info!(network = %short(&dp.network), ip = %ip, "peer address removed");
            }
        }
        for mac_addr in &changes.fdb_remove {
            if errors.note(nl.delete_fdb(vx, mac_addr).await).is_some() {
                info!(network = %short(&dp.network), mac = %mac::format(mac_addr), "peer MAC removed");
            }
        }
        for entry in &changes.fdb_set {
            if errors.note(nl.ensure_fdb(vx, entry).await).is_some() {
                info!(network = %short(&dp.network), entry = %entry, "peer MAC set");
            }
        }
        for entry in &changes.neighbour_set {
            if errors.note(nl.ensure_neighbour(vx, entry).await).is_some() {
                info!(network = %short(&dp.network), entry = %entry, "peer address set");
            }
        }
        if !changes.neighbour_set.is_empty() {
            if let Err(e) = announce(dp, &changes.neighbour_set) {
                debug!("announcing peer addresses: {e:#}");
            }
        }
        errors.finish()
    }

    /// Makes the bridge forget MACs it learned behind the VXLAN link that now belong to this
    /// host's endpoints: an address (and MAC) that moved here from another host would otherwise
    /// be sent back into the tunnel until the learned entry aged out (5 minutes).
    pub async fn forget_moved_here(&self, dp: &NetDataplane, local_macs: &[[u8; 6]]) -> Result<()> {
        if local_macs.is_empty() {
            return Ok(());
        }
        for mac_addr in dp.netlink.learned_macs(&dp.vxlan).await? {
            if local_macs.contains(&mac_addr) && dp.netlink.forget_learned(&dp.vxlan, &mac_addr).await? {
                info!(network = %short(&dp.network), mac = %mac::format(&mac_addr), "MAC moved to this host; learned tunnel entry dropped");
            }
        }
        Ok(())
    }

    /// Links in the host's namespace tagged as loom-overlay's whose endpoint is not in `owners`.
    pub async fn remove_leftover_links(&self, owners: &BTreeSet<String>) {
        leftovers::sweep_links(&self.netlink, OWNER_PREFIX, |_, alias| owners.contains(alias)).await;
    }

    /// Veths in a network's namespace whose endpoint is not in `owners`.
    pub async fn remove_leftover_ports(&self, dp: &NetDataplane, owners: &BTreeSet<String>) {
        match dp.netlink.links().await {
            Ok(links) => {
                for link in links.into_iter().filter(|l| l.is_kind("veth")) {
                    let known = link.alias.as_deref().is_some_and(|a| owners.contains(a));
                    if !known {
                        info!(link = %link.name, network = %short(&dp.network), "removing leftover port");
                        if let Err(e) = dp.netlink.delete_link(&link.name).await {
                            warn!("{e:#}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing ports of network {}: {e:#}", short(&dp.network)),
        }
    }
}

/// Tells the network's local containers where these addresses are now (gratuitous ARP on the
/// bridge): a container whose ARP cache still has an address's previous MAC (the address was
/// reused by a new endpoint) would otherwise keep sending to it until the entry is probed
/// again, several seconds later. Containers without an entry for the address ignore it. The
/// VXLAN link drops ARP replies, so nothing crosses the underlay.
fn announce(dp: &NetDataplane, entries: &[NeighbourEntry]) -> Result<()> {
    let v4: Vec<(std::net::Ipv4Addr, [u8; 6])> = entries
        .iter()
        .filter_map(|e| match e.ip {
            IpAddr::V4(v4) => Some((v4, e.mac)),
            IpAddr::V6(_) => None,
        })
        .collect();
    if v4.is_empty() {
        return Ok(());
    }
    let bridge_index = dp.bridge.index;
    dp.netns.run(move || crate::garp::send(bridge_index, &v4)).context("sending gratuitous ARP")
}
