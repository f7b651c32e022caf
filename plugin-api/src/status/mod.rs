//! netloom's own calls on every plugin socket, next to Docker's: `Netloom.Status` (what the
//! process is and holds), `Netloom.Inspect` (everything a driver holds for one network) and any
//! other `Netloom.<Call>`, handed to the driver's `control`. dockerd never calls them; `loomctl`
//! does.
//!
//! Every answer is bounded: a driver or store that does not answer in time is reported as such
//! instead of holding the caller.

mod client;
mod reply;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{PluginError, PluginResult};
use crate::server::Plugin;

pub use client::{ask_control, ask_inspect, ask_status, sockets_in};
pub use reply::{NetworkStatus, StatusReply, StoreStatus};

pub const STATUS: &str = "Netloom.Status";
pub const INSPECT: &str = "Netloom.Inspect";
/// The subsystem of netloom's own calls.
pub const SUBSYSTEM: &str = "Netloom";

/// How long one store may take to answer the health read.
const STORE_CHECK_LIMIT: Duration = Duration::from_millis(1500);
/// How long a driver may take to say what it holds or its details.
const DRIVER_LIMIT: Duration = Duration::from_secs(2);

/// The binary's name, Docker's name for the driver, and when it started.
struct Process {
    name: String,
    docker_driver_name: String,
    since: Instant,
}

static STARTED: OnceLock<Process> = OnceLock::new();

/// Records the binary's name, the name Docker's networks give the driver (a managed plugin's is
/// `netloom/loom-bridge:latest`) and the start; the status call reports them.
pub fn started(name: &str, docker_driver_name: &str) {
    let _ = STARTED.set(Process {
        name: name.to_string(),
        docker_driver_name: docker_driver_name.to_string(),
        since: Instant::now(),
    });
}

fn process() -> &'static Process {
    STARTED.get_or_init(|| Process { name: String::new(), docker_driver_name: String::new(), since: Instant::now() })
}

/// `Netloom.Status`.
pub async fn status(plugin: &Plugin) -> StatusReply {
    let process = process();
    let (mut networks, mut details) = tokio::join!(networks(plugin), details(plugin));
    let firewall = take_string(&mut details, "firewall");
    fill_in(&mut networks, &details);
    let stores: Vec<StoreStatus> =
        netloom_store::check_all(STORE_CHECK_LIMIT).await.into_iter().map(StoreStatus::from).collect();
    StatusReply {
        name: process.name.clone(),
        docker_driver_name: process.docker_driver_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_seconds: process.since.elapsed().as_secs(),
        firewall,
        store: StoreStatus::primary(&stores),
        stores,
        networks,
        details,
    }
}

/// What the network driver holds (endpoints) and claims (subnets, its own name for it), by network.
async fn networks(plugin: &Plugin) -> Vec<NetworkStatus> {
    let Some(driver) = &plugin.network else { return Vec::new() };
    let held = tokio::time::timeout(DRIVER_LIMIT, driver.held_networks()).await.ok().flatten().unwrap_or_default();
    let mut by_id: BTreeMap<String, NetworkStatus> = BTreeMap::new();
    for network in held {
        let entry = by_id.entry(network.id.clone()).or_insert_with(|| NetworkStatus::new(&network.id));
        entry.endpoints = network.endpoints.len();
        entry.endpoint_ids = network.endpoints.into_iter().map(|e| e.id).collect();
        entry.global = network.global;
    }
    for claim in driver.claimed_subnets() {
        let entry = by_id.entry(claim.network_id.clone()).or_insert_with(|| NetworkStatus::new(&claim.network_id));
        entry.local_name = claim.detail;
        entry.subnets = claim.subnets.iter().map(ToString::to_string).collect();
    }
    by_id.into_values().collect()
}

