//! The null driver: networks and endpoints are recorded, containers get no interface.
//!
//! The records concern this host only, so they are files in the state directory (under
//! `records/null/<host-id>/`, the layout every driver uses) rather than a database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use netloom_plugin_api::engine::{HeldEndpoint, HeldNetwork};
use netloom_plugin_api::ids::short_id;
use netloom_plugin_api::locks::{lock, KeyedLocks, Turn, LOCK_WAIT};
use netloom_plugin_api::wire::network::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef,
    JoinRequest, JoinResponse, NetworkRef, Scope,
};
use netloom_plugin_api::{NetworkDriver, PluginError, PluginResult, Settings};
use netloom_store::{DriverRecords, FileRecords, StoreUrl};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

/// The records' directory inside the state directory.
const RECORDS_DIR: &str = "records";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct NetworkRecord {
    id: String,
}

impl netloom_store::NetworkRecord for NetworkRecord {
    fn network_id(&self) -> &str {
        &self.id
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct EndpointRecord {
    network_id: String,
    id: String,
}

impl netloom_store::EndpointRecord for EndpointRecord {
    fn network_id(&self) -> &str {
        &self.network_id
    }

    fn endpoint_id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
struct State {
    networks: BTreeSet<String>,
    /// network id → endpoint ids
    endpoints: BTreeMap<String, BTreeSet<String>>,
}

pub struct NullDriver {
    records: DriverRecords<NetworkRecord, EndpointRecord>,
    /// Held only to read or update, never across a records call.
    state: Mutex<State>,
    /// One request at a time per network, for as long as its records calls take.
    turns: KeyedLocks,
}

impl NullDriver {
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let dir = settings.state_dir.join(RECORDS_DIR);
        if let Some(url) = &settings.store {
            StoreUrl::parse(url)?;
            info!(
                store = %url, records = %dir.display(),
                "loom-null has nothing to share across hosts: --store is not used, its records stay in the state directory"
            );
        }
        let files = FileRecords::open(&dir).context("opening loom-null's records")?;
        let records: DriverRecords<NetworkRecord, EndpointRecord> =
            DriverRecords::with_store(Arc::new(files), "null", &settings.host_id()?);
        let mut state = State { networks: records.networks().await?.into_keys().collect(), ..State::default() };
        for endpoint in records.endpoints().await?.into_values() {
            state.endpoints.entry(endpoint.network_id).or_default().insert(endpoint.id);
        }
        info!(networks = state.networks.len(), "state loaded");
        Ok(Self { records, state: Mutex::new(state), turns: KeyedLocks::default() })
    }

    async fn turn(&self, network_id: &str, doing: String) -> PluginResult<Turn> {
        let what = format!("loom-null network {}", short_id(network_id));
        self.turns.take(network_id, &what, doing, LOCK_WAIT).await
    }
}

#[async_trait]
impl NetworkDriver for NullDriver {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }

    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        let state = lock(&self.state);
        let endpoints_of = |id: &str| {
            let ids = state.endpoints.get(id).into_iter().flatten();
            ids.map(|id| HeldEndpoint { id: id.clone() }).collect()
        };
        let ids = state.networks.iter().chain(state.endpoints.keys()).collect::<BTreeSet<_>>();
        Some(
            ids.into_iter()
                .map(|id| HeldNetwork { id: id.clone(), global: false, endpoints: endpoints_of(id) })
                .collect(),
        )
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
        let _turn = self.turn(&req.network_id, "CreateNetwork".into()).await?;
        if lock(&self.state).networks.contains(&req.network_id) {
            return Ok(());
        }
        let record = NetworkRecord { id: req.network_id.clone() };
        self.records.put_network(&record).await.map_err(records_error)?;
        lock(&self.state).networks.insert(req.network_id);
        Ok(())
    }

    async fn delete_network(&self, req: NetworkRef) -> PluginResult<()> {
        let _turn = self.turn(&req.network_id, "DeleteNetwork".into()).await?;
        if let Some(endpoints) = lock(&self.state).endpoints.get(&req.network_id).filter(|eps| !eps.is_empty()) {
            return Err(PluginError::new(format!(
                "network {} still has {} endpoint(s); disconnect its containers first",
                req.network_id,
                endpoints.len()
            )));
        }
        self.records.delete_network(&req.network_id).await.map_err(records_error)?;
        let mut state = lock(&self.state);
        if !state.networks.remove(&req.network_id) {
            debug!(network = %req.network_id, "deleting a network this driver does not know; nothing to do");
        }
        state.endpoints.remove(&req.network_id);
        Ok(())
    }

