//! loom-host's request handlers: a veth pair per endpoint, host routes to the container's
//! addresses between Join and Leave, a link-local gateway on the host end, and per-endpoint
//! firewall policy for forwarding, optional masquerade and published ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{bail, Result};
use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use ipnetwork::IpNetwork;
use netloom_dataplane::{mac, names, Netlink};
use netloom_firewall::Firewall;
use netloom_plugin_api::addressing::{endpoint_address, pools, short_id};
use netloom_plugin_api::host_ports::{host_port_is_free, PortTable, PublishedPort};
use netloom_plugin_api::locks::{bounded, lock, KeyedLocks, Turn, CALL_LIMIT, LOCK_WAIT};
use netloom_plugin_api::siblings::{self, ClaimedSubnets};
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointInterface,
    EndpointRef, InterfaceName, JoinRequest, JoinResponse, NetworkRef, ProgramExternalConnectivityRequest, RouteType,
    Scope, StaticRoute,
};
use netloom_plugin_api::wire::ports::port_bindings;
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult};
use std::sync::{Mutex, MutexGuard};
use tracing::{debug, info, warn};

use crate::options::HostOptions;
use crate::plumbing::{self, GATEWAY_V4, GATEWAY_V6};
use crate::policy;
use crate::state::{pick_table, EndpointRecord, NetworkRecord, Records, OWNER_PREFIX, TABLES};

/// The key every CreateNetwork takes besides its network's: overlap checks see finished networks.
const CREATING: &str = "\0create-network";

/// Endpoints restored side by side at start-up.
const RESTORE_CONCURRENCY: usize = 8;

pub struct HostDriver {
    netlink: Netlink,
    firewall: Arc<dyn Firewall>,
    records: Records,
    /// Held only while reading or updating the maps, never across a kernel, firewall or store call.
    state: Mutex<State>,
    /// One turn per network: requests on one network run one at a time, other networks go on.
    turns: KeyedLocks,
    /// How long a request waits for its network's turn.
    lock_wait: std::time::Duration,
}

#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<String, EndpointRecord>,
    /// Host ports published by loom-host's endpoints.
    ports: PortTable,
}

