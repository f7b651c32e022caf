//! loom-bridge's own part: a Linux bridge per network, a veth pair per endpoint on it, and the
//! network's firewall policy for NAT, isolation and published ports. What every driver does the
//! same way (records, turns, ports, restore, leftovers) is the driver kit's.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use netloom_dataplane::{sysctl, BridgeSpec, FastPath, Link, Netlink, VethSpec};
use netloom_driver_kit::guard::{firewall_call, refuse_overlap};
use netloom_driver_kit::{leftovers, ports, restore, Endpoint, Errors, Network, Registry, Snapshot};
use netloom_firewall::{Firewall, NetworkPolicy};
use netloom_plugin_api::addressing::short_id as short;
use netloom_plugin_api::siblings::ClaimedSubnets;
use netloom_plugin_api::PluginResult;
use tracing::{info, warn};

use crate::state::{EndpointRecord, NetworkRecord, OWNER_PREFIX};

pub const DRIVER: &str = "loom-bridge";

pub struct BridgeDriver {
    pub(crate) netlink: Netlink,
    pub(crate) firewall: Arc<dyn Firewall>,
    pub(crate) registry: Registry<NetworkRecord, EndpointRecord>,
    pub(crate) fastpath: Arc<FastPath>,
}

impl BridgeDriver {
    /// Reconciles the kernel with the records before the socket opens.
    pub async fn start(
        netlink: Netlink,
        firewall: Arc<dyn Firewall>,
        registry: Registry<NetworkRecord, EndpointRecord>,
    ) -> Result<Self> {
        let fastpath = Arc::new(FastPath::new(netlink.clone()));
        let driver = Self { netlink, firewall, registry, fastpath };
        driver.reconcile(&driver.registry.snapshot()).await;
        Ok(driver)
    }