/// Subnets and local names a driver that claims no subnets says in its details' `networks`.
fn fill_in(networks: &mut [NetworkStatus], details: &Value) {
    let Some(Value::Array(described)) = details.get("networks") else { return };
    for network in networks.iter_mut() {
        let Some(found) = described.iter().find(|d| d["id"] == network.id.as_str()) else { continue };
        if network.subnets.is_empty() {
            let subnets = found["subnets"].as_array().into_iter().flatten().filter_map(Value::as_str);
            network.subnets = subnets.map(str::to_string).collect();
        }
        if network.local_name.is_empty() {
            network.local_name = found["local_name"].as_str().unwrap_or_default().to_string();
        }
    }
}

async fn details(plugin: &Plugin) -> Value {
    let network = async {
        match &plugin.network {
            Some(driver) => Some(bounded(driver.status_details()).await),
            None => None,
        }
    };
    let ipam = async {
        match &plugin.ipam {
            Some(driver) => Some(bounded(driver.status_details()).await),
            None => None,
        }
    };
    match tokio::join!(network, ipam) {
        (Some(network), None) => network,
        (None, Some(ipam)) => ipam,
        (Some(network), Some(ipam)) => json!({ "network": network, "ipam": ipam }),
        (None, None) => Value::Null,
    }
}

async fn bounded(details: impl std::future::Future<Output = Value>) -> Value {
    tokio::time::timeout(DRIVER_LIMIT, details)
        .await
        .unwrap_or_else(|_| json!({ "error": format!("the driver did not say its details within {DRIVER_LIMIT:?}") }))
}

/// Moves a string field out of a details object (the firewall backend is shown on its own).
fn take_string(details: &mut Value, key: &str) -> Option<String> {
    let object = details.as_object_mut()?;
    match object.remove(key)? {
        Value::String(s) => Some(s),
        other => {
            object.insert(key.to_string(), other);
            None
        }
    }
}

#[derive(Deserialize)]
struct InspectRequest {
    #[serde(rename = "Network")]
    network: String,
}

/// `Netloom.Inspect {"Network": id}`: the id may be shortened, as long as it names one network
/// this driver holds.
pub async fn inspect(plugin: &Plugin, body: &[u8]) -> PluginResult<Value> {
    let Some(driver) = &plugin.network else { return Err(PluginError::unknown_method(INSPECT)) };
    let request: InspectRequest = serde_json::from_slice(body)
        .map_err(|e| PluginError::new(format!("invalid {INSPECT} request (want {{\"Network\": id}}): {e}")))?;
    let held = tokio::time::timeout(DRIVER_LIMIT, driver.held_networks()).await.ok().flatten().unwrap_or_default();
    let ids: Vec<String> = held.into_iter().map(|n| n.id).collect();
    let id = resolve(&ids, &request.network)?;
    let mut details = tokio::time::timeout(DRIVER_LIMIT, driver.inspect_network(&id))
        .await
        .map_err(|_| PluginError::new(format!("the driver did not describe network {id} within {DRIVER_LIMIT:?}")))??;
    if let Some(object) = details.as_object_mut() {
        object.insert("id".to_string(), Value::String(id));
    }
    Ok(details)
}

/// The one id of `held` that is `wanted` or starts with it; an unknown id is passed on as given
/// (the driver may know more than it holds, e.g. a network it is still removing).
fn resolve(held: &[String], wanted: &str) -> PluginResult<String> {
    if wanted.is_empty() {
        return Err(PluginError::new(format!("{INSPECT} needs a network id")));
    }
    if held.iter().any(|id| id == wanted) {
        return Ok(wanted.to_string());
    }
    let matching: Vec<&String> = held.iter().filter(|id| id.starts_with(wanted)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Ok(wanted.to_string()),
        many => {
            Err(PluginError::new(format!("{wanted} names {} networks of this driver; give more of the id", many.len())))
        }
    }
}

/// Any other `Netloom.<Call>`: the driver's own.
pub async fn control(plugin: &Plugin, method: &str, body: &[u8]) -> PluginResult<Value> {
    let Some(driver) = &plugin.network else { return Err(PluginError::unknown_method(method)) };
    let call = method.strip_prefix("Netloom.").unwrap_or(method);
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| PluginError::new(format!("invalid {method} request: {e}")))?
    };
    driver.control(call, body).await
}

#[cfg(test)]
mod tests;