impl HostDriver {
    /// Loads the records and reconciles the kernel with them before the socket opens.
    pub async fn start(netlink: Netlink, firewall: Arc<dyn Firewall>, records: Records) -> Result<Self> {
        let mut state =
            State { networks: records.networks().await?, endpoints: records.endpoints().await?, ..State::default() };
        // Internal networks recorded before they got a routing table get one now.
        let mut taken: Vec<u32> = state.networks.values().filter_map(|n| n.table).collect();
        for net in state.networks.values_mut().filter(|n| n.internal && n.table.is_none()) {
            let table = pick_table(&net.id, &taken);
            taken.push(table);
            net.table = Some(table);
            records.put_network(net).await?;
            info!(network = %short_id(&net.id), table, "internal network gets a routing table of its own");
        }
        for ep in state.endpoints.values() {
            state.ports.insert(&ep.id, ep.ports.clone());
        }
        let driver = Self {
            netlink,
            firewall,
            records,
            state: Mutex::new(State::default()),
            turns: KeyedLocks::default(),
            lock_wait: LOCK_WAIT,
        };
        driver.reconcile(&state).await;
        *driver.state() = state;
        Ok(driver)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Waits for `network_id`'s turn (bounded; the error names the network and the holder).
    async fn turn(&self, network_id: &str, doing: String) -> PluginResult<Turn> {
        self.turns.take(network_id, &format!("loom-host network {}", short_id(network_id)), doing, self.lock_wait).await
    }

    /// A firewall call that fails its request instead of hanging it.
    async fn firewall_call<T>(&self, what: String, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        bounded(format!("the {} firewall ({what})", self.firewall.kind()), CALL_LIMIT, call).await
    }

    /// Refuses a subnet that overlaps another loom-host network's, or a route the host already
    /// has through some interface (a loom-bridge network, docker0, a LAN).
    async fn check_overlap(&self, network_id: &str, subnets: &[IpNetwork]) -> PluginResult<()> {
        let others = self.claimed_subnets().into_iter().filter(|c| c.network_id != network_id).collect();
        siblings::refuse_overlap(subnets, others).await?;
        match bounded("the kernel's route list", CALL_LIMIT, self.netlink.route_overlap(subnets, None)).await? {
            Some(why) => Err(PluginError::new(why)),
            None => Ok(()),
        }
    }

    async fn reconcile(&self, state: &State) {
        let started = std::time::Instant::now();
        for net in state.networks.values() {
            if let Err(e) = plumbing::enable_forwarding(net) {
                warn!(network = %short_id(&net.id), "{e:#}");
            }
        }
        let mut known = Vec::new();
        for ep in state.endpoints.values() {
            match state.networks.get(&ep.network_id) {
                Some(net) => known.push((net, ep)),
                None => {
                    warn!(endpoint = %short_id(&ep.id), "endpoint of an unknown network; it goes when Docker deletes it")
                }
            }
        }
        // Endpoints are independent: their netlink round trips overlap.
        let restored: Vec<_> = stream::iter(known)
            .map(|(net, ep)| async move { self.restore_links(net, ep).await.then_some((net, ep)) })
            .buffer_unordered(RESTORE_CONCURRENCY)
            .collect()
            .await;
        let joined: Vec<_> = restored.into_iter().flatten().filter(|(_, ep)| ep.joined).collect();
        self.restore_firewall(&joined).await;
        self.remove_leftovers(state).await;
        info!(
            networks = state.networks.len(),
            endpoints = state.endpoints.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
    }

    /// The endpoint's veth, addresses and routes as recorded; false when there is nothing to
    /// restore (its veth went with its container) or it failed (logged).
    async fn restore_links(&self, net: &NetworkRecord, ep: &EndpointRecord) -> bool {
        match self.netlink.link(&ep.host_veth).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                debug!(endpoint = %short_id(&ep.id), "veth is gone; waiting for DeleteEndpoint");
                return false;
            }
            Err(e) => {
                warn!(endpoint = %short_id(&ep.id), "{e:#}");
                return false;
            }
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

    /// The joined endpoints' firewall policies in one pass (one policy per endpoint: done one by
    /// one, iptables would list the whole ruleset once per endpoint), then their ports.
    async fn restore_firewall(&self, joined: &[(&NetworkRecord, &EndpointRecord)]) {
        let policies: Vec<_> = joined.iter().map(|(net, ep)| policy::of(net, ep)).collect();
        if let Err(e) = self.firewall.add_networks(&policies).await {
            warn!("restoring firewall policies together: {e:#}; retrying one by one");
            for (policy, (_, ep)) in policies.iter().zip(joined) {
                if let Err(e) = self.firewall.add_network(policy).await {
                    warn!(endpoint = %short_id(&ep.id), "could not restore firewall policy: {e:#}");
                }
            }
        }
        for (policy, (_, ep)) in policies.iter().zip(joined).filter(|(_, (_, ep))| !ep.ports.is_empty()) {
            if let Err(e) = self.firewall.add_ports(policy, &ep.id, &policy::mappings(&ep.ports)).await {
                warn!(endpoint = %short_id(&ep.id), "could not restore published ports: {e:#}");
            }
        }
    }

    /// Links and firewall policies tagged as loom-host's that no record explains.
    async fn remove_leftovers(&self, state: &State) {
        let owners: BTreeSet<String> = state.endpoints.values().map(EndpointRecord::owner).collect();
        match self.netlink.links().await {
            Ok(links) => {
                for link in links {
                    let Some(alias) = link.alias.as_deref() else { continue };
                    if alias.starts_with(OWNER_PREFIX) && !owners.contains(alias) {
                        info!(link = %link.name, owner = alias, "removing leftover link");
                        if let Err(e) = self.netlink.delete_link(&link.name).await {
                            warn!("{e:#}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing links for leftovers: {e:#}"),
        }
        self.remove_leftover_rules(state).await;
        let live: BTreeSet<String> = state.endpoints.values().filter(|e| e.joined).map(policy::id).collect();
        match self.firewall.owned_networks().await {
            Ok(ids) => {
                for id in ids.into_iter().filter(|id| id.starts_with(policy::ID_PREFIX) && !live.contains(id)) {
                    info!(policy = %id, "removing leftover firewall rules");
                    if let Err(e) = self.firewall.remove_network_by_id(&id).await {
                        warn!("{e:#}");
                    }
                }
            }
            Err(e) => warn!("listing firewall rules for leftovers: {e:#}"),
        }
    }

    /// Routing rules in loom-host's tables that no joined endpoint of an internal network explains,
    /// and the tables no internal network owns.
    async fn remove_leftover_rules(&self, state: &State) {
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

    /// Takes the endpoint off the host: firewall policy, routes and rules, veth pair; keeps going
    /// past errors and reports them all.
    async fn teardown_endpoint(&self, net: Option<&NetworkRecord>, ep: &EndpointRecord) -> Result<()> {
        let mut errors = Vec::new();
        let policy_id = policy::id(ep);
        let removed = self.firewall_call(
            format!("removing endpoint {}", short_id(&ep.id)),
            self.firewall.remove_network_by_id(&policy_id),
        );
        if let Err(e) = removed.await {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = plumbing::remove_routes(&self.netlink, net, ep).await {
            errors.push(format!("{e:#}"));
        }
        if let Err(e) = self.netlink.delete_link(&ep.host_veth).await {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("removing endpoint {}: {}", short_id(&ep.id), errors.join("; "))
        }
    }
}

#[async_trait]
impl NetworkDriver for HostDriver {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }

    fn claimed_subnets(&self) -> Vec<ClaimedSubnets> {
        let state = self.state();
        state
            .networks
            .values()
            .map(|n| ClaimedSubnets {
                driver: "loom-host".into(),
                network_id: n.id.clone(),
                detail: String::new(),
                subnets: n.subnets().collect(),
            })
            .collect()
    }

    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let options = HostOptions::parse(&req.options.generic()).map_err(PluginError::from)?;
        let pools_v4 = pools(&req.ipv4_data, "IPv4")?;
        let pools_v6 = if req.options.enable_ipv6() { pools(&req.ipv6_data, "IPv6")? } else { Vec::new() };
        let doing = format!("CreateNetwork of {}", short_id(&req.network_id));
        let _creating =
            self.turns.take(CREATING, "other loom-host network creations", doing.clone(), self.lock_wait).await?;
        let _turn = self.turn(&req.network_id, doing).await?;
        let existing = self.state().networks.get(&req.network_id).cloned();
        if let Some(existing) = existing {
            return plumbing::enable_forwarding(&existing).map_err(PluginError::from);
        }
        let subnets: Vec<IpNetwork> = pools_v4.iter().chain(&pools_v6).map(|p| p.subnet).collect();
        self.check_overlap(&req.network_id, &subnets).await?;
        let internal = req.options.internal();
        let table = internal.then(|| {
            let taken: Vec<u32> = self.state().networks.values().filter_map(|n| n.table).collect();
            pick_table(&req.network_id, &taken)
        });
        let record = NetworkRecord { id: req.network_id.clone(), options, pools_v4, pools_v6, internal, table };
        plumbing::enable_forwarding(&record)?;
        self.records.put_network(&record).await?;
        info!(network = %short_id(&record.id), masquerade = record.options.masquerade, internal, table = ?record.table, "network created");
        self.state().networks.insert(record.id.clone(), record);
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let _turn = self.turn(&req.network_id, format!("DeleteNetwork of {}", short_id(&req.network_id))).await?;
        let (net, leftovers) = {
            let state = self.state();
            let Some(net) = state.networks.get(&req.network_id).cloned() else {
                debug!(network = %req.network_id, "unknown network; nothing to delete");
                return Ok(());
            };
            let leftovers: Vec<EndpointRecord> =
                state.endpoints.values().filter(|e| e.network_id == net.id).cloned().collect();
            (net, leftovers)
        };
        for ep in &leftovers {
            self.teardown_endpoint(Some(&net), ep).await?;
            self.records.delete_endpoint(&ep.network_id, &ep.id).await?;
            let mut state = self.state();
            state.endpoints.remove(&ep.id);
            state.ports.remove(&ep.id);
        }
        if let Some(table) = net.table {
            plumbing::remove_table(&self.netlink, table).await?;
        }
        self.records.delete_network(&net.id).await?;
        self.state().networks.remove(&net.id);
        info!(network = %short_id(&net.id), "network removed");
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let _turn = self.turn(&req.network_id, format!("CreateEndpoint of {}", short_id(&req.endpoint_id))).await?;
        let (net, existing) = {
            let state = self.state();
            let net = state
                .networks
                .get(&req.network_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-host", &req.network_id))?;
            (net, state.endpoints.get(&req.endpoint_id).cloned())
        };
        let address_v4 = endpoint_address(&req.interface.address, &net.pools_v4, "IPv4")?;
        let address_v6 = endpoint_address(&req.interface.address_ipv6, &net.pools_v6, "IPv6")?;
        if address_v4.is_none() && address_v6.is_none() {
            return Err(PluginError::new(
                "loom-host routes container addresses, but Docker assigned this endpoint none",
            ));
        }
        let mac_given = !req.interface.mac_address.is_empty();
        let record = match existing {
            Some(existing) => existing,
            None => EndpointRecord {
                network_id: net.id.clone(),
                id: req.endpoint_id.clone(),
                host_veth: names::derived("lh", &req.endpoint_id),
                peer_veth: names::derived("lp", &req.endpoint_id),
                address_v4,
                address_v6,
                mac: if mac_given {
                    req.interface.mac_address.clone()
                } else {
                    mac::format(&mac::for_endpoint(ipv4(address_v4)))
                },
                joined: false,
                ports: Vec::new(),
            },
        };
        self.records.put_endpoint(&record).await?;
        if let Err(e) = plumbing::ensure_endpoint(&self.netlink, &net, &record).await {
            let _ = self.netlink.delete_link(&record.host_veth).await;
            let _ = self.records.delete_endpoint(&record.network_id, &record.id).await;
            return Err(e.into());
        }
        let interface =
            (!mac_given).then(|| EndpointInterface { mac_address: record.mac.clone(), ..Default::default() });
        self.state().endpoints.insert(record.id.clone(), record);
        Ok(CreateEndpointResponse { interface })
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let _turn = self.turn(&req.network_id, format!("DeleteEndpoint of {}", short_id(&req.endpoint_id))).await?;
        let (net, ep) = {
            let state = self.state();
            let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
                return Ok(());
            };
            (state.networks.get(&ep.network_id).cloned(), ep)
        };
        self.teardown_endpoint(net.as_ref(), &ep).await?;
        self.records.delete_endpoint(&ep.network_id, &ep.id).await?;
        let mut state = self.state();
        state.endpoints.remove(&ep.id);
        state.ports.remove(&ep.id);
        Ok(())
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let _turn = self.turn(&req.network_id, format!("Join of {}", short_id(&req.endpoint_id))).await?;
        let (net, mut ep) = self.endpoint_and_network(&req.endpoint_id)?;
        if self.netlink.link(&ep.peer_veth).await?.is_none() {
            // A retried Join after the container side went away: make the pair again.
            let _ = self.netlink.delete_link(&ep.host_veth).await;
        }
        let host = plumbing::ensure_endpoint(&self.netlink, &net, &ep).await?;
        ep.joined = true;
        self.records.put_endpoint(&ep).await?;
        plumbing::add_routes(&self.netlink, &host, &net, &ep).await?;
        self.firewall_call(
            format!("policy of endpoint {}", short_id(&ep.id)),
            self.firewall.add_network(&policy::of(&net, &ep)),
        )
        .await?;
        info!(endpoint = %short_id(&ep.id), veth = %ep.host_veth, routes = ?ep.host_routes(), table = ?net.table, "joined");
        let gateways = !net.internal;
        let response = JoinResponse {
            interface_name: Some(InterfaceName { src_name: ep.peer_veth.clone(), dst_prefix: "eth".into() }),
            gateway: if gateways && ep.address_v4.is_some() { GATEWAY_V4.to_string() } else { String::new() },
            gateway_ipv6: if gateways && ep.address_v6.is_some() { GATEWAY_V6.to_string() } else { String::new() },
            // The gateways are on-link: Docker installs these before the default routes (an
            // IPv6 sandbox may not have its fe80::/64 route yet when the gateway is set).
            static_routes: [
                (ep.address_v4.is_some(), format!("{GATEWAY_V4}/32")),
                (ep.address_v6.is_some(), format!("{GATEWAY_V6}/128")),
            ]
            .into_iter()
            .filter(|(wanted, _)| *wanted)
            .map(|(_, destination)| StaticRoute {
                destination,
                route_type: RouteType::Connected,
                next_hop: String::new(),
            })
            .collect(),
            // An internal network has no gateway, and must not get docker_gwbridge's either.
            disable_gateway_service: net.internal,
        };
        self.state().endpoints.insert(ep.id.clone(), ep);
        Ok(response)
    }

    async fn leave(&self, req: EndpointRef) -> PluginResult<()> {
        let _turn = self.turn(&req.network_id, format!("Leave of {}", short_id(&req.endpoint_id))).await?;
        let (net, mut ep) = {
            let state = self.state();
            let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
                return Ok(());
            };
            (state.networks.get(&ep.network_id).cloned(), ep)
        };
        // Removing the endpoint's policy withdraws its published ports too.
        self.firewall_call(
            format!("removing endpoint {}", short_id(&ep.id)),
            self.firewall.remove_network_by_id(&policy::id(&ep)),
        )
        .await?;
        plumbing::remove_routes(&self.netlink, net.as_ref(), &ep).await?;
        ep.joined = false;
        ep.ports.clear();
        self.records.put_endpoint(&ep).await?;
        debug!(endpoint = %short_id(&ep.id), "left");
        let mut state = self.state();
        state.ports.remove(&ep.id);
        state.endpoints.insert(ep.id.clone(), ep);
        Ok(())
    }

    async fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> PluginResult<()> {
        let bindings = port_bindings(&req.options).map_err(PluginError::new)?;
        debug!(endpoint = %short_id(&req.endpoint_id), ?bindings, "port bindings from Docker");
        let _turn = self
            .turn(&req.network_id, format!("ProgramExternalConnectivity of {}", short_id(&req.endpoint_id)))
            .await?;
        // Resolve and reserve the host ports in one go, so that a request on another network
        // cannot take the same ones while the firewall is being programmed.
        let (net, mut ep, ports) = {
            let mut state = self.state();
            let ep = state
                .endpoints
                .get(&req.endpoint_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_endpoint("loom-host", &req.endpoint_id))?;
            let net = state
                .networks
                .get(&ep.network_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-host", &ep.network_id))?;
            if net.internal && !bindings.is_empty() {
                return Err(PluginError::new("an --internal network cannot publish ports"));
            }
            let ports = state
                .ports
                .resolve(
                    &ep.id,
                    &bindings,
                    ep.address_v4.map(|a| a.ip()),
                    ep.address_v6.map(|a| a.ip()),
                    None,
                    &host_port_is_free,
                )
                .map_err(PluginError::from)?;
            state.ports.insert(&ep.id, ports.clone());
            (net, ep, ports)
        };
        let policy = policy::of(&net, &ep);
        let stale: Vec<PublishedPort> = ep.ports.iter().filter(|p| !ports.contains(p)).cloned().collect();
        let applied = async {
            if !stale.is_empty() {
                self.firewall_call(
                    format!("withdrawing ports of endpoint {}", short_id(&ep.id)),
                    self.firewall.remove_ports(&policy, &ep.id, &policy::mappings(&stale)),
                )
                .await?;
            }
            if !ports.is_empty() {
                self.firewall_call(
                    format!("publishing ports of endpoint {}", short_id(&ep.id)),
                    self.firewall.add_ports(&policy, &ep.id, &policy::mappings(&ports)),
                )
                .await?;
            }
            let mut updated = ep.clone();
            updated.ports = ports.clone();
            self.records.put_endpoint(&updated).await
        };
        if let Err(e) = applied.await {
            self.state().ports.insert(&ep.id, ep.ports.clone());
            return Err(e.into());
        }
        ep.ports = ports;
        if !ep.ports.is_empty() {
            info!(endpoint = %short_id(&ep.id), ports = ?ep.ports.iter().map(PublishedPort::describe).collect::<Vec<_>>(), "ports published");
        }
        self.state().endpoints.insert(ep.id.clone(), ep);
        Ok(())
    }

    async fn revoke_external_connectivity(&self, req: EndpointRef) -> PluginResult<()> {
        let _turn =
            self.turn(&req.network_id, format!("RevokeExternalConnectivity of {}", short_id(&req.endpoint_id))).await?;
        let (net, mut ep) = {
            let state = self.state();
            let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
                return Ok(());
            };
            (state.networks.get(&ep.network_id).cloned(), ep)
        };
        if ep.ports.is_empty() {
            return Ok(());
        }
        if let Some(net) = net {
            let policy = policy::of(&net, &ep);
            self.firewall_call(
                format!("withdrawing ports of endpoint {}", short_id(&ep.id)),
                self.firewall.remove_ports(&policy, &ep.id, &policy::mappings(&ep.ports)),
            )
            .await?;
        }
        ep.ports.clear();
        self.records.put_endpoint(&ep).await?;
        let mut state = self.state();
        state.ports.remove(&ep.id);
        state.endpoints.insert(ep.id.clone(), ep);
        Ok(())
    }
}

impl HostDriver {
    fn endpoint_and_network(&self, endpoint_id: &str) -> PluginResult<(NetworkRecord, EndpointRecord)> {
        let state = self.state();
        let ep = state
            .endpoints
            .get(endpoint_id)
            .cloned()
            .ok_or_else(|| PluginError::unknown_endpoint("loom-host", endpoint_id))?;
        let net = state
            .networks
            .get(&ep.network_id)
            .cloned()
            .ok_or_else(|| PluginError::unknown_network("loom-host", &ep.network_id))?;
        Ok((net, ep))
    }
}

fn ipv4(address: Option<IpNetwork>) -> Option<std::net::Ipv4Addr> {
    match address.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
