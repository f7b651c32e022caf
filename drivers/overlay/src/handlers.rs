//! loom-overlay's answers to Docker's requests.
//!
//! Private records (which Docker network is which overlay, the endpoints with their interface
//! names) are written to the embedded store before a request is answered; the cluster's records
//! (networks, peers, hosts) live in the shared store. Requests on one network take its turn, one
//! at a time; other networks, and the background sync, go on meanwhile.

use std::sync::Arc;

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use netloom_dataplane::names;
use netloom_driver_kit::endpoint;
use netloom_plugin_api::addressing::{endpoint_address, Pool};
use netloom_plugin_api::engine::HeldNetwork;
use netloom_plugin_api::locks::LOCK_WAIT;
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef,
    InterfaceName, JoinRequest, JoinResponse, NetworkRef, Scope,
};
use netloom_plugin_api::wire::ports::port_bindings;
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult};
use tracing::{debug, info, warn};

use crate::cluster::{NetworkRequest, Outcome};
use crate::options::{overlay_mtu, single_subnet, Encapsulation, OverlayOptions};
use crate::overlay::{store_error, Overlay};
use crate::ports::after_join;
use crate::records::{self, short, LocalEndpoint, LocalNetwork, Mode};

/// The key every CreateNetwork takes besides its network's: a second Docker network for the same
/// overlay is seen and refused.
const CREATING: &str = "\0create-network";

/// `Netloom.RotateKey`: a new WireGuard key for this host's tunnel.
pub const ROTATE_KEY: &str = "RotateKey";

/// The `NetworkDriver` the plugin server holds; the background tasks hold the same `Overlay`.
pub struct Driver(pub Arc<Overlay>);

#[async_trait]
impl NetworkDriver for Driver {
    fn capabilities(&self) -> CapabilitiesResponse {
        let scope = match self.0.config.mode {
            Mode::Local => Scope::Local,
            Mode::Global => Scope::Global,
        };
        CapabilitiesResponse { scope, connectivity_scope: Scope::Global }
    }

    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let ov = &self.0;
        // The guard is on before the network's VXLAN link opens its socket.
        ov.sync_guard(true).await;
        let result = self.create_network_in_turn(req).await;
        ov.sync_guard(false).await;
        result
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let result = self.0.delete_network(&req.network_id).await;
        self.0.sync_guard(false).await;
        result
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let ov = &self.0;
        // Global scope: the first endpoint of a network created on another host sets it up here.
        let adopting = ov.config.mode == Mode::Global && !ov.state().networks.contains_key(&req.network_id);
        if adopting {
            ov.sync_guard(true).await;
        }
        let result = self.create_endpoint_in_turn(req).await;
        if adopting {
            ov.sync_guard(false).await;
        }
        result
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let ov = &self.0;
        let _turn = ov.turn(&req.network_id, format!("DeleteEndpoint of {}", short(&req.endpoint_id))).await?;
        ov.withdraw_ports(&req.endpoint_id).await;
        let Some(ep) = ov.state().endpoints.get(&req.endpoint_id).cloned() else {
            return Ok(());
        };
        let dp = ov.state().dataplane(&ep.network);
        ov.fabric.teardown_endpoint(dp.as_deref(), &ep).await.map_err(|e| PluginError::new(format!("{e:#}")))?;
        ov.delete_endpoint_record(&ep).await?;
        ov.state().endpoints.remove(&ep.id);
        ov.unpublish(&ep).await;
        Ok(())
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let ov = &self.0;
        let _turn = ov.turn(&req.network_id, format!("Join of {}", short(&req.endpoint_id))).await?;
        let (ep, net) = {
            let state = ov.state();
            let ep = state
                .endpoints
                .get(&req.endpoint_id)
                .cloned()
                .ok_or_else(|| PluginError::unknown_endpoint("loom-overlay", &req.endpoint_id))?;
            let net = state
                .network_by_key(&ep.network)
                .cloned()
                .ok_or_else(|| PluginError::unknown_network("loom-overlay", &ep.docker_network))?;
            (ep, net)
        };
        ov.ensure_dataplane(&net.config).await?;
        let dp =
            ov.state().dataplane(&ep.network).ok_or_else(|| PluginError::new("the network's dataplane vanished"))?;
        if ov.fabric.netlink().link(&ep.container_veth).await.map_err(PluginError::from)?.is_none()
            && !ov.fabric.endpoint_alive(&dp, &ep).await.map_err(PluginError::from)?
        {
            // A retried Join after the pair went away: make it again.
            ov.fabric.ensure_endpoint(&dp, &net.config, &ep).await.map_err(PluginError::from)?;
        }
        if !net.config.internal && ov.gateway.is_some() {
            let ports = port_bindings(&req.options).unwrap_or_else(|e| {
                warn!(endpoint = %short(&ep.id), "{e}; publishing no ports");
                Vec::new()
            });
            if ports != ep.ports {
                let record = LocalEndpoint { ports, ..ep.clone() };
                ov.put_endpoint(&record).await?;
                ov.state().endpoints.insert(record.id.clone(), record);
            }
        }
        if !net.config.internal && (ov.gateway.is_some() || ov.directory.is_some()) {
            tokio::spawn(after_join(ov.clone(), req.network_id.clone(), ep.id.clone(), req.sandbox_key.clone()));
        }
        // No gateway: Docker gives the container a docker_gwbridge leg for the outside world.
        Ok(JoinResponse {
            interface_name: Some(InterfaceName { src_name: ep.container_veth.clone(), dst_prefix: "eth".to_string() }),
            ..JoinResponse::default()
        })
    }

    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        Some(self.0.held())
    }

    async fn status_details(&self) -> serde_json::Value {
        self.0.status_details()
    }

    async fn inspect_network(&self, network: &str) -> PluginResult<serde_json::Value> {
        self.0.inspect(network)
    }

    async fn leave(&self, req: EndpointRef) -> PluginResult<()> {
        let ov = &self.0;
        let _turn = ov.turn(&req.network_id, format!("Leave of {}", short(&req.endpoint_id))).await?;
        ov.withdraw_ports(&req.endpoint_id).await;
        Ok(())
    }

    async fn control(&self, call: &str, _body: serde_json::Value) -> PluginResult<serde_json::Value> {
        match call {
            ROTATE_KEY => {
                let public = self.0.rotate_key().await?;
                Ok(serde_json::json!({ "PublicKey": public.to_base64() }))
            }
            _ => Err(PluginError::unknown_method(&format!("Netloom.{call}"))),
        }
    }
}

