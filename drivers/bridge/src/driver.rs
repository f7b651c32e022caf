//! loom-bridge's request handlers: a Linux bridge per network, a veth pair per endpoint, and the
//! shared firewall for NAT, isolation and published ports.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use async_trait::async_trait;
use ipnetwork::IpNetwork;
use netloom_dataplane::{mac, names, sysctl, BridgeSpec, Netlink, VethSpec};
use netloom_firewall::{Firewall, NetworkPolicy, PortMapping, Proto};
use netloom_plugin_api::addressing::{endpoint_address, pools, short_id as short, Pool};
use netloom_plugin_api::host_ports::{host_port_is_free, PortTable, PublishedPort};
use netloom_plugin_api::locks::{bounded, lock, KeyedLocks, Turn, CALL_LIMIT, LOCK_WAIT};
use netloom_plugin_api::options::IPV6_MIN_MTU;
use netloom_plugin_api::siblings::{self, ClaimedSubnets};
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointInterface,
    EndpointRef, InterfaceName, IpamData, JoinRequest, JoinResponse, NetworkRef, ProgramExternalConnectivityRequest,
    Scope,
};
use netloom_plugin_api::wire::ports::{port_bindings, Protocol};
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult};
use std::sync::{Mutex, MutexGuard};
use tracing::{debug, info, warn};

use crate::options::BridgeOptions;
use crate::state::{EndpointRecord, NetworkRecord, Records};

pub struct BridgeDriver {
    netlink: Netlink,
    firewall: Arc<dyn Firewall>,
    records: Records,
    /// Held only while reading or updating the maps, never across a kernel, firewall or store call.
    state: Mutex<State>,
    /// One turn per network: requests on one network run one at a time, other networks go on.
    turns: KeyedLocks,
}

/// The key every CreateNetwork takes besides its network's: name and overlap checks see
/// finished networks.
const CREATING: &str = "\0create-network";

#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<String, EndpointRecord>,
    ports: PortTable,
}

