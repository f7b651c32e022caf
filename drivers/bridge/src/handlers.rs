//! loom-bridge's answers to Docker's NetworkDriver requests.

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use netloom_dataplane::names;
use netloom_driver_kit::registry::NewEndpoint;
use netloom_driver_kit::{endpoint, ports};
use netloom_plugin_api::addressing::{pools, short_id as short, Pool};
use netloom_plugin_api::engine::HeldNetwork;
use netloom_plugin_api::options::IPV6_MIN_MTU;
use netloom_plugin_api::siblings::ClaimedSubnets;
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef,
    InterfaceName, IpamData, JoinRequest, JoinResponse, NetworkRef, ProgramExternalConnectivityRequest, Scope,
};
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult};
use tracing::info;

use crate::driver::{policy, BridgeDriver, DRIVER};
use crate::options::BridgeOptions;
use crate::state::{EndpointRecord, NetworkRecord};

#[async_trait]
impl NetworkDriver for BridgeDriver {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }

    fn claimed_subnets(&self) -> Vec<ClaimedSubnets> {
        self.claimed()
    }

    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        Some(self.registry.held())
    }

    async fn status_details(&self) -> serde_json::Value {
        BridgeDriver::status_details(self)
    }

    async fn inspect_network(&self, network: &str) -> PluginResult<serde_json::Value> {
        self.inspect(network).await
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
        let _creating = self.registry.creation_turn(doing.clone()).await?;
        let _turn = self.registry.turn(&req.network_id, doing).await?;
        if let Some(existing) = self.registry.find_network(&req.network_id) {
            return self.ensure_network(&existing).await.map_err(PluginError::from);
        }
        let bridge = options.bridge_name.clone().unwrap_or_else(|| names::derived("loom", &req.network_id));
        let same_bridge = self.registry.maps().networks.values().find(|n| n.bridge == bridge).map(|n| n.id.clone());
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
        self.registry.create_network(&record, self.ensure_network(&record), self.teardown_network(&record)).await?;
        info!(network = %short(&record.id), bridge = %record.bridge, "network created");
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let _turn = self.registry.turn(&req.network_id, format!("DeleteNetwork of {}", short(&req.network_id))).await?;
        let Some((net, leftovers)) = self.registry.network_to_delete(&req.network_id) else {
            return Ok(());
        };
        let on = Some(&net);
        self.registry
            .remove_endpoints(leftovers, |ep| async move { self.teardown_endpoint(on, &ep).await.map(|()| ep) })
            .await?;
        self.teardown_network(&net).await?;
        self.registry.remove_network(&net.id).await?;
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let pools = |net: &NetworkRecord| [net.subnet_v4, net.subnet_v6].map(pool_of_subnet);
        let NewEndpoint { turn: _turn, net, existing, address_v4, address_v6 } =
            self.registry.endpoint_to_create(&req, pools).await?;
        let record = match existing {
            Some(existing) => existing,
            None => EndpointRecord {
                network_id: net.id.clone(),
                id: req.endpoint_id.clone(),
                host_veth: names::derived("vl", &req.endpoint_id),
                peer_veth: names::derived("vp", &req.endpoint_id),
                address_v4,
                address_v6,
                mac: endpoint::mac_of_new(&req.interface.mac_address, address_v4)?,
                ports: Vec::new(),
            },
        };
        let rollback = async { self.netlink.delete_link(&record.host_veth).await.map(drop) };
        self.registry.create_endpoint(&record, self.ensure_endpoint(&net, &record), rollback).await?;
        self.spawn_fast_path(&net, &record);
        Ok(endpoint::created(&req.interface.mac_address, &record.mac))
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let teardown = |net: Option<NetworkRecord>, ep| async move {
            self.teardown_endpoint(net.as_ref(), &ep).await.map(|()| ep)
        };
        self.registry.delete_endpoint(&req, teardown).await
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let _turn = self.registry.turn(&req.network_id, format!("Join of {}", short(&req.endpoint_id))).await?;
        let (net, ep) = self.registry.endpoint_and_network(&req.endpoint_id)?;
        if self.netlink.link(&ep.peer_veth).await?.is_none() {
            // A retried Join after the container side went away: make the pair again.
            let _ = self.netlink.delete_link(&ep.host_veth).await;
            self.ensure_endpoint(&net, &ep).await?;
            self.spawn_fast_path(&net, &ep);
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
        let host_binding = |net: &NetworkRecord| net.options.host_binding_ipv4;
        ports::publish(&self.registry, &*self.firewall, &req, host_binding, |net, _| policy(net)).await
    }

    async fn revoke_external_connectivity(&self, req: EndpointRef) -> PluginResult<()> {
        ports::revoke(&self.registry, &*self.firewall, &req, |net, _| policy(net)).await
    }
}

/// The one pool of a family Docker's bridge semantics allow, with its gateway.
fn single_pool(data: &[IpamData], family: &str) -> PluginResult<(Option<IpNetwork>, Option<IpNetwork>)> {
    match pools(data, family)?.as_slice() {
        [] => Ok((None, None)),
        [Pool { subnet, gateway }] => Ok((Some(*subnet), *gateway)),
        more => Err(PluginError::new(format!(
            "{DRIVER} takes one {family} subnet per network, got {}; create one network per subnet",
            more.len()
        ))),
    }
}

/// The network's one subnet of a family as the pool container addresses come from.
fn pool_of_subnet(subnet: Option<IpNetwork>) -> Vec<Pool> {
    subnet.map(|subnet| Pool { subnet, gateway: None }).into_iter().collect()
}