impl Driver {
    async fn create_network_in_turn(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let ov = &self.0;
        let shared = ov.shared()?;
        let options = OverlayOptions::parse(&req.options.generic()).map_err(PluginError::from)?;
        let subnet_v4 = single_subnet(&req.ipv4_data, "IPv4")?;
        let subnet_v6 = if req.options.enable_ipv6() { single_subnet(&req.ipv6_data, "IPv6")? } else { None };
        if subnet_v4.is_none() && subnet_v6.is_none() {
            return Err(PluginError::new("a loom-overlay network needs a subnet"));
        }
        let doing = format!("CreateNetwork of {}", short(&req.network_id));
        let _creating =
            ov.turns.take(CREATING, "other loom-overlay network creations", doing.clone(), LOCK_WAIT).await?;
        let _turn = ov.turn(&req.network_id, doing).await?;
        let existing = ov.state().networks.get(&req.network_id).cloned();
        if let Some(existing) = existing {
            return ov.ensure_dataplane(&existing.config).await;
        }
        let underlay = ov.underlay().await?;
        let encap = Encapsulation { encrypted: options.encrypted, underlay_v6: underlay.vtep.is_ipv6() };
        let mtu = overlay_mtu(options.mtu, underlay.mtu, subnet_v6.is_some(), encap).map_err(PluginError::from)?;
        let request = NetworkRequest {
            docker_id: req.network_id.clone(),
            host: ov.host.clone(),
            vni: options.vni,
            subnet_v4,
            subnet_v6,
            mtu,
            mtu_given: options.mtu.is_some(),
            internal: req.options.internal(),
            encrypted: options.encrypted,
        };
        let (config, outcome, revision) = match ov.config.mode {
            Mode::Global => {
                let (config, revision) = shared.create_global(&request).await.map_err(store_error)?;
                (config, Outcome::Created, revision)
            }
            Mode::Local => shared.join_local(&request).await.map_err(store_error)?,
        };
        let other = {
            let mut state = ov.state();
            state.wrote(records::network_key(&config.key), records::encode(&config), revision);
            state.network_by_key(&config.key).map(|other| other.docker_id.clone())
        };
        if let Some(other) = other {
            // Another Docker network of this host already is this overlay; the store record is
            // that network's too, so it stays.
            return Err(PluginError::new(format!(
                "this host already has Docker network {} for the overlay with VNI {}; use that one",
                short(&other),
                config.vni
            )));
        }
        let record = LocalNetwork { docker_id: req.network_id.clone(), config: config.clone() };
        let result = async {
            ov.put_network(&record).await?;
            ov.state().networks.insert(record.docker_id.clone(), record.clone());
            ov.ensure_dataplane(&config).await
        }
        .await;
        if let Err(e) = result {
            // Nothing of this request stays behind: kernel, private record, shared record.
            ov.state().networks.remove(&record.docker_id);
            let _ = ov.delete_network_record(&record.docker_id).await;
            if let Err(cleanup) = ov.drop_dataplane(&config.key, config.vni).await {
                warn!("rolling back network {}: {cleanup:#}", short(&config.key));
            }
            let undo = match ov.config.mode {
                Mode::Global => shared.delete_global(&config.key).await,
                Mode::Local => shared.leave_local(&config.key, &ov.host).await,
            };
            if let Err(cleanup) = undo {
                warn!("rolling back network {} in the store: {cleanup:#}", short(&config.key));
            }
            return Err(e);
        }
        info!(network = %short(&req.network_id), key = %config.key, vni = config.vni, mtu = config.mtu,
              encrypted = config.encrypted, outcome = ?outcome, "network ready");
        Ok(())
    }

