//! loom-macvlan's request handlers: a macvlan link per endpoint on the network's parent, made at
//! Join and removed at DeleteEndpoint; no bridge, no NAT, no published ports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::Result;
use async_trait::async_trait;
use ipnetwork::IpNetwork;
use netloom_dataplane::{mac, names, MacvlanSpec, Netlink};
use netloom_plugin_api::addressing::{endpoint_address, pool_of, pools, short_id, Pool};
use netloom_plugin_api::locks::{lock, KeyedLocks, Turn, LOCK_WAIT};
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointInterface,
    EndpointRef, InterfaceName, JoinRequest, JoinResponse, NetworkRef, ProgramExternalConnectivityRequest, Scope,
};
use netloom_plugin_api::wire::ports::port_bindings;
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult};
use std::sync::{Mutex, MutexGuard};
use tracing::{debug, info, warn};

use crate::options::MacvlanOptions;
use crate::parent;
use crate::state::{EndpointRecord, NetworkRecord, Parent, Records, OWNER_PREFIX};

/// The key CreateNetwork and DeleteNetwork take besides their network's: parents are shared
/// between networks, so their checks must see finished networks.
const PARENTS: &str = "\0parents";

pub struct MacvlanDriver {
    netlink: Netlink,
    records: Records,
    /// Held only while reading or updating the maps, never across a kernel or store call.
    state: Mutex<State>,
    /// One turn per network: requests on one network run one at a time, other networks go on.
    turns: KeyedLocks,
}

#[derive(Default)]
struct State {
    networks: BTreeMap<String, NetworkRecord>,
    endpoints: BTreeMap<String, EndpointRecord>,
}

impl State {
    fn others(&self, id: &str) -> Vec<NetworkRecord> {
        self.networks.values().filter(|n| n.id != id).cloned().collect()
    }
}

