//! loom-overlay's request handlers and its state.
//!
//! Private records (which Docker network is which overlay, the endpoints with their interface
//! names) are written to the embedded store before a request is answered; the cluster's records
//! (networks, peers, hosts) live in the shared store. A background task (`sync.rs`) keeps a copy
//! of the latter and programs the kernel from it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use ipnetwork::IpNetwork;
use netloom_dataplane::{mac, names, Netlink, Netns};
use netloom_ipam::store::{self, DriverRecords, StoreOptions};
use netloom_ipam::{Ipam, IpamConfig};
use netloom_plugin_api::addressing::{endpoint_address, Pool};
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointInterface,
    EndpointRef, InterfaceName, JoinRequest, JoinResponse, NetworkRef, Scope,
};
use netloom_plugin_api::wire::ports::port_bindings;
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult, Settings};
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};

use crate::cache::Cache;
use crate::cluster::{NetworkRequest, Outcome, Shared};
use crate::fabric::{endpoint_owner, Fabric, NetDataplane};
use crate::gateway::{self, Gateway};
use crate::guard::VxlanGuard;
use crate::options::{overlay_mtu, single_subnet, OverlayOptions};
use crate::records::{self, host_key, short, HostRecord, LocalEndpoint, LocalNetwork, Mode};
use crate::underlay::{self, Underlay};

/// Command-line settings beyond the common ones.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub advertise: Option<String>,
    pub port: u16,
    pub reconcile_every: Duration,
    pub lease_ttl: Duration,
    pub dead_host_grace: Duration,
    pub netns_dir: Option<PathBuf>,
    pub firewall: Option<netloom_firewall::BackendKind>,
    /// The VXLAN guard's backend (also with `--firewall none`).
    pub guard_firewall: netloom_firewall::BackendKind,
}

pub struct Overlay {
    pub(crate) config: Config,
    pub(crate) host: String,
    /// The shared store, or why there is none (answered to every request that needs it).
    pub(crate) shared: Result<Shared, String>,
    /// This host's private records, in the embedded store.
    local: DriverRecords<LocalNetwork, LocalEndpoint>,
    pub(crate) fabric: Fabric,
    /// docker_gwbridge's rules (None: `--firewall none`, or the backend could not start).
    pub(crate) gateway: Option<Gateway>,
    /// VXLAN only from member hosts (None: the backend could not start).
    pub(crate) guard: Option<VxlanGuard>,
    /// Serialises docker_gwbridge's firewall work (taken before `state`, never while holding it).
    pub(crate) gateway_lock: Mutex<()>,
    pub(crate) state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    pub underlay: Option<Underlay>,
    /// Docker network id → record.
    pub networks: BTreeMap<String, LocalNetwork>,
    /// Endpoint id → record.
    pub endpoints: BTreeMap<String, LocalEndpoint>,
    /// Network key → kernel objects.
    pub dataplanes: BTreeMap<String, NetDataplane>,
    pub cache: Cache,
    /// When each host was first seen without a lease record.
    pub absent_since: BTreeMap<String, Instant>,
    /// Bumped on every change to `cache`, so that a list taken meanwhile is known to be stale.
    pub generation: u64,
    /// docker_gwbridge's firewall policy as last programmed.
    pub gateway_policy: Option<netloom_firewall::NetworkPolicy>,
}

impl State {
    /// Records this host's own successful write in the copy of the store.
    pub fn wrote(&mut self, key: String, value: Vec<u8>, revision: netloom_ipam::store::Revision) {
        self.cache.put(&netloom_ipam::store::KeyValue { key, value, revision });
        self.generation += 1;
    }

    /// Records this host's own successful delete in the copy of the store.
    pub fn deleted(&mut self, key: &str) {
        self.cache.delete(key, 0);
        self.generation += 1;
    }

    pub fn network_by_key(&self, key: &str) -> Option<&LocalNetwork> {
        self.networks.values().find(|n| n.config.key == key)
    }

    pub fn endpoints_of(&self, key: &str) -> Vec<LocalEndpoint> {
        self.endpoints.values().filter(|e| e.network == key).cloned().collect()
    }
}