    async fn create_endpoint_in_turn(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let ov = &self.0;
        let _turn = ov.turn(&req.network_id, format!("CreateEndpoint of {}", short(&req.endpoint_id))).await?;
        let known = ov.state().networks.get(&req.network_id).cloned();
        let net = match known {
            Some(net) => net,
            None if ov.config.mode == Mode::Global => ov.adopt(&req.network_id).await?,
            None => return Err(PluginError::unknown_network("loom-overlay", &req.network_id)),
        };
        let config = net.config.clone();
        let ipv4 = parse_address(&req.interface.address, config.subnet_v4, "IPv4")?;
        let ipv6 = parse_address(&req.interface.address_ipv6, config.subnet_v6, "IPv6")?;
        let existing = ov.state().endpoints.get(&req.endpoint_id).cloned();
        if existing.is_none() {
            let ips: Vec<_> = [ipv4, ipv6].into_iter().flatten().map(|a| a.ip()).collect();
            ov.check_address_free(&config.key, &ips).await?;
        }
        let record = match existing {
            Some(existing) => existing,
            None => LocalEndpoint {
                id: req.endpoint_id.clone(),
                docker_network: net.docker_id.clone(),
                network: config.key.clone(),
                container_veth: names::derived("lov", &req.endpoint_id),
                bridge_veth: names::derived("ve", &req.endpoint_id),
                mac: endpoint::mac_of_new(&req.interface.mac_address, ipv4)?,
                ipv4,
                ipv6,
                ports: Vec::new(),
                gateway_ip: None,
            },
        };
        ov.ensure_dataplane(&config).await?;
        ov.put_endpoint(&record).await?;
        let dp =
            ov.state().dataplane(&config.key).ok_or_else(|| PluginError::new("the network's dataplane vanished"))?;
        if let Err(e) = ov.fabric.ensure_endpoint(&dp, &config, &record).await {
            let _ = ov.fabric.teardown_endpoint(Some(&dp), &record).await;
            let _ = ov.delete_endpoint_record(&record).await;
            return Err(PluginError::new(format!("{e:#}")));
        }
        ov.publish(&record).await;
        ov.state().endpoints.insert(record.id.clone(), record.clone());
        ov.sync_network(&config.key).await;
        debug!(endpoint = %short(&record.id), mac = %record.mac, veth = %record.container_veth, "endpoint ready");
        Ok(endpoint::created(&req.interface.mac_address, &record.mac))
    }
}

/// An endpoint's address ("" means none), which must lie in the network's subnet.
fn parse_address(text: &str, subnet: Option<IpNetwork>, family: &str) -> PluginResult<Option<IpNetwork>> {
    let pools: Vec<Pool> = subnet.map(|subnet| Pool { subnet, gateway: None }).into_iter().collect();
    endpoint_address(text, &pools, family)
}

#[cfg(test)]
#[path = "handlers_tests.rs"]
mod tests;