impl MacvlanDriver {
    /// Loads the records and reconciles the kernel with them before the socket opens.
    pub async fn start(netlink: Netlink, records: Records) -> Result<Self> {
        let state = State { networks: records.networks().await?, endpoints: records.endpoints().await? };
        let driver = Self { netlink, records, state: Mutex::new(State::default()), turns: KeyedLocks::default() };
        driver.reconcile(&state).await;
        *driver.state() = state;
        Ok(driver)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Waits for `key`'s turn (bounded; the error names what it waited for and the holder).
    async fn turn(&self, key: &str, what: &str, doing: String) -> PluginResult<Turn> {
        self.turns.take(key, what, doing, LOCK_WAIT).await
    }

    async fn network_turn(&self, network_id: &str, doing: String) -> PluginResult<Turn> {
        self.turn(network_id, &format!("loom-macvlan network {}", short_id(network_id)), doing).await
    }

    async fn reconcile(&self, state: &State) {
        let started = std::time::Instant::now();
        for net in state.networks.values() {
            if let Err(e) = parent::ensure(&self.netlink, net).await {
                warn!(network = %short_id(&net.id), "could not restore the parent interface: {e:#}");
            }
        }
        // An endpoint's macvlan is either in its container (invisible here) or back in this
        // namespace waiting for DeleteEndpoint; both are fine. Links tagged as ours that no record
        // explains are leftovers of a crash.
        let owners: BTreeSet<String> = state
            .networks
            .values()
            .map(NetworkRecord::owner)
            .chain(state.endpoints.values().map(EndpointRecord::owner))
            .collect();
        let parents: BTreeSet<&str> = state.networks.values().map(|n| n.parent.name()).collect();
        match self.netlink.links().await {
            Ok(links) => {
                for link in links {
                    let Some(alias) = link.alias.as_deref() else { continue };
                    if alias.starts_with(OWNER_PREFIX)
                        && !owners.contains(alias)
                        && !parents.contains(link.name.as_str())
                    {
                        info!(link = %link.name, owner = alias, "removing leftover link");
                        if let Err(e) = self.netlink.delete_link(&link.name).await {
                            warn!("{e:#}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing links for leftovers: {e:#}"),
        }
        info!(
            networks = state.networks.len(),
            endpoints = state.endpoints.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
    }

    /// Deletes the endpoint's macvlan if it is back in this namespace (it is destroyed with its
    /// container's namespace otherwise).
    async fn remove_link(&self, ep: &EndpointRecord) -> Result<()> {
        if let Some(link) = self.netlink.link(&ep.link).await? {
            if link.alias.as_deref() == Some(ep.owner().as_str()) {
                self.netlink.delete_link(&ep.link).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl NetworkDriver for MacvlanDriver {
    fn capabilities(&self) -> CapabilitiesResponse {
        // Like Docker's macvlan: the network is per host, but its segment spans hosts.
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Global }
    }

    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let mut options = MacvlanOptions::parse(&req.options.generic()).map_err(PluginError::from)?;
        let pools_v4 = pools(&req.ipv4_data, "IPv4")?;
        let pools_v6 = if req.options.enable_ipv6() { pools(&req.ipv6_data, "IPv6")? } else { Vec::new() };
        if pools_v4.iter().any(|p| p.subnet.prefix() == 0) {
            return Err(PluginError::new("loom-macvlan needs a real IPv4 subnet, not 0.0.0.0/0; use --subnet"));
        }
        let internal = req.options.internal();
        if internal {
            if let Some(parent) = options.parent.take() {
                // As Docker's macvlan: an internal network never touches a real segment.
                info!(network = %short_id(&req.network_id), parent = %parent.name, "--internal: parent ignored, the network gets an isolated parent");
            }
        }
        let doing = format!("CreateNetwork of {}", short_id(&req.network_id));
        let _parents = self.turn(PARENTS, "other loom-macvlan network creations and removals", doing.clone()).await?;
        let _turn = self.network_turn(&req.network_id, doing).await?;
        let (existing, others) = {
            let state = self.state();
            (state.networks.get(&req.network_id).cloned(), state.others(&req.network_id))
        };
        if let Some(existing) = existing {
            parent::ensure(&self.netlink, &existing).await?;
            return Ok(());
        }
        let parent = parent::plan(&self.netlink, &options, &req.network_id).await.map_err(PluginError::from)?;
        let other_refs: Vec<&NetworkRecord> = others.iter().collect();
        parent::check_sharing(options.mode, &parent, &other_refs).map_err(PluginError::from)?;
        let record = NetworkRecord {
            id: req.network_id.clone(),
            parent,
            mode: options.mode,
            mtu: options.mtu,
            pools_v4,
            pools_v6,
            internal,
        };
        self.records.put_network(&record).await?;
        if let Err(e) = parent::ensure(&self.netlink, &record).await {
            if let Err(cleanup) = parent::release(&self.netlink, &record, &other_refs).await {
                warn!("rolling back network {}: {cleanup:#}", short_id(&record.id));
            }
            let _ = self.records.delete_network(&record.id).await;
            return Err(e.into());
        }
        info!(network = %short_id(&record.id), parent = %record.parent.name(), mode = ?record.mode, internal, "network created");
        self.state().networks.insert(record.id.clone(), record);
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let doing = format!("DeleteNetwork of {}", short_id(&req.network_id));
        let _parents = self.turn(PARENTS, "other loom-macvlan network creations and removals", doing.clone()).await?;
        let _turn = self.network_turn(&req.network_id, doing).await?;
        let (net, leftovers, others) = {
            let state = self.state();
            let Some(net) = state.networks.get(&req.network_id).cloned() else {
                debug!(network = %req.network_id, "unknown network; nothing to delete");
                return Ok(());
            };
            let leftovers: Vec<EndpointRecord> =
                state.endpoints.values().filter(|e| e.network_id == net.id).cloned().collect();
            (net, leftovers, state.others(&req.network_id))
        };
        for ep in &leftovers {
            self.remove_link(ep).await?;
            self.records.delete_endpoint(&ep.network_id, &ep.id).await?;
            self.state().endpoints.remove(&ep.id);
        }
        parent::release(&self.netlink, &net, &others.iter().collect::<Vec<_>>()).await?;
        self.records.delete_network(&net.id).await?;
        self.state().networks.remove(&net.id);
        info!(network = %short_id(&net.id), "network removed");
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let _turn =
            self.network_turn(&req.network_id, format!("CreateEndpoint of {}", short_id(&req.endpoint_id))).await?;
        let (net, existing) = {
            let state = self.state();
            let net = state
                .networks
                .get(&req.network_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-macvlan", &req.network_id))?;
            (net, state.endpoints.get(&req.endpoint_id).cloned())
        };
        let address_v4 = endpoint_address(&req.interface.address, &net.pools_v4, "IPv4")?;
        let address_v6 = endpoint_address(&req.interface.address_ipv6, &net.pools_v6, "IPv6")?;
        let mac_given = !req.interface.mac_address.is_empty();
        if mac_given {
            mac::parse(&req.interface.mac_address).map_err(PluginError::from)?;
        }
        let record = match existing {
            Some(existing) => existing,
            None => EndpointRecord {
                network_id: net.id.clone(),
                id: req.endpoint_id.clone(),
                link: names::derived("mv", &req.endpoint_id),
                address_v4,
                address_v6,
                mac: if mac_given {
                    req.interface.mac_address.clone()
                } else {
                    mac::format(&mac::for_endpoint(ipv4(address_v4)))
                },
            },
        };
        self.records.put_endpoint(&record).await?;
        let interface =
            (!mac_given).then(|| EndpointInterface { mac_address: record.mac.clone(), ..Default::default() });
        self.state().endpoints.insert(record.id.clone(), record);
        Ok(CreateEndpointResponse { interface })
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let _turn =
            self.network_turn(&req.network_id, format!("DeleteEndpoint of {}", short_id(&req.endpoint_id))).await?;
        let Some(ep) = self.state().endpoints.get(&req.endpoint_id).cloned() else {
            return Ok(());
        };
        self.remove_link(&ep).await?;
        self.records.delete_endpoint(&ep.network_id, &ep.id).await?;
        self.state().endpoints.remove(&ep.id);
        Ok(())
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let _turn = self.network_turn(&req.network_id, format!("Join of {}", short_id(&req.endpoint_id))).await?;
        let (net, ep) = {
            let state = self.state();
            let ep = state
                .endpoints
                .get(&req.endpoint_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_endpoint("loom-macvlan", &req.endpoint_id))?;
            let net = state
                .networks
                .get(&ep.network_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-macvlan", &ep.network_id))?;
            (net, ep)
        };
        if net.internal && !matches!(net.parent, Parent::Isolated { .. }) {
            // Recorded before internal networks got an isolated parent: refuse rather than put a
            // container of an internal network on a real segment.
            return Err(PluginError::new(format!(
                "internal network {} sits on parent {}, a real segment; remove and recreate the network",
                short_id(&net.id),
                net.parent.name()
            )));
        }
        let parent = parent::ensure(&self.netlink, &net).await?;
        let owner = ep.owner();
        let spec = MacvlanSpec {
            name: &ep.link,
            parent_index: parent.index,
            mode: net.mode.kernel(),
            mtu: net.mtu,
            mac: mac::parse(&ep.mac).ok(),
            owner: &owner,
        };
        self.netlink.ensure_macvlan(&spec).await?;
        debug!(endpoint = %short_id(&ep.id), link = %ep.link, parent = %parent.name, "macvlan ready");
        let gateway = |address: Option<IpNetwork>, pools: &[Pool]| {
            address
                .filter(|_| !net.internal)
                .and_then(|a| pool_of(pools, a.ip()))
                .and_then(|p| p.gateway)
                .map(|g| g.ip().to_string())
                .unwrap_or_default()
        };
        Ok(JoinResponse {
            interface_name: Some(InterfaceName { src_name: ep.link.clone(), dst_prefix: "eth".into() }),
            gateway: gateway(ep.address_v4, &net.pools_v4),
            gateway_ipv6: gateway(ep.address_v6, &net.pools_v6),
            // No gateway must not make Docker attach docker_gwbridge, for an internal network
            // (newer daemons skip it for internal networks anyway).
            disable_gateway_service: net.internal,
            ..JoinResponse::default()
        })
    }

    async fn leave(&self, _req: EndpointRef) -> PluginResult<()> {
        // The macvlan is still in the container now; DeleteEndpoint removes it once Docker has
        // moved it back.
        Ok(())
    }

    async fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> PluginResult<()> {
        let bindings = port_bindings(&req.options).map_err(PluginError::new)?;
        if let Some(first) = bindings.first() {
            return Err(PluginError::new(format!(
                "loom-macvlan cannot publish ports (asked for {}/{}): a macvlan container is reached at its own \
                 address on the parent's segment, so drop -p/-P; to publish ports use host networking or loom-bridge",
                first.port, first.proto
            )));
        }
        Ok(())
    }
}

fn ipv4(address: Option<IpNetwork>) -> Option<std::net::Ipv4Addr> {
    match address.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    }
}
