//! loom-host's own part: a veth pair per endpoint, host routes to the container's addresses
//! between Join and Leave, a link-local gateway on the host end, and per-endpoint firewall policy
//! for forwarding, optional masquerade and published ports. What every driver does the same way
//! (records, turns, ports, restore, leftovers) is the driver kit's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use ipnetwork::IpNetwork;
use netloom_dataplane::Netlink;
use netloom_driver_kit::guard::{firewall_call, refuse_overlap};
use netloom_driver_kit::{leftovers, restore, Errors, Registry, Snapshot};
use netloom_firewall::{Firewall, NetworkPolicy};
use netloom_plugin_api::addressing::short_id;
use netloom_plugin_api::siblings::ClaimedSubnets;
use netloom_plugin_api::PluginResult;
use tracing::{info, warn};

use crate::plumbing;
use crate::policy;
use crate::state::{pick_table, EndpointRecord, NetworkRecord, OWNER_PREFIX, TABLES};

pub const DRIVER: &str = "loom-host";

pub struct HostDriver {
    pub(crate) netlink: Netlink,
    pub(crate) firewall: Arc<dyn Firewall>,
    pub(crate) registry: Registry<NetworkRecord, EndpointRecord>,
}

impl HostDriver {
    /// Gives internal networks recorded without a routing table one, and reconciles the kernel
    /// with the records, before the socket opens.
    pub async fn start(
        netlink: Netlink,
        firewall: Arc<dyn Firewall>,
        registry: Registry<NetworkRecord, EndpointRecord>,
    ) -> Result<Self> {
        // Internal networks recorded before they got a routing table get one now.
        let (mut taken, untabled): (Vec<u32>, Vec<NetworkRecord>) = {
            let maps = registry.maps();
            let taken = maps.networks.values().filter_map(|n| n.table).collect();
            (taken, maps.networks.values().filter(|n| n.internal && n.table.is_none()).cloned().collect())
        };
        for mut net in untabled {
            let table = pick_table(&net.id, &taken);
            taken.push(table);
            net.table = Some(table);
            info!(network = %short_id(&net.id), table, "internal network gets a routing table of its own");
            registry.put_network(net).await?;
        }
        let driver = Self { netlink, firewall, registry };
        driver.reconcile(&driver.registry.snapshot()).await;
        Ok(driver)
    }

    async fn reconcile(&self, state: &Snapshot<NetworkRecord, EndpointRecord>) {
        let started = Instant::now();
        for net in state.networks.values() {
            if let Err(e) = plumbing::enable_forwarding(net) {
                warn!(network = %short_id(&net.id), "{e:#}");
            }
        }
        let restored =
            restore::side_by_side(
                state.known_endpoints(),
                |(net, ep)| async move { self.restore_links(net, ep).await },
            )
            .await;
        let joined: Vec<_> = restored.into_iter().filter(|(_, ep)| ep.joined).collect();
        // One policy per endpoint: installed together, or iptables would list the whole ruleset
        // once per endpoint.
        let policies: Vec<NetworkPolicy> = joined.iter().map(|(net, ep)| policy::of(net, ep)).collect();
        let ids: Vec<&str> = joined.iter().map(|(_, ep)| ep.id.as_str()).collect();
        restore::policies(&*self.firewall, &policies, &ids).await;
        let published: Vec<_> = policies
            .into_iter()
            .zip(&joined)
            .map(|(policy, (_, ep))| (policy, ep.id.as_str(), ep.ports.as_slice()))
            .collect();
        restore::ports(&*self.firewall, &published).await;
        self.remove_leftovers(state).await;
        restore::done(started, state.networks.len(), state.endpoints.len());
    }

    /// The endpoint's veth, addresses and routes as recorded; false when there is nothing to
    /// restore (its veth went with its container) or it failed (logged).
    async fn restore_links(&self, net: &NetworkRecord, ep: &EndpointRecord) -> bool {
        if restore::present_link(&self.netlink, &ep.host_veth, &ep.id).await.is_none() {
            return false;
        }
        let restored = async {
            let host = plumbing::ensure_endpoint(&self.netlink, net, ep).await?;
            if ep.joined {
                plumbing::add_routes(&self.netlink, &host, net, ep).await?;
            }
            anyhow::Ok(())
        };
        match restored.await {
            Ok(()) => true,
            Err(e) => {
                warn!(endpoint = %short_id(&ep.id), "could not restore endpoint: {e:#}");
                false
            }
        }
    }