impl Overlay {
    /// Opens the stores, loads the private records and brings the kernel in line with them,
    /// before the socket opens. Configuration problems don't stop the driver: they are logged
    /// and answered to every request that needs what is missing.
    pub async fn start(settings: &Settings, config: Config) -> Result<Arc<Overlay>> {
        let host = settings.host_id()?;
        let embedded = store::open(None, &settings.state_dir, store::DEFAULT_PREFIX)
            .await
            .context("opening the private record store")?;
        let local = DriverRecords::new(embedded, "overlay", &host);
        let shared = open_shared(settings, &config, &host).await;
        if let Err(problem) = &shared {
            error!("{problem}");
        }
        let netns_dir =
            config.netns_dir.clone().unwrap_or_else(|| PathBuf::from(format!("/run/netloom/{}/netns", settings.name)));
        let fabric = Fabric::new(Netlink::connect()?, netns_dir, config.port);
        let gateway = match config.firewall {
            Some(kind) => match Gateway::open(kind).await {
                Ok(gateway) => Some(gateway),
                Err(e) => {
                    error!("the {kind} firewall is unusable: {e:#}; docker_gwbridge's rules are left to dockerd");
                    None
                }
            },
            None => None,
        };
        let guard = match VxlanGuard::open(config.guard_firewall, config.port).await {
            Ok(guard) => Some(guard),
            Err(e) => {
                error!("the {} firewall is unusable: {e:#}; VXLAN is accepted from anyone", config.guard_firewall);
                None
            }
        };
        let overlay = Arc::new(Overlay {
            config,
            host,
            shared,
            local,
            fabric,
            gateway,
            guard,
            gateway_lock: Mutex::new(()),
            state: Mutex::new(State::default()),
        });
        {
            let mut state = overlay.state.lock().await;
            overlay.load(&mut state).await?;
            if let Err(e) = overlay.underlay(&mut state).await {
                error!("{e}");
            }
            overlay.restore(&mut state).await;
        }
        crate::sync::sync_gateway(&overlay).await;
        overlay.sync_guard(false).await;
        if overlay.shared.is_ok() {
            crate::sync::supervise("store watch", overlay.clone(), crate::sync::watch);
            crate::sync::supervise("reconciler", overlay.clone(), crate::sync::reconcile_periodically);
        }
        Ok(overlay)
    }

    /// The VXLAN guard brought in line with the state; never called with the state locked.
    pub(crate) async fn sync_guard(&self, expect_network: bool) {
        if let Some(guard) = &self.guard {
            guard.sync(&self.state, false, expect_network).await;
        }
    }

    pub(crate) fn shared(&self) -> PluginResult<&Shared> {
        self.shared.as_ref().map_err(|problem| PluginError::new(problem.clone()))
    }

    async fn load(&self, state: &mut State) -> Result<()> {
        state.networks = self.local.networks().await.context("reading private network records")?;
        state.endpoints = self.local.endpoints().await.context("reading private endpoint records")?;
        info!(networks = state.networks.len(), endpoints = state.endpoints.len(), "private records loaded");
        Ok(())
    }

    /// This host's VTEP, resolved from --advertise-addr on first use (an interface may come up
    /// after the driver), and the lease record that tells other hosts this one is alive.
    pub(crate) async fn underlay(&self, state: &mut State) -> PluginResult<Underlay> {
        if let Some(underlay) = &state.underlay {
            return Ok(underlay.clone());
        }
        let advertise = self.config.advertise.as_deref().unwrap_or("");
        let resolved = underlay::resolve(self.fabric.netlink(), advertise)
            .await
            .map_err(|e| PluginError::new(format!("{e:#}")))?;
        info!(vtep = %resolved.vtep, iface = %resolved.iface, mtu = resolved.mtu, port = self.config.port, "tunnel endpoint");
        if let Ok(shared) = &self.shared {
            let record = HostRecord {
                vtep: resolved.vtep,
                port: self.config.port,
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: records::now(),
            };
            // Kept alive with the host's lease; written later if the store is unreachable now.
            if let Err(e) = shared.store.put_leased(&host_key(&self.host), records::encode(&record)).await {
                warn!("announcing this host in the store: {e}; retrying in the background");
            }
        }
        state.underlay = Some(resolved.clone());
        Ok(resolved)
    }

