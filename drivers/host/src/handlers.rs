//! loom-host's answers to Docker's NetworkDriver requests.

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use netloom_dataplane::names;
use netloom_driver_kit::guard::firewall_call;
use netloom_driver_kit::registry::NewEndpoint;
use netloom_driver_kit::{endpoint, ports};
use netloom_plugin_api::addressing::{pools, short_id};
use netloom_plugin_api::engine::HeldNetwork;
use netloom_plugin_api::siblings::ClaimedSubnets;
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef,
    InterfaceName, JoinRequest, JoinResponse, NetworkRef, ProgramExternalConnectivityRequest, RouteType, Scope,
    StaticRoute,
};
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult};
use tracing::{debug, info};

use crate::driver::HostDriver;
use crate::options::HostOptions;
use crate::plumbing::{self, GATEWAY_V4, GATEWAY_V6};
use crate::policy;
use crate::state::{pick_table, EndpointRecord, NetworkRecord};

#[async_trait]
impl NetworkDriver for HostDriver {
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
        HostDriver::status_details(self)
    }

    async fn inspect_network(&self, network: &str) -> PluginResult<serde_json::Value> {
        self.inspect(network).await
    }

    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let options = HostOptions::parse(&req.options.generic()).map_err(PluginError::from)?;
        let pools_v4 = pools(&req.ipv4_data, "IPv4")?;
        let pools_v6 = if req.options.enable_ipv6() { pools(&req.ipv6_data, "IPv6")? } else { Vec::new() };
        let doing = format!("CreateNetwork of {}", short_id(&req.network_id));
        let _creating = self.registry.creation_turn(doing.clone()).await?;
        let _turn = self.registry.turn(&req.network_id, doing).await?;
        if let Some(existing) = self.registry.find_network(&req.network_id) {
            return plumbing::enable_forwarding(&existing).map_err(PluginError::from);
        }
        let subnets: Vec<IpNetwork> = pools_v4.iter().chain(&pools_v6).map(|p| p.subnet).collect();
        self.check_overlap(&req.network_id, &subnets).await?;
        let internal = req.options.internal();
        let table = internal.then(|| {
            let taken: Vec<u32> = self.registry.maps().networks.values().filter_map(|n| n.table).collect();
            pick_table(&req.network_id, &taken)
        });
        let record = NetworkRecord { id: req.network_id.clone(), options, pools_v4, pools_v6, internal, table };
        plumbing::enable_forwarding(&record)?;
        self.registry.put_network(record.clone()).await?;
        info!(network = %short_id(&record.id), masquerade = record.options.masquerade, internal, table = ?record.table, "network created");
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let doing = format!("DeleteNetwork of {}", short_id(&req.network_id));
        let _turn = self.registry.turn(&req.network_id, doing).await?;
        let Some((net, leftovers)) = self.registry.network_to_delete(&req.network_id) else {
            return Ok(());
        };
        let on = Some(&net);
        self.registry
            .remove_endpoints(leftovers, |ep| async move { self.teardown_endpoint(on, &ep).await.map(|()| ep) })
            .await?;
        if let Some(table) = net.table {
            plumbing::remove_table(&self.netlink, table).await?;
        }
        self.registry.remove_network(&net.id).await?;
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let pools = |net: &NetworkRecord| [net.pools_v4.clone(), net.pools_v6.clone()];
        let NewEndpoint { turn: _turn, net, existing, address_v4, address_v6 } =
            self.registry.endpoint_to_create(&req, pools).await?;
        if address_v4.is_none() && address_v6.is_none() {
            return Err(PluginError::new(
                "loom-host routes container addresses, but Docker assigned this endpoint none",
            ));
        }
        let record = match existing {
            Some(existing) => existing,
            None => EndpointRecord {
                network_id: net.id.clone(),
                id: req.endpoint_id.clone(),
                host_veth: names::derived("lh", &req.endpoint_id),
                peer_veth: names::derived("lp", &req.endpoint_id),
                address_v4,
                address_v6,
                mac: endpoint::mac_of_new(&req.interface.mac_address, address_v4)?,
                joined: false,
                ports: Vec::new(),
            },
        };
        let ensure = async { plumbing::ensure_endpoint(&self.netlink, &net, &record).await.map(drop) };
        let rollback = async { self.netlink.delete_link(&record.host_veth).await.map(drop) };
        self.registry.create_endpoint(&record, ensure, rollback).await?;
        Ok(endpoint::created(&req.interface.mac_address, &record.mac))
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let teardown = |net: Option<NetworkRecord>, ep| async move {
            self.teardown_endpoint(net.as_ref(), &ep).await.map(|()| ep)
        };
        self.registry.delete_endpoint(&req, teardown).await
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let _turn = self.registry.turn(&req.network_id, format!("Join of {}", short_id(&req.endpoint_id))).await?;
        let (net, mut ep) = self.registry.endpoint_and_network(&req.endpoint_id)?;
        if self.netlink.link(&ep.peer_veth).await?.is_none() {
            // A retried Join after the container side went away: make the pair again.
            let _ = self.netlink.delete_link(&ep.host_veth).await;
        }
        let host = plumbing::ensure_endpoint(&self.netlink, &net, &ep).await?;
        ep.joined = true;
        self.registry.put_endpoint(ep.clone()).await?;
        plumbing::add_routes(&self.netlink, &host, &net, &ep).await?;
        let what = format!("policy of endpoint {}", short_id(&ep.id));
        firewall_call(&*self.firewall, what, self.firewall.add_network(&policy::of(&net, &ep))).await?;
        info!(endpoint = %short_id(&ep.id), veth = %ep.host_veth, routes = ?ep.host_routes(), table = ?net.table, "joined");
        let gateways = !net.internal;
        Ok(JoinResponse {
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
        })
    }

    async fn leave(&self, req: EndpointRef) -> PluginResult<()> {
        let _turn = self.registry.turn(&req.network_id, format!("Leave of {}", short_id(&req.endpoint_id))).await?;
        let Some((net, mut ep)) = self.registry.endpoint_with_network(&req.endpoint_id) else {
            return Ok(());
        };
        // Removing the endpoint's policy withdraws its published ports too.
        self.remove_policy(&ep).await?;
        plumbing::remove_routes(&self.netlink, net.as_ref(), &ep).await?;
        ep.joined = false;
        ep.ports.clear();
        debug!(endpoint = %short_id(&ep.id), "left");
        self.registry.put_endpoint(ep).await?;
        Ok(())
    }

    async fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> PluginResult<()> {
        ports::publish(&self.registry, &*self.firewall, &req, |_| None, policy::of).await
    }

    async fn revoke_external_connectivity(&self, req: EndpointRef) -> PluginResult<()> {
        ports::revoke(&self.registry, &*self.firewall, &req, policy::of).await
    }
}
