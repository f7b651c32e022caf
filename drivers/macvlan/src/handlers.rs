//! loom-macvlan's answers to Docker's NetworkDriver requests.

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use netloom_dataplane::{mac, names, MacvlanSpec};
use netloom_driver_kit::registry::NewEndpoint;
use netloom_driver_kit::{endpoint, Endpoint};
use netloom_plugin_api::addressing::{pool_of, pools, short_id, Pool};
use netloom_plugin_api::engine::HeldNetwork;
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef,
    InterfaceName, JoinRequest, JoinResponse, NetworkRef, ProgramExternalConnectivityRequest, Scope,
};
use netloom_plugin_api::wire::ports::port_bindings;
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult};
use tracing::{debug, info};

use crate::driver::MacvlanDriver;
use crate::options::MacvlanOptions;
use crate::parent;
use crate::state::{EndpointRecord, NetworkRecord, Parent};

#[async_trait]
impl NetworkDriver for MacvlanDriver {
    fn capabilities(&self) -> CapabilitiesResponse {
        // Like Docker's macvlan: the network is per host, but its segment spans hosts.
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Global }
    }

    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        Some(self.registry.held())
    }

    async fn status_details(&self) -> serde_json::Value {
        MacvlanDriver::status_details(self)
    }

    async fn inspect_network(&self, network: &str) -> PluginResult<serde_json::Value> {
        self.inspect(network).await
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
        let _parents = self.parents_turn(doing.clone()).await?;
        let _turn = self.registry.turn(&req.network_id, doing).await?;
        if let Some(existing) = self.registry.find_network(&req.network_id) {
            parent::ensure(&self.netlink, &existing).await?;
            return Ok(());
        }
        let others = self.others(&req.network_id);
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
        let ensure = async { parent::ensure(&self.netlink, &record).await.map(drop) };
        let rollback = parent::release(&self.netlink, &record, &other_refs);
        self.registry.create_network(&record, ensure, rollback).await?;
        info!(network = %short_id(&record.id), parent = %record.parent.name(), mode = ?record.mode, internal, "network created");
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let doing = format!("DeleteNetwork of {}", short_id(&req.network_id));
        let _parents = self.parents_turn(doing.clone()).await?;
        let _turn = self.registry.turn(&req.network_id, doing).await?;
        let Some((net, leftovers)) = self.registry.network_to_delete(&req.network_id) else {
            return Ok(());
        };
        let others = self.others(&req.network_id);
        self.registry.remove_endpoints(leftovers, |ep| async move { self.remove_link(&ep).await.map(|()| ep) }).await?;
        parent::release(&self.netlink, &net, &others.iter().collect::<Vec<_>>()).await?;
        self.registry.remove_network(&net.id).await?;
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let pools = |net: &NetworkRecord| [net.pools_v4.clone(), net.pools_v6.clone()];
        let NewEndpoint { turn: _turn, net, existing, address_v4, address_v6 } =
            self.registry.endpoint_to_create(&req, pools).await?;
        let record = match existing {
            Some(existing) => existing,
            None => EndpointRecord {
                network_id: net.id.clone(),
                id: req.endpoint_id.clone(),
                link: names::derived("mv", &req.endpoint_id),
                address_v4,
                address_v6,
                mac: endpoint::mac_of_new(&req.interface.mac_address, address_v4)?,
            },
        };
        let response = endpoint::created(&req.interface.mac_address, &record.mac);
        // The macvlan itself is made at Join, once its parent is sure to be there.
        self.registry.put_endpoint(record).await?;
        Ok(response)
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        self.registry.delete_endpoint(&req, |_, ep| async move { self.remove_link(&ep).await.map(|()| ep) }).await
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let _turn = self.registry.turn(&req.network_id, format!("Join of {}", short_id(&req.endpoint_id))).await?;
        let (net, ep) = self.registry.endpoint_and_network(&req.endpoint_id)?;
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