    async fn reconcile(&self, state: &Snapshot<NetworkRecord, EndpointRecord>) {
        let started = Instant::now();
        for net in state.networks.values() {
            if let Err(e) = self.ensure_network(net).await {
                warn!(network = %net.id, "could not restore network: {e:#}");
            }
        }
        let known = state.known_endpoints();
        restore::side_by_side(known.clone(), |(net, ep)| async move {
            match self.restore_endpoint(net, ep).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(endpoint = %ep.id, "could not restore endpoint: {e:#}");
                    false
                }
            }
        })
        .await;
        for net in state.networks.values() {
            let endpoints: Vec<_> = known.iter().filter(|(n, _)| n.id == net.id).map(|(_, ep)| *ep).collect();
            if let Err(e) = self.restore_fast_paths(net, &endpoints).await {
                warn!(network = %short(&net.id), "could not restore the fast path: {e:#}");
            }
        }
        let published: Vec<_> =
            known.iter().map(|(net, ep)| (policy(net), ep.id.as_str(), ep.ports.as_slice())).collect();
        restore::ports(&*self.firewall, &published).await;
        for net in state.networks.values() {
            let live: Vec<String> = state
                .endpoints
                .values()
                .filter(|e| e.network_id == net.id && !e.ports.is_empty())
                .map(|e| e.id.clone())
                .collect();
            match self.firewall.retain_endpoints(&policy(net), &live).await {
                Ok(0) => {}
                Ok(n) => info!(network = %short(&net.id), removed = n, "withdrew ports of endpoints that are gone"),
                Err(e) => warn!(network = %short(&net.id), "checking published ports: {e:#}"),
            }
        }
        self.remove_leftovers(state).await;
        restore::done(started, state.networks.len(), state.endpoints.len());
    }

    /// Links and rules tagged as ours whose network or endpoint is no longer in the records.
    async fn remove_leftovers(&self, state: &Snapshot<NetworkRecord, EndpointRecord>) {
        let owners = state.owners();
        leftovers::sweep_links(&self.netlink, OWNER_PREFIX, |_, owner| owners.contains(owner)).await;
        leftovers::sweep_firewall(&*self.firewall, |id| owns(id) && !state.networks.contains_key(id)).await;
    }

    /// Refuses a subnet that overlaps another loom-bridge network's, or a route the host already
    /// has through another interface (a loom-host network, docker0, a LAN).
    pub(crate) async fn check_overlap(&self, record: &NetworkRecord) -> PluginResult<()> {
        let others = self.claimed().into_iter().filter(|c| c.network_id != record.id).collect();
        refuse_overlap(&self.netlink, &record.subnets(), others, Some(&record.owner())).await
    }

    pub(crate) fn claimed(&self) -> Vec<ClaimedSubnets> {
        let maps = self.registry.maps();
        maps.networks
            .values()
            .map(|n| ClaimedSubnets {
                driver: DRIVER.into(),
                network_id: n.id.clone(),
                detail: format!("bridge {}", n.bridge),
                subnets: n.subnets(),
            })
            .collect()
    }

    /// Brings the kernel in line with a network record; safe to repeat.
    pub(crate) async fn ensure_network(&self, net: &NetworkRecord) -> Result<()> {
        sysctl::ensure("net.ipv4.ip_forward", "1")?;
        if net.subnet_v6.is_some() {
            sysctl::ensure("net.ipv6.conf.all.forwarding", "1")?;
        }
        let owner = net.owner();
        let bridge =
            self.netlink.ensure_bridge(&BridgeSpec { name: &net.bridge, mtu: net.options.mtu, owner: &owner }).await?;
        if let Some(gateway) = net.gateway_v4.filter(|_| !net.options.inhibit_ipv4) {
            self.netlink.ensure_address(&bridge, gateway).await?;
        }
        if let Some(gateway) = net.gateway_v6 {
            self.netlink.ensure_address(&bridge, gateway).await?;
        }
        if !net.internal {
            // Lets the host reach published ports at 127.0.0.1: DNAT'd loopback traffic is routed out the bridge.
            netloom_firewall::enable_route_localnet(&net.bridge)?;
        }
        let what = format!("policy of network {}", short(&net.id));
        firewall_call(&*self.firewall, what, self.firewall.add_network(&policy(net))).await
    }

    /// Removes a network's rules and bridge; keeps going past errors and reports them all.
    pub(crate) async fn teardown_network(&self, net: &NetworkRecord) -> Result<()> {
        let mut errors = Errors::new(format!("removing network {}", short(&net.id)));
        let what = format!("removing network {}", short(&net.id));
        errors.note(firewall_call(&*self.firewall, what, self.firewall.remove_network(&policy(net))).await);
        self.forget_fast_path(net).await;
        errors.note(leftovers::delete_owned_link(&self.netlink, &net.bridge, &net.owner()).await);
        errors.finish()
    }

    /// Puts the endpoint's host end on the network's bridge.
    async fn attach_endpoint(&self, net: &NetworkRecord, host: &Link) -> Result<()> {
        let bridge =
            self.netlink.link(&net.bridge).await?.ok_or_else(|| anyhow!("bridge {} is missing", net.bridge))?;
        self.netlink.attach(host, &bridge).await?;
        self.netlink.configure_bridge_port(host, true, !net.options.icc).await
    }

    /// Puts a recorded endpoint's host end back on its bridge; a pair that is gone altogether
    /// (deleted by hand, or with its container while the driver was down) is made again, ready
    /// for a Join, until Docker deletes the endpoint or reconciliation finds Docker has no such
    /// endpoint.
    async fn restore_endpoint(&self, net: &NetworkRecord, ep: &EndpointRecord) -> Result<()> {
        let host = match self.netlink.link(&ep.host_veth).await? {
            Some(host) => host,
            None => {
                info!(endpoint = %short(&ep.id), veth = %ep.host_veth, "re-creating the endpoint's missing veth pair");
                self.ensure_pair(net, ep).await?
            }
        };
        self.attach_endpoint(net, &host).await
    }

    /// Creates (or re-creates) the endpoint's veth pair on its bridge. Its fast path is the
    /// caller's to start once the endpoint is kept (`spawn_fast_path`).
    pub(crate) async fn ensure_endpoint(&self, net: &NetworkRecord, ep: &EndpointRecord) -> Result<()> {
        let host = self.ensure_pair(net, ep).await?;
        self.attach_endpoint(net, &host).await
    }

    /// The endpoint's veth pair, both ends in this namespace; returns the host end.
    async fn ensure_pair(&self, net: &NetworkRecord, ep: &EndpointRecord) -> Result<Link> {
        let owner = ep.owner();
        let spec = VethSpec { host_name: &ep.host_veth, peer_name: &ep.peer_veth, mtu: net.options.mtu, owner: &owner };
        Ok(self.netlink.ensure_veth(&spec).await?.0)
    }

    /// Withdraws the endpoint's ports and removes its veth pair; keeps going past errors and
    /// reports them all.
    pub(crate) async fn teardown_endpoint(&self, net: Option<&NetworkRecord>, ep: &EndpointRecord) -> Result<()> {
        let mut errors = Errors::new(format!("removing endpoint {}", short(&ep.id)));
        if let (Some(net), false) = (net, ep.ports.is_empty()) {
            errors.note(ports::withdraw(&*self.firewall, &policy(net), &ep.id, &ep.ports).await);
        }
        if let Some(net) = net {
            errors.note(self.remove_fast_path(net, ep).await);
        }
        errors.note(self.netlink.delete_link(&ep.host_veth).await);
        errors.finish()
    }
}

/// Whether a firewall id is loom-bridge's: other drivers sharing the firewall namespace their ids
/// as `<driver>.<id>` (loom-host: `loom-host.<endpoint>`); only bare network ids can be ours.
pub fn owns(firewall_id: &str) -> bool {
    !firewall_id.contains('.')
}

pub(crate) fn policy(net: &NetworkRecord) -> NetworkPolicy {
    NetworkPolicy {
        network_id: net.id.clone(),
        bridge: net.bridge.clone(),
        subnets: net.subnets(),
        masquerade: net.options.masquerade,
        snat_source: net.options.snat_source,
        icc: net.options.icc,
        internal: net.internal,
        isolate: true,
    }
}