    async fn create_endpoint(&self, req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        let _turn = self.turn(&req.network_id, format!("CreateEndpoint of {}", short_id(&req.endpoint_id))).await?;
        if !lock(&self.state).networks.contains(&req.network_id) {
            // Docker asks only for networks it created with this driver, and a null network is
            // nothing but its id: one recorded by an older loom-null (in a store it no longer
            // reads) or lost with the state directory is adopted, not refused.
            let record = NetworkRecord { id: req.network_id.clone() };
            self.records.put_network(&record).await.map_err(records_error)?;
            lock(&self.state).networks.insert(req.network_id.clone());
            info!(network = %short_id(&req.network_id), "adopted a network this driver had no record of");
        }
        let record = EndpointRecord { network_id: req.network_id.clone(), id: req.endpoint_id.clone() };
        self.records.put_endpoint(&record).await.map_err(records_error)?;
        lock(&self.state).endpoints.entry(req.network_id).or_default().insert(req.endpoint_id);
        Ok(CreateEndpointResponse::default())
    }

    async fn delete_endpoint(&self, req: EndpointRef) -> PluginResult<()> {
        let _turn = self.turn(&req.network_id, format!("DeleteEndpoint of {}", short_id(&req.endpoint_id))).await?;
        self.records.delete_endpoint(&req.network_id, &req.endpoint_id).await.map_err(records_error)?;
        if let Some(endpoints) = lock(&self.state).endpoints.get_mut(&req.network_id) {
            endpoints.remove(&req.endpoint_id);
        }
        Ok(())
    }

    async fn join(&self, req: JoinRequest) -> PluginResult<JoinResponse> {
        let known = lock(&self.state).endpoints.get(&req.network_id).is_some_and(|eps| eps.contains(&req.endpoint_id));
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

fn records_error(err: anyhow::Error) -> PluginError {
    PluginError::new(format!("loom-null records: {err:#}"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use netloom_plugin_api::engine::HeldEndpoint;
    use netloom_plugin_api::CommonArgs;
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn settings(state: &std::path::Path) -> Settings {
        let args = Args::parse_from(["loom-null", "--state-dir", state.to_str().unwrap(), "--docker-host", "none"]);
        args.common.settings("loom-null")
    }

    fn request<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    fn held(id: &str, endpoints: &[&str]) -> HeldNetwork {
        let endpoints = endpoints.iter().map(|id| HeldEndpoint { id: id.to_string() }).collect();
        HeldNetwork { id: id.into(), global: false, endpoints }
    }

    #[tokio::test]
    async fn what_is_held_is_released_by_the_handlers_and_stays_released_over_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let driver = NullDriver::open(&settings(dir.path())).await.unwrap();
        for id in ["n1", "n2"] {
            driver.create_network(request(json!({"NetworkID": id, "Options": {}}))).await.unwrap();
        }
        for (net, ep) in [("n1", "e1"), ("n1", "e2"), ("n3", "e3")] {
            let body = json!({"NetworkID": net, "EndpointID": ep, "Interface": {}, "Options": {}});
            driver.create_endpoint(request(body)).await.unwrap();
        }
        let all = vec![held("n1", &["e1", "e2"]), held("n2", &[]), held("n3", &["e3"])];
        assert_eq!(driver.held_networks().await, Some(all.clone()));
        drop(driver);
        let driver = NullDriver::open(&settings(dir.path())).await.unwrap();
        assert_eq!(driver.held_networks().await, Some(all), "held after a restart");

        // The order reconciliation releases in: endpoints, then their network.
        for (net, ep) in [("n1", "e1"), ("n1", "e2")] {
            let body = json!({"NetworkID": net, "EndpointID": ep});
            driver.leave(request(body.clone())).await.unwrap();
            driver.delete_endpoint(request(body)).await.unwrap();
        }
        driver.delete_network(request(json!({"NetworkID": "n1"}))).await.unwrap();
        let rest = vec![held("n2", &[]), held("n3", &["e3"])];
        assert_eq!(driver.held_networks().await, Some(rest.clone()));
        drop(driver);
        let driver = NullDriver::open(&settings(dir.path())).await.unwrap();
        assert_eq!(driver.held_networks().await, Some(rest), "released records stay released");
    }
}