impl BridgeDriver {
    /// Loads the records and reconciles the kernel with them before the socket opens.
    pub async fn start(netlink: Netlink, firewall: Arc<dyn Firewall>, records: Records) -> Result<Self> {
        let mut state =
            State { networks: records.networks().await?, endpoints: records.endpoints().await?, ..State::default() };
        let driver =
            Self { netlink, firewall, records, state: Mutex::new(State::default()), turns: KeyedLocks::default() };
        driver.reconcile(&mut state).await;
        *driver.state() = state;
        Ok(driver)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Waits for `network_id`'s turn (bounded; the error names the network and the holder).
    async fn turn(&self, network_id: &str, doing: String) -> PluginResult<Turn> {
        self.turns.take(network_id, &format!("loom-bridge network {}", short(network_id)), doing, LOCK_WAIT).await
    }

    /// A firewall call that fails its request instead of hanging it.
    async fn firewall_call<T>(&self, what: String, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        bounded(format!("the {} firewall ({what})", self.firewall.kind()), CALL_LIMIT, call).await
    }

    /// Refuses a subnet that overlaps another loom-bridge network's, or a route the host already
    /// has through another interface (a loom-host network, docker0, a LAN).
    async fn check_overlap(&self, record: &NetworkRecord) -> PluginResult<()> {
        let subnets = record.subnets();
        let others = self.claimed_subnets().into_iter().filter(|c| c.network_id != record.id).collect();
        siblings::refuse_overlap(&subnets, others).await?;
        let owner = record.owner();
        match bounded("the kernel's route list", CALL_LIMIT, self.netlink.route_overlap(&subnets, Some(&owner))).await?
        {
            Some(why) => Err(PluginError::new(why)),
            None => Ok(()),
        }
    }

    async fn reconcile(&self, state: &mut State) {
        let started = std::time::Instant::now();
        for net in state.networks.values() {
            if let Err(e) = self.ensure_network(net).await {
                warn!(network = %net.id, "could not restore network: {e:#}");
            }
        }
        for ep in state.endpoints.values() {
            let Some(net) = state.networks.get(&ep.network_id) else {
                warn!(endpoint = %ep.id, "endpoint of an unknown network; it will be removed when Docker deletes it");
                continue;
            };
            match self.netlink.link(&ep.host_veth).await {
                Ok(Some(_)) => {
                    if let Err(e) = self.attach_endpoint(net, ep).await {
                        warn!(endpoint = %ep.id, "could not re-attach endpoint: {e:#}");
                    }
                }
                Ok(None) => {
                    debug!(endpoint = %ep.id, "veth is gone (its container stopped); waiting for DeleteEndpoint")
                }
                Err(e) => warn!(endpoint = %ep.id, "{e:#}"),
            }
            if !ep.ports.is_empty() {
                if let Err(e) = self.firewall.add_ports(&policy(net), &ep.id, &mappings(&ep.ports)).await {
                    warn!(endpoint = %ep.id, "could not restore published ports: {e:#}");
                }
            }
            state.ports.insert(&ep.id, ep.ports.clone());
        }
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
        info!(
            networks = state.networks.len(),
            endpoints = state.endpoints.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
    }

    /// Links and rules tagged as ours whose network or endpoint is no longer in the records.
    async fn remove_leftovers(&self, state: &State) {
        let owners: std::collections::BTreeSet<String> = state
            .networks
            .values()
            .map(NetworkRecord::owner)
            .chain(state.endpoints.values().map(EndpointRecord::owner))
            .collect();
        match self.netlink.links().await {
            Ok(links) => {
                for link in links {
                    let Some(alias) = link.alias.as_deref() else { continue };
                    if alias.starts_with("netloom:bridge:") && !owners.contains(alias) {
                        info!(link = %link.name, owner = alias, "removing leftover link");
                        if let Err(e) = self.netlink.delete_link(&link.name).await {
                            warn!("{e:#}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing links for leftovers: {e:#}"),
        }
        match self.firewall.owned_networks().await {
            Ok(ids) => {
                // Other drivers sharing the firewall namespace their ids as `<driver>.<id>`
                // (loom-host: `loom-host.<endpoint>`); only bare network ids can be ours.
                for id in ids.into_iter().filter(|id| !id.contains('.') && !state.networks.contains_key(id)) {
                    info!(network = %id, "removing leftover firewall rules");
                    if let Err(e) = self.firewall.remove_network_by_id(&id).await {
                        warn!("{e:#}");
                    }
                }
            }
            Err(e) => warn!("listing firewall rules for leftovers: {e:#}"),
        }
    }

    /// Brings the kernel in line with a network record; safe to repeat.
    async fn ensure_network(&self, net: &NetworkRecord) -> Result<()> {
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
        self.firewall_call(format!("policy of network {}", short(&net.id)), self.firewall.add_network(&policy(net)))
            .await
    }

    /// Removes a network's rules and bridge; keeps going past errors and reports them all.
    async fn teardown_network(&self, net: &NetworkRecord) -> Result<()> {
        let mut errors = Vec::new();
        let net_policy = policy(net);
        let removed = self
            .firewall_call(format!("removing network {}", short(&net.id)), self.firewall.remove_network(&net_policy));
        if let Err(e) = removed.await {
            errors.push(format!("{e:#}"));
        }
        match self.netlink.link(&net.bridge).await {
            Ok(Some(link)) if link.alias.as_deref() == Some(net.owner().as_str()) => {
                if let Err(e) = self.netlink.delete_link(&net.bridge).await {
                    errors.push(format!("{e:#}"));
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("removing network {}: {}", short(&net.id), errors.join("; "))
        }
    }

    async fn attach_endpoint(&self, net: &NetworkRecord, ep: &EndpointRecord) -> Result<()> {
        let bridge =
            self.netlink.link(&net.bridge).await?.ok_or_else(|| anyhow!("bridge {} is missing", net.bridge))?;
        let host =
            self.netlink.link(&ep.host_veth).await?.ok_or_else(|| anyhow!("veth {} is missing", ep.host_veth))?;
        self.netlink.attach(&host, &bridge).await?;
        self.netlink.configure_bridge_port(&host, true, !net.options.icc).await
    }

    /// Creates (or re-creates) the endpoint's veth pair on its bridge.
    async fn ensure_endpoint(&self, net: &NetworkRecord, ep: &EndpointRecord) -> Result<()> {
        let owner = ep.owner();
        self.netlink
            .ensure_veth(&VethSpec {
                host_name: &ep.host_veth,
                peer_name: &ep.peer_veth,
                mtu: net.options.mtu,
                owner: &owner,
            })
            .await?;
        self.attach_endpoint(net, ep).await
    }

    async fn teardown_endpoint(&self, net: Option<&NetworkRecord>, ep: &EndpointRecord) -> Result<()> {
        let mut errors = Vec::new();
        if let (Some(net), false) = (net, ep.ports.is_empty()) {
            let what = format!("withdrawing ports of endpoint {}", short(&ep.id));
            if let Err(e) =
                self.firewall_call(what, self.firewall.remove_ports(&policy(net), &ep.id, &mappings(&ep.ports))).await
            {
                errors.push(format!("{e:#}"));
            }
        }
        if let Err(e) = self.netlink.delete_link(&ep.host_veth).await {
            errors.push(format!("{e:#}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("removing endpoint {}: {}", short(&ep.id), errors.join("; "))
        }
    }
}

#[async_trait]
impl NetworkDriver for BridgeDriver {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }

    fn claimed_subnets(&self) -> Vec<ClaimedSubnets> {
        let state = self.state();
        state
            .networks
            .values()
            .map(|n| ClaimedSubnets {
                driver: "loom-bridge".into(),
                network_id: n.id.clone(),
                detail: format!("bridge {}", n.bridge),
                subnets: n.subnets(),
            })
            .collect()
    }

    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let options = BridgeOptions::parse(&req.options.generic()).map_err(PluginError::from)?;
        let (subnet_v4, gateway_v4) = single_pool(&req.ipv4_data, "IPv4")?;
        let (subnet_v6, gateway_v6) =
            if req.options.enable_ipv6() { single_pool(&req.ipv6_data, "IPv6")? } else { (None, None) };
        if subnet_v6.is_some() && options.mtu.is_some_and(|mtu| mtu < IPV6_MIN_MTU) {
            return Err(PluginError::new(format!(
                "com.docker.network.driver.mtu={} is below IPv6's minimum of {IPV6_MIN_MTU}",
                options.mtu.unwrap_or_default()
            )));
        }
        let doing = format!("CreateNetwork of {}", short(&req.network_id));
        let _creating =
            self.turns.take(CREATING, "other loom-bridge network creations", doing.clone(), LOCK_WAIT).await?;
        let _turn = self.turn(&req.network_id, doing).await?;
        let existing = self.state().networks.get(&req.network_id).cloned();
        if let Some(existing) = existing {
            return self.ensure_network(&existing).await.map_err(PluginError::from);
        }
        let bridge = options.bridge_name.clone().unwrap_or_else(|| names::derived("loom", &req.network_id));
        let same_bridge = self.state().networks.values().find(|n| n.bridge == bridge).map(|n| n.id.clone());
        if let Some(other) = same_bridge {
            return Err(PluginError::new(format!(
                "bridge {bridge} is already used by network {}; choose another com.docker.network.bridge.name",
                short(&other)
            )));
        }
        let record = NetworkRecord {
            id: req.network_id.clone(),
            bridge,
            options,
            subnet_v4,
            gateway_v4,
            subnet_v6,
            gateway_v6,
            internal: req.options.internal(),
        };
        self.check_overlap(&record).await?;
        self.records.put_network(&record).await?;
        if let Err(e) = self.ensure_network(&record).await {
            if let Err(cleanup) = self.teardown_network(&record).await {
                warn!("rolling back network {}: {cleanup:#}", short(&record.id));
            }
            let _ = self.records.delete_network(&record.id).await;
            return Err(e.into());
        }
        info!(network = %short(&record.id), bridge = %record.bridge, "network created");
        self.state().networks.insert(record.id.clone(), record);
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let _turn = self.turn(&req.network_id, format!("DeleteNetwork of {}", short(&req.network_id))).await?;
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
        self.teardown_network(&net).await?;
        self.records.delete_network(&net.id).await?;
        self.state().networks.remove(&net.id);
        info!(network = %short(&net.id), "network removed");
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let _turn = self.turn(&req.network_id, format!("CreateEndpoint of {}", short(&req.endpoint_id))).await?;
        let (net, existing) = {
            let state = self.state();
            let net = state
                .networks
                .get(&req.network_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-bridge", &req.network_id))?;
            (net, state.endpoints.get(&req.endpoint_id).cloned())
        };
        let address_v4 = parse_address(&req.interface.address, net.subnet_v4, "IPv4")?;
        let address_v6 = parse_address(&req.interface.address_ipv6, net.subnet_v6, "IPv6")?;
        let mac_given = !req.interface.mac_address.is_empty();
        let record = match existing {
            Some(existing) => existing,
            None => EndpointRecord {
                network_id: net.id.clone(),
                id: req.endpoint_id.clone(),
                host_veth: names::derived("vl", &req.endpoint_id),
                peer_veth: names::derived("vp", &req.endpoint_id),
                address_v4,
                address_v6,
                mac: if mac_given { req.interface.mac_address.clone() } else { mac_string(address_v4) },
                ports: Vec::new(),
            },
        };
        self.records.put_endpoint(&record).await?;
        if let Err(e) = self.ensure_endpoint(&net, &record).await {
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
        let _turn = self.turn(&req.network_id, format!("DeleteEndpoint of {}", short(&req.endpoint_id))).await?;
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
        let _turn = self.turn(&req.network_id, format!("Join of {}", short(&req.endpoint_id))).await?;
        let (net, ep) = {
            let state = self.state();
            let ep = state
                .endpoints
                .get(&req.endpoint_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_endpoint("loom-bridge", &req.endpoint_id))?;
            let net = state
                .networks
                .get(&ep.network_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-bridge", &ep.network_id))?;
            (net, ep)
        };
        if self.netlink.link(&ep.peer_veth).await?.is_none() {
            // A retried Join after the container side went away: make the pair again.
            let _ = self.netlink.delete_link(&ep.host_veth).await;
            self.ensure_endpoint(&net, &ep).await?;
        }
        Ok(JoinResponse {
            interface_name: Some(InterfaceName {
                src_name: ep.peer_veth.clone(),
                dst_prefix: net.options.iface_prefix.clone(),
            }),
            gateway: net.gateway_v4.map(|g| g.ip().to_string()).unwrap_or_default(),
            gateway_ipv6: net.gateway_v6.map(|g| g.ip().to_string()).unwrap_or_default(),
            ..JoinResponse::default()
        })
    }

    async fn leave(&self, _req: EndpointRef) -> PluginResult<()> {
        Ok(())
    }

    async fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> PluginResult<()> {
        let bindings = port_bindings(&req.options).map_err(PluginError::new)?;
        debug!(endpoint = %short(&req.endpoint_id), ?bindings, "port bindings from Docker");
        let _turn =
            self.turn(&req.network_id, format!("ProgramExternalConnectivity of {}", short(&req.endpoint_id))).await?;
        // Resolve and reserve the host ports in one go, so that a request on another network
        // cannot take the same ones while the firewall is being programmed.
        let (net, mut ep, ports) = {
            let mut state = self.state();
            let ep = state
                .endpoints
                .get(&req.endpoint_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_endpoint("loom-bridge", &req.endpoint_id))?;
            let net = state
                .networks
                .get(&ep.network_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-bridge", &ep.network_id))?;
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
                    net.options.host_binding_ipv4,
                    &host_port_is_free,
                )
                .map_err(PluginError::from)?;
            state.ports.insert(&ep.id, ports.clone());
            (net, ep, ports)
        };
        let stale: Vec<PublishedPort> = ep.ports.iter().filter(|p| !ports.contains(p)).cloned().collect();
        let applied = async {
            if !stale.is_empty() {
                let what = format!("withdrawing ports of endpoint {}", short(&ep.id));
                self.firewall_call(what, self.firewall.remove_ports(&policy(&net), &ep.id, &mappings(&stale))).await?;
            }
            if !ports.is_empty() {
                let what = format!("publishing ports of endpoint {}", short(&ep.id));
                self.firewall_call(what, self.firewall.add_ports(&policy(&net), &ep.id, &mappings(&ports))).await?;
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
        info!(endpoint = %short(&ep.id), ports = ?ep.ports.iter().map(PublishedPort::describe).collect::<Vec<_>>(), "ports published");
        self.state().endpoints.insert(ep.id.clone(), ep);
        Ok(())
    }

    async fn revoke_external_connectivity(&self, req: EndpointRef) -> PluginResult<()> {
        let _turn =
            self.turn(&req.network_id, format!("RevokeExternalConnectivity of {}", short(&req.endpoint_id))).await?;
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
            let what = format!("withdrawing ports of endpoint {}", short(&ep.id));
            self.firewall_call(what, self.firewall.remove_ports(&policy(&net), &ep.id, &mappings(&ep.ports))).await?;
        }
        ep.ports.clear();
        self.records.put_endpoint(&ep).await?;
        let mut state = self.state();
        state.ports.remove(&ep.id);
        state.endpoints.insert(ep.id.clone(), ep);
        Ok(())
    }
}

fn policy(net: &NetworkRecord) -> NetworkPolicy {
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

fn mappings(ports: &[PublishedPort]) -> Vec<PortMapping> {
    ports
        .iter()
        .map(|p| PortMapping {
            proto: match p.proto {
                Protocol::Tcp => Proto::Tcp,
                Protocol::Udp => Proto::Udp,
                Protocol::Sctp => Proto::Sctp,
            },
            host_ip: p.host_ip,
            host_port: p.host_port,
            container_ip: p.container_ip,
            container_port: p.container_port,
        })
        .collect()
}

/// The one pool of a family Docker's bridge semantics allow, with its gateway.
fn single_pool(data: &[IpamData], family: &str) -> PluginResult<(Option<IpNetwork>, Option<IpNetwork>)> {
    match pools(data, family)?.as_slice() {
        [] => Ok((None, None)),
        [Pool { subnet, gateway }] => Ok((Some(*subnet), *gateway)),
        more => Err(PluginError::new(format!(
            "loom-bridge takes one {family} subnet per network, got {}; create one network per subnet",
            more.len()
        ))),
    }
}

fn parse_address(text: &str, subnet: Option<IpNetwork>, family: &str) -> PluginResult<Option<IpNetwork>> {
    let pools: Vec<Pool> = subnet.map(|subnet| Pool { subnet, gateway: None }).into_iter().collect();
    endpoint_address(text, &pools, family)
}

fn mac_string(address: Option<IpNetwork>) -> String {
    let ipv4 = match address.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    };
    mac::format(&mac::for_endpoint(ipv4))
}