    /// Start-up reconciliation: every recorded network's namespace, bridge and VXLAN link, every
    /// endpoint whose veth still exists back on its bridge, leftovers removed. FDB and neighbour
    /// entries are left as they are until the shared store has been read.
    async fn restore(&self, state: &mut State) {
        let started = Instant::now();
        let networks: Vec<LocalNetwork> = state.networks.values().cloned().collect();
        for net in &networks {
            if let Err(e) = self.ensure_dataplane(state, &net.config).await {
                warn!(network = %short(&net.config.key), "could not restore network: {e}");
            }
        }
        for ep in state.endpoints.values() {
            let Some(dp) = state.dataplanes.get(&ep.network) else { continue };
            match self.fabric.endpoint_alive(dp, ep).await {
                Ok(true) => {
                    if let Some(net) = state.network_by_key(&ep.network) {
                        if let Err(e) = self.fabric.ensure_endpoint(dp, &net.config, ep).await {
                            warn!(endpoint = %short(&ep.id), "could not re-attach endpoint: {e:#}");
                        }
                    }
                }
                Ok(false) => {
                    debug!(endpoint = %short(&ep.id), "veth is gone (its container went); waiting for DeleteEndpoint")
                }
                Err(e) => warn!(endpoint = %short(&ep.id), "{e:#}"),
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

    async fn remove_leftovers(&self, state: &State) {
        let owners: BTreeMap<String, ()> =
            state.endpoints.values().map(|e| (endpoint_owner(&e.network, &e.id), ())).collect();
        self.fabric.remove_leftover_links(&owners).await;
        for dp in state.dataplanes.values() {
            self.fabric.remove_leftover_ports(dp, &owners).await;
        }
        match Netns::list(self.fabric.netns_dir()) {
            Ok(list) => {
                for ns in list {
                    let name = ns.name();
                    let Some(vni) = Fabric::vni_of_netns(&name) else { continue };
                    if !state.dataplanes.values().any(|dp| dp.vni == vni)
                        && !state.networks.values().any(|n| n.config.vni == vni)
                    {
                        info!(netns = %name, "removing leftover network namespace");
                        if let Err(e) = self.fabric.teardown_network(vni, None).await {
                            warn!("{e:#}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing network namespaces: {e:#}"),
        }
    }

    /// The network's kernel objects on this host, made if missing.
    pub(crate) async fn ensure_dataplane(
        &self,
        state: &mut State,
        config: &records::NetworkConfig,
    ) -> PluginResult<()> {
        if let Some(dp) = state.dataplanes.get(&config.key) {
            if dp.vni == config.vni {
                return Ok(());
            }
        }
        let underlay = self.underlay(state).await?;
        if underlay.mtu < config.mtu + crate::options::VXLAN_OVERHEAD {
            warn!(
                network = %short(&config.key),
                "the network's MTU {} needs an underlay MTU of {}, but {} has {}; large packets will be fragmented",
                config.mtu, config.mtu + crate::options::VXLAN_OVERHEAD, underlay.iface, underlay.mtu
            );
        }
        let dp =
            self.fabric.ensure_network(config, underlay.vtep).await.map_err(|e| PluginError::new(format!("{e:#}")))?;
        state.dataplanes.insert(config.key.clone(), dp);
        crate::sync::sync_network(self, state, &config.key).await;
        Ok(())
    }

    async fn drop_dataplane(&self, state: &mut State, key: &str, vni: u32) -> Result<()> {
        let dp = state.dataplanes.remove(key);
        self.fabric.teardown_network(vni, dp).await
    }

    async fn put_network(&self, record: &LocalNetwork) -> PluginResult<()> {
        self.local.put_network(record).await.map_err(private_error)
    }

    async fn put_endpoint(&self, record: &LocalEndpoint) -> PluginResult<()> {
        self.local.put_endpoint(record).await.map_err(private_error)
    }

    async fn delete_endpoint_record(&self, record: &LocalEndpoint) -> PluginResult<()> {
        self.local.delete_endpoint(&record.docker_network, &record.id).await.map_err(private_error)
    }

    /// Withdraws an endpoint's published ports from docker_gwbridge (at Leave and DeleteEndpoint;
    /// again harmless). The firewall is called without the state lock: a slow firewall holds up
    /// this request only, not the peer sync or other requests.
    async fn withdraw_ports(&self, endpoint: &str) {
        let Some(gateway) = &self.gateway else { return };
        let _serial = self.gateway_lock.lock().await;
        let (policy, ep) = {
            let state = self.state.lock().await;
            (state.gateway_policy.clone(), state.endpoints.get(endpoint).cloned())
        };
        let (Some(policy), Some(ep)) = (policy, ep) else { return };
        let Some(address) = ep.gateway_ip else { return };
        if let Err(e) = gateway.withdraw(&policy, &ep.id, &gateway::mappings(&ep.ports, address)).await {
            warn!(endpoint = %short(&ep.id), "withdrawing published ports: {e:#}");
            return;
        }
        let mut state = self.state.lock().await;
        let Some(mut ep) = state.endpoints.get(endpoint).cloned() else { return };
        ep.gateway_ip = None;
        let _ = self.put_endpoint(&ep).await;
        state.endpoints.insert(ep.id.clone(), ep);
    }

    pub(crate) async fn delete_network_record(&self, docker_id: &str) -> PluginResult<()> {
        self.local.delete_network(docker_id).await.map_err(private_error)
    }

    /// Global scope: a network this host's driver never saw created, from the shared store.
    async fn adopt(&self, state: &mut State, docker_id: &str) -> PluginResult<LocalNetwork> {
        let shared = self.shared()?;
        let config = match state.cache.networks.get(docker_id) {
            Some((config, _)) => config.clone(),
            None => {
                let (config, revision) = shared.network(docker_id).await.map_err(store_error)?.ok_or_else(|| {
                    PluginError::new(format!(
                        "network {} is not in loom-overlay's store ({}); was it created with another --store, or removed?",
                        short(docker_id),
                        shared.describe()
                    ))
                })?;
                state.wrote(records::network_key(docker_id), records::encode(&config), revision);
                config
            }
        };
        let record = LocalNetwork { docker_id: docker_id.to_string(), config };
        self.put_network(&record).await?;
        state.networks.insert(docker_id.to_string(), record.clone());
        info!(network = %short(docker_id), vni = record.config.vni, "network created on another host, set up here");
        Ok(record)
    }

    /// Publishes an endpoint in the peer table; if the store can't be reached the reconciler
    /// does it later.
    async fn publish(&self, state: &mut State, ep: &LocalEndpoint) {
        let (Ok(shared), Some(underlay)) = (&self.shared, &state.underlay) else { return };
        let peer = records::encode(&ep.peer(&self.host, underlay.vtep, self.config.port));
        let key = records::peer_key(&ep.network, &ep.id);
        match shared.store.put(&key, peer.clone()).await {
            Ok(revision) => state.wrote(key, peer, revision),
            Err(e) => warn!(endpoint = %short(&ep.id), "publishing the endpoint: {e}; retrying in the background"),
        }
    }

    async fn unpublish(&self, state: &mut State, ep: &LocalEndpoint) {
        let Ok(shared) = &self.shared else { return };
        let key = records::peer_key(&ep.network, &ep.id);
        match shared.store.delete(&key).await {
            Ok(_) => state.deleted(&key),
            Err(e) => warn!(endpoint = %short(&ep.id), "withdrawing the endpoint: {e}; retrying in the background"),
        }
    }
}

async fn open_shared(settings: &Settings, config: &Config, host: &str) -> Result<Shared, String> {
    let Some(url) = settings.store.as_deref() else {
        return Err("loom-overlay needs a store shared by every host: start it with --store etcd://HOST:2379 \
                    (or consul://HOST:8500); the embedded store serves one host and cannot make an overlay"
            .to_string());
    };
    let options = StoreOptions { lease_ttl: config.lease_ttl, ..StoreOptions::default() };
    let store = store::open_with(Some(url), &settings.state_dir, options).await.map_err(|e| format!("--store: {e}"))?;
    let ipam = Ipam::new(store.clone(), host, IpamConfig::default())
        .await
        .map_err(|e| format!("starting the VNI allocator: {e}"))?;
    Ok(Shared { store, ipam })
}

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
        let result = self.create_network_locked(req).await;
        ov.sync_guard(false).await;
        result
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let result = self.delete_network_locked(req).await;
        self.0.sync_guard(false).await;
        result
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let ov = &self.0;
        // Global scope: the first endpoint of a network created on another host sets it up here.
        let adopting = ov.config.mode == Mode::Global && !ov.state.lock().await.networks.contains_key(&req.network_id);
        if adopting {
            ov.sync_guard(true).await;
        }
        let result = self.create_endpoint_locked(req).await;
        if adopting {
            ov.sync_guard(false).await;
        }
        result
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let ov = &self.0;
        ov.withdraw_ports(&req.endpoint_id).await;
        let mut state = ov.state.lock().await;
        let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
            return Ok(());
        };
        ov.fabric
            .teardown_endpoint(state.dataplanes.get(&ep.network), &ep)
            .await
            .map_err(|e| PluginError::new(format!("{e:#}")))?;
        ov.delete_endpoint_record(&ep).await?;
        state.endpoints.remove(&ep.id);
        ov.unpublish(&mut state, &ep).await;
        Ok(())
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let ov = &self.0;
        let mut state = ov.state.lock().await;
        let ep = state
            .endpoints
            .get(&req.endpoint_id)
            .cloned()
            .ok_or_else(|| PluginError::unknown_endpoint("loom-overlay", &req.endpoint_id))?;
        let net = state
            .network_by_key(&ep.network)
            .cloned()
            .ok_or_else(|| PluginError::unknown_network("loom-overlay", &ep.docker_network))?;
        ov.ensure_dataplane(&mut state, &net.config).await?;
        let dp =
            state.dataplanes.get(&ep.network).ok_or_else(|| PluginError::new("the network's dataplane vanished"))?;
        if ov.fabric.netlink().link(&ep.container_veth).await.map_err(PluginError::from)?.is_none()
            && !ov.fabric.endpoint_alive(dp, &ep).await.map_err(PluginError::from)?
        {
            // A retried Join after the pair went away: make it again.
            ov.fabric.ensure_endpoint(dp, &net.config, &ep).await.map_err(PluginError::from)?;
        }
        if !net.config.internal && ov.gateway.is_some() {
            let ports = port_bindings(&req.options).unwrap_or_else(|e| {
                warn!(endpoint = %short(&ep.id), "{e}; publishing no ports");
                Vec::new()
            });
            if ports != ep.ports {
                let record = LocalEndpoint { ports, ..ep.clone() };
                ov.put_endpoint(&record).await?;
                state.endpoints.insert(record.id.clone(), record);
            }
            tokio::spawn(attach_gateway(ov.clone(), ep.id.clone(), req.sandbox_key.clone()));
        }
        // No gateway: Docker gives the container a docker_gwbridge leg for the outside world.
        Ok(JoinResponse {
            interface_name: Some(InterfaceName { src_name: ep.container_veth.clone(), dst_prefix: "eth".to_string() }),
            ..JoinResponse::default()
        })
    }

    async fn leave(&self, req: EndpointRef) -> PluginResult<()> {
        self.0.withdraw_ports(&req.endpoint_id).await;
        Ok(())
    }
}

impl Driver {
    async fn create_network_locked(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let ov = &self.0;
        let shared = ov.shared()?;
        let options = OverlayOptions::parse(&req.options.generic()).map_err(PluginError::from)?;
        let subnet_v4 = single_subnet(&req.ipv4_data, "IPv4")?;
        let subnet_v6 = if req.options.enable_ipv6() { single_subnet(&req.ipv6_data, "IPv6")? } else { None };
        if subnet_v4.is_none() && subnet_v6.is_none() {
            return Err(PluginError::new("a loom-overlay network needs a subnet"));
        }
        let mut state = ov.state.lock().await;
        if let Some(existing) = state.networks.get(&req.network_id).cloned() {
            return ov.ensure_dataplane(&mut state, &existing.config).await;
        }
        let underlay = ov.underlay(&mut state).await?;
        let mtu = overlay_mtu(options.mtu, underlay.mtu, subnet_v6.is_some()).map_err(PluginError::from)?;
        let request = NetworkRequest {
            docker_id: req.network_id.clone(),
            host: ov.host.clone(),
            vni: options.vni,
            subnet_v4,
            subnet_v6,
            mtu,
            mtu_given: options.mtu.is_some(),
            internal: req.options.internal(),
        };
        let (config, outcome, revision) = match ov.config.mode {
            Mode::Global => {
                let (config, revision) = shared.create_global(&request).await.map_err(store_error)?;
                (config, Outcome::Created, revision)
            }
            Mode::Local => shared.join_local(&request).await.map_err(store_error)?,
        };
        state.wrote(records::network_key(&config.key), records::encode(&config), revision);
        if let Some(other) = state.network_by_key(&config.key) {
            // Another Docker network of this host already is this overlay; the store record is
            // that network's too, so it stays.
            return Err(PluginError::new(format!(
                "this host already has Docker network {} for the overlay with VNI {}; use that one",
                short(&other.docker_id),
                config.vni
            )));
        }
        let record = LocalNetwork { docker_id: req.network_id.clone(), config: config.clone() };
        let result = async {
            ov.put_network(&record).await?;
            state.networks.insert(record.docker_id.clone(), record.clone());
            ov.ensure_dataplane(&mut state, &config).await
        }
        .await;
        if let Err(e) = result {
            // Nothing of this request stays behind: kernel, private record, shared record.
            state.networks.remove(&record.docker_id);
            let _ = ov.delete_network_record(&record.docker_id).await;
            if let Err(cleanup) = ov.drop_dataplane(&mut state, &config.key, config.vni).await {
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
              outcome = ?outcome, "network ready");
        Ok(())
    }

    async fn delete_network_locked(&self, req: NetworkRef) -> PluginResult<()> {
        let ov = &self.0;
        let mut state = ov.state.lock().await;
        let Some(net) = state.networks.get(&req.network_id).cloned() else {
            if ov.config.mode == Mode::Global {
                // `docker network rm` ran on a host that never had a container on the network:
                // the store record is this host's to remove all the same.
                let shared = ov.shared()?;
                shared.delete_global(&req.network_id).await.map_err(store_error)?;
                state.deleted(&records::network_key(&req.network_id));
            }
            debug!(network = %short(&req.network_id), "no local state for the network");
            return Ok(());
        };
        let shared = ov.shared()?;
        match net.config.mode {
            Mode::Global => {
                shared.delete_global(&net.config.key).await.map_err(store_error)?;
                state.deleted(&records::network_key(&net.config.key));
            }
            Mode::Local => shared.leave_local(&net.config.key, &ov.host).await.map_err(store_error)?,
        }
        for ep in state.endpoints_of(&net.config.key) {
            let _ = ov.fabric.teardown_endpoint(state.dataplanes.get(&ep.network), &ep).await;
            let _ = ov.delete_endpoint_record(&ep).await;
            state.endpoints.remove(&ep.id);
        }
        ov.drop_dataplane(&mut state, &net.config.key, net.config.vni).await?;
        ov.delete_network_record(&net.docker_id).await?;
        state.networks.remove(&net.docker_id);
        info!(network = %short(&net.docker_id), vni = net.config.vni, "network removed");
        Ok(())
    }

    async fn create_endpoint_locked(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let ov = &self.0;
        let mut state = ov.state.lock().await;
        let net = match state.networks.get(&req.network_id).cloned() {
            Some(net) => net,
            None if ov.config.mode == Mode::Global => ov.adopt(&mut state, &req.network_id).await?,
            None => return Err(PluginError::unknown_network("loom-overlay", &req.network_id)),
        };
        let config = net.config.clone();
        let ipv4 = parse_address(&req.interface.address, config.subnet_v4, "IPv4")?;
        let ipv6 = parse_address(&req.interface.address_ipv6, config.subnet_v6, "IPv6")?;
        let mac_given = !req.interface.mac_address.is_empty();
        let record = match state.endpoints.get(&req.endpoint_id) {
            Some(existing) => existing.clone(),
            None => LocalEndpoint {
                id: req.endpoint_id.clone(),
                docker_network: net.docker_id.clone(),
                network: config.key.clone(),
                container_veth: names::derived("lov", &req.endpoint_id),
                bridge_veth: names::derived("ve", &req.endpoint_id),
                mac: if mac_given {
                    mac::format(&mac::parse(&req.interface.mac_address).map_err(PluginError::from)?)
                } else {
                    let v4 = match ipv4.map(|a| a.ip()) {
                        Some(IpAddr::V4(v4)) => Some(v4),
                        _ => None,
                    };
                    mac::format(&mac::for_endpoint(v4))
                },
                ipv4,
                ipv6,
                ports: Vec::new(),
                gateway_ip: None,
            },
        };
        ov.ensure_dataplane(&mut state, &config).await?;
        ov.put_endpoint(&record).await?;
        let dp =
            state.dataplanes.get(&config.key).ok_or_else(|| PluginError::new("the network's dataplane vanished"))?;
        if let Err(e) = ov.fabric.ensure_endpoint(dp, &config, &record).await {
            let _ = ov.fabric.teardown_endpoint(Some(dp), &record).await;
            let _ = ov.delete_endpoint_record(&record).await;
            return Err(PluginError::new(format!("{e:#}")));
        }
        ov.publish(&mut state, &record).await;
        state.endpoints.insert(record.id.clone(), record.clone());
        crate::sync::sync_network(ov, &state, &config.key).await;
        let interface =
            (!mac_given).then(|| EndpointInterface { mac_address: record.mac.clone(), ..Default::default() });
        debug!(endpoint = %short(&record.id), mac = %record.mac, veth = %record.container_veth, "endpoint ready");
        Ok(CreateEndpointResponse { interface })
    }
}

/// After Join, Docker gives the container its docker_gwbridge leg: once it is there, loom-overlay
/// programs the bridge (first container on the host) and the container's published ports.
async fn attach_gateway(ov: Arc<Overlay>, endpoint: String, sandbox: String) {
    let Some(gateway) = &ov.gateway else { return };
    let deadline = Instant::now() + Duration::from_secs(10);
    let address = loop {
        let found = match Gateway::policy(ov.fabric.netlink()).await {
            Ok(Some(policy)) => gateway::address_in_sandbox(&sandbox, &policy.subnets).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match found {
            Ok(Some(address)) => break address,
            Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(None) => {
                debug!(endpoint = %short(&endpoint), "no docker_gwbridge leg appeared; nothing to publish");
                return;
            }
            Err(e) => {
                debug!(endpoint = %short(&endpoint), "looking for the docker_gwbridge leg: {e:#}");
                return;
            }
        }
    };
    // The firewall is called without the state lock (a slow one holds up this task only).
    let _serial = ov.gateway_lock.lock().await;
    let policy = match gateway.ensure(ov.fabric.netlink()).await {
        Ok(policy) => policy,
        Err(e) => {
            warn!("programming docker_gwbridge: {e:#}");
            return;
        }
    };
    let ep = {
        let mut state = ov.state.lock().await;
        state.gateway_policy = policy.clone();
        state.endpoints.get(&endpoint).cloned()
    };
    let Some(mut ep) = ep else { return };
    let (Some(policy), false) = (policy, ep.ports.is_empty()) else { return };
    let mappings = gateway::mappings(&ep.ports, address);
    if let Err(e) = gateway.publish(&policy, &ep.id, &mappings).await {
        warn!(endpoint = %short(&ep.id), "publishing ports on docker_gwbridge: {e:#}");
        return;
    }
    info!(endpoint = %short(&ep.id), ports = ?mappings.iter().map(ToString::to_string).collect::<Vec<_>>(),
          "ports published on docker_gwbridge");
    let mut state = ov.state.lock().await;
    if !state.endpoints.contains_key(&endpoint) {
        // Deleted meanwhile: its DeleteEndpoint saw no ports to withdraw.
        drop(state);
        if let Err(e) = gateway.withdraw(&policy, &ep.id, &mappings).await {
            warn!(endpoint = %short(&ep.id), "withdrawing published ports: {e:#}");
        }
        return;
    }
    ep.gateway_ip = Some(address);
    if let Err(e) = ov.put_endpoint(&ep).await {
        warn!("{e}");
    }
    state.endpoints.insert(ep.id.clone(), ep);
}

/// The `NetworkDriver` the plugin server holds; the background tasks hold the same `Overlay`.
pub struct Driver(pub Arc<Overlay>);

/// An endpoint's address ("" means none), which must lie in the network's subnet.
fn parse_address(text: &str, subnet: Option<IpNetwork>, family: &str) -> PluginResult<Option<IpNetwork>> {
    let pools: Vec<Pool> = subnet.map(|subnet| Pool { subnet, gateway: None }).into_iter().collect();
    endpoint_address(text, &pools, family)
}

fn private_error(err: anyhow::Error) -> PluginError {
    PluginError::new(format!("private records: {err:#}"))
}

fn store_error(err: anyhow::Error) -> PluginError {
    PluginError::new(format!("{err:#}"))
}
