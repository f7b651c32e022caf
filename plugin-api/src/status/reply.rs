//! What `Netloom.Status` answers, shared by the drivers (which serve it) and `loomctl` (which
//! reads it).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The binary's name, e.g. `loom-bridge`.
    pub name: String,
    /// Docker's name for the driver: the socket's name, or a managed plugin's
    /// `netloom/loom-bridge:latest`.
    #[serde(default)]
    pub docker_driver_name: String,
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    /// The firewall backend in use (`nftables`, `iptables`), for drivers that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<String>,
    /// The store that matters most: the first that does not answer, else the shared one.
    #[serde(default)]
    pub store: Option<StoreStatus>,
    /// Every store the process holds open.
    #[serde(default)]
    pub stores: Vec<StoreStatus>,
    #[serde(default)]
    pub networks: Vec<NetworkStatus>,
    /// The driver's own facts (overlay peers, IPAM pools, ...).
    #[serde(default)]
    pub details: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Docker's network id.
    pub id: String,
    /// What the driver calls it on the host, e.g. `bridge web0`.
    #[serde(default)]
    pub local_name: String,
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Endpoints on this host.
    #[serde(default)]
    pub endpoints: usize,
    /// Their ids, for judging leftovers against Docker.
    #[serde(default)]
    pub endpoint_ids: Vec<String>,
    /// A cluster-store network (Docker 20.10): Docker's list on this host is not the whole story.
    #[serde(default)]
    pub global: bool,
}

impl NetworkStatus {
    pub fn new(id: &str) -> Self {
        Self { id: id.to_string(), ..Self::default() }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// `etcd://h:2379`, `consul://h:8500` or `embedded:<file>`: store URLs hold no credentials.
    pub url: String,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last operation that failed, however long ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_seconds_ago: Option<u64>,
}

impl From<netloom_store::StoreHealth> for StoreStatus {
    fn from(health: netloom_store::StoreHealth) -> Self {
        let (ago, last) = health.last_error.unzip();
        StoreStatus {
            url: health.store,
            healthy: health.healthy,
            error: health.error,
            last_error: last,
            last_error_seconds_ago: ago,
        }
    }
}

impl StoreStatus {
    pub fn is_embedded(&self) -> bool {
        self.url.starts_with("embedded:")
    }

    /// The first store that does not answer, else the first shared one, else the first.
    pub fn primary(stores: &[StoreStatus]) -> Option<StoreStatus> {
        stores
            .iter()
            .find(|s| !s.healthy)
            .or_else(|| stores.iter().find(|s| !s.is_embedded()))
            .or_else(|| stores.first())
            .cloned()
    }
}
