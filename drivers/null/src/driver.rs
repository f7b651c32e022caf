//! The null driver: networks and endpoints are recorded, containers get no interface.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use async_trait::async_trait;
use std::sync::Arc;

use netloom_ipam::store::{self, Store, StoreError};
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef,
    JoinRequest, JoinResponse, NetworkRef, Scope,
};
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult, Settings};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, info};

const NETWORKS: &str = "null/networks/";
const ENDPOINTS: &str = "null/endpoints/";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct NetworkRecord {
    id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct EndpointRecord {
    network_id: String,
    id: String,
}

#[derive(Default)]
struct State {
    networks: BTreeSet<String>,
    /// network id → endpoint ids
    endpoints: BTreeMap<String, BTreeSet<String>>,
}

pub struct NullDriver {
    store: Arc<dyn Store>,
    state: Mutex<State>,
}

impl NullDriver {
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let store = store::open(settings.store.as_deref(), &settings.state_dir, store::DEFAULT_PREFIX)
            .await
            .context("opening the state store")?;
        let mut state = State::default();
        for kv in store.list(NETWORKS).await? {
            let record: NetworkRecord = serde_json::from_slice(&kv.value).context("decoding a stored network")?;
            state.networks.insert(record.id);
        }
        for kv in store.list(ENDPOINTS).await? {
            let record: EndpointRecord = serde_json::from_slice(&kv.value).context("decoding a stored endpoint")?;
            state.endpoints.entry(record.network_id).or_default().insert(record.id);
        }
        info!(networks = state.networks.len(), "state loaded");
        Ok(Self { store, state: Mutex::new(state) })
    }

    fn endpoint_key(network_id: &str, endpoint_id: &str) -> String {
        format!("{ENDPOINTS}{network_id}/{endpoint_id}")
    }
}

#[async_trait]
impl NetworkDriver for NullDriver {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }

    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        let options = req.options.generic();
        if !options.is_empty() {
            let keys: Vec<&str> = options.keys().map(String::as_str).collect();
            return Err(PluginError::new(format!(
                "loom-null takes no driver options, but got: {}; remove the -o flags",
                keys.join(", ")
            )));
        }
        let mut state = self.state.lock().await;
        if state.networks.contains(&req.network_id) {
            return Ok(());
        }
        let record = NetworkRecord { id: req.network_id.clone() };
        self.store.put(&format!("{NETWORKS}{}", req.network_id), to_json(&record)).await.map_err(store_error)?;
        state.networks.insert(req.network_id);
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let mut state = self.state.lock().await;
        if let Some(endpoints) = state.endpoints.get(&req.network_id) {
            if !endpoints.is_empty() {
                return Err(PluginError::new(format!(
                    "network {} still has {} endpoint(s); disconnect its containers first",
                    req.network_id,
                    endpoints.len()
                )));
            }
        }
        self.store.delete(&format!("{NETWORKS}{}", req.network_id)).await.map_err(store_error)?;
        if !state.networks.remove(&req.network_id) {
            debug!(network = %req.network_id, "deleting a network this driver does not know; nothing to do");
        }
        state.endpoints.remove(&req.network_id);
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let mut state = self.state.lock().await;
        if !state.networks.contains(&req.network_id) {
            return Err(PluginError::unknown_network("loom-null", &req.network_id));
        }
        let key = Self::endpoint_key(&req.network_id, &req.endpoint_id);
        let record = EndpointRecord { network_id: req.network_id.clone(), id: req.endpoint_id.clone() };
        self.store.put(&key, to_json(&record)).await.map_err(store_error)?;
        state.endpoints.entry(req.network_id).or_default().insert(req.endpoint_id);
        Ok(CreateEndpointResponse::default())
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let mut state = self.state.lock().await;
        self.store.delete(&Self::endpoint_key(&req.network_id, &req.endpoint_id)).await.map_err(store_error)?;
        if let Some(endpoints) = state.endpoints.get_mut(&req.network_id) {
            endpoints.remove(&req.endpoint_id);
        }
        Ok(())
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let state = self.state.lock().await;
        let known = state.endpoints.get(&req.network_id).is_some_and(|eps| eps.contains(&req.endpoint_id));
        if !known {
            return Err(PluginError::new(format!(
                "endpoint {} of network {} is not known to loom-null; recreate the container",
                req.endpoint_id, req.network_id
            )));
        }
        // No interface, and no docker_gwbridge either: the container keeps only its loopback.
        Ok(JoinResponse { disable_gateway_service: true, ..JoinResponse::default() })
    }

    async fn leave(&self, _req: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
}

fn store_error(err: StoreError) -> PluginError {
    PluginError::new(format!("loom-null state store: {err}"))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs of strings; serialising them cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}