    /// Links and firewall policies tagged as loom-host's that no record explains.
    async fn remove_leftovers(&self, state: &Snapshot<NetworkRecord, EndpointRecord>) {
        let owners = state.owners();
        leftovers::sweep_links(&self.netlink, OWNER_PREFIX, |_, owner| owners.contains(owner)).await;
        self.remove_leftover_rules(state).await;
        let live: BTreeSet<String> = state.endpoints.values().filter(|e| e.joined).map(policy::id).collect();
        leftovers::sweep_firewall(&*self.firewall, |id| policy::owns(id) && !live.contains(id)).await;
    }

    /// Routing rules in loom-host's tables that no joined endpoint of an internal network explains,
    /// and the tables no internal network owns.
    async fn remove_leftover_rules(&self, state: &Snapshot<NetworkRecord, EndpointRecord>) {
        let live: Vec<_> = state
            .endpoints
            .values()
            .filter(|e| e.joined)
            .filter_map(|e| state.networks.get(&e.network_id).and_then(|n| n.table).map(|t| plumbing::rules(t, e)))
            .flatten()
            .chain(state.networks.values().filter_map(|n| n.table).flat_map(plumbing::host_rules))
            .collect();
        let tables: BTreeSet<u32> = state.networks.values().filter_map(|n| n.table).collect();
        match self.netlink.iif_rules(|t| TABLES.contains(&t)).await {
            Ok(rules) => {
                for rule in rules.into_iter().filter(|r| !live.contains(r)) {
                    info!(interface = %rule.interface, table = rule.table, "removing leftover routing rule");
                    if let Err(e) = self.netlink.delete_iif_rule(&rule).await {
                        warn!("{e:#}");
                    }
                    if !tables.contains(&rule.table) {
                        if let Err(e) = self.netlink.flush_table(rule.table).await {
                            warn!("{e:#}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing routing rules for leftovers: {e:#}"),
        }
    }

    /// Refuses a subnet that overlaps another loom-host network's, or a route the host already
    /// has through some interface (a loom-bridge network, docker0, a LAN).
    pub(crate) async fn check_overlap(&self, network_id: &str, subnets: &[IpNetwork]) -> PluginResult<()> {
        let others = self.claimed().into_iter().filter(|c| c.network_id != network_id).collect();
        refuse_overlap(&self.netlink, subnets, others, None).await
    }

    pub(crate) fn claimed(&self) -> Vec<ClaimedSubnets> {
        let maps = self.registry.maps();
        maps.networks
            .values()
            .map(|n| ClaimedSubnets {
                driver: DRIVER.into(),
                network_id: n.id.clone(),
                detail: String::new(),
                subnets: n.subnets().collect(),
            })
            .collect()
    }

    /// Removes the endpoint's firewall policy (its published ports with it), bounded.
    pub(crate) async fn remove_policy(&self, ep: &EndpointRecord) -> Result<()> {
        let what = format!("removing endpoint {}", short_id(&ep.id));
        firewall_call(&*self.firewall, what, self.firewall.remove_network_by_id(&policy::id(ep))).await
    }

    /// Takes the endpoint off the host: firewall policy, routes and rules, veth pair; keeps going
    /// past errors and reports them all.
    pub(crate) async fn teardown_endpoint(&self, net: Option<&NetworkRecord>, ep: &EndpointRecord) -> Result<()> {
        let mut errors = Errors::new(format!("removing endpoint {}", short_id(&ep.id)));
        errors.note(self.remove_policy(ep).await);
        errors.note(plumbing::remove_routes(&self.netlink, net, ep).await);
        errors.note(self.netlink.delete_link(&ep.host_veth).await);
        errors.finish()
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
