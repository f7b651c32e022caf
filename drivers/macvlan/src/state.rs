//! What loom-macvlan persists under `macvlan/<host-id>/` in the store: one record per network and
//! per endpoint, written before a request is answered, so that a restarted driver can rebuild the
//! kernel's side and tell its own leftovers apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use netloom_ipam::store::Store;
use netloom_plugin_api::addressing::Pool;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::options::Mode;

/// Prefix of every owner tag (link alias) of this driver.
pub const OWNER_PREFIX: &str = "netloom:macvlan:";

/// Where a network's macvlan links sit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Parent {
    /// An interface the driver did not make: it is never changed or removed.
    Existing { name: String },
    /// An 802.1q sub-interface made by loom-macvlan; shared by every network naming it, removed
    /// with the last of them.
    Vlan { name: String, base: String, id: u16 },
    /// No `parent=`: a veth pair of the network's own with nothing behind it, so its containers
    /// reach only each other.
    Isolated { name: String, peer: String },
}

impl Parent {
    pub fn name(&self) -> &str {
        match self {
            Parent::Existing { name } | Parent::Vlan { name, .. } | Parent::Isolated { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub parent: Parent,
    pub mode: Mode,
    pub mtu: Option<u32>,
    pub pools_v4: Vec<Pool>,
    pub pools_v6: Vec<Pool>,
    pub internal: bool,
}

impl NetworkRecord {
    pub fn owner(&self) -> String {
        format!("{OWNER_PREFIX}{}", self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub id: String,
    /// The macvlan's name in the host namespace (Docker renames it inside the container).
    pub link: String,
    pub address_v4: Option<IpNetwork>,
    pub address_v6: Option<IpNetwork>,
    pub mac: String,
}

impl EndpointRecord {
    pub fn owner(&self) -> String {
        format!("{OWNER_PREFIX}{}:{}", self.network_id, self.id)
    }
}

/// The records of this host under `macvlan/<host-id>/` in the store.
pub struct Records {
    store: Arc<dyn Store>,
    prefix: String,
}

impl Records {
    pub fn new(store: Arc<dyn Store>, host_id: &str) -> Self {
        Self { store, prefix: format!("macvlan/{host_id}/") }
    }

    fn network_key(&self, id: &str) -> String {
        format!("{}networks/{id}", self.prefix)
    }

    fn endpoint_key(&self, network_id: &str, id: &str) -> String {
        format!("{}endpoints/{network_id}/{id}", self.prefix)
    }

    pub async fn networks(&self) -> Result<BTreeMap<String, NetworkRecord>> {
        let list: Vec<NetworkRecord> = self.load(&format!("{}networks/", self.prefix)).await?;
        Ok(list.into_iter().map(|n| (n.id.clone(), n)).collect())
    }

    pub async fn endpoints(&self) -> Result<BTreeMap<String, EndpointRecord>> {
        let list: Vec<EndpointRecord> = self.load(&format!("{}endpoints/", self.prefix)).await?;
        Ok(list.into_iter().map(|e| (e.id.clone(), e)).collect())
    }

    async fn load<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        let kvs = self.store.list(prefix).await.with_context(|| format!("reading {prefix} from the store"))?;
        kvs.iter()
            .map(|kv| serde_json::from_slice(&kv.value).with_context(|| format!("decoding stored {}", kv.key)))
            .collect()
    }

    pub async fn put_network(&self, record: &NetworkRecord) -> Result<()> {
        self.put(self.network_key(&record.id), record).await
    }

    pub async fn delete_network(&self, id: &str) -> Result<()> {
        self.store.delete(&self.network_key(id)).await.context("deleting a network record")?;
        Ok(())
    }

    pub async fn put_endpoint(&self, record: &EndpointRecord) -> Result<()> {
        self.put(self.endpoint_key(&record.network_id, &record.id), record).await
    }

    pub async fn delete_endpoint(&self, network_id: &str, id: &str) -> Result<()> {
        self.store.delete(&self.endpoint_key(network_id, id)).await.context("deleting an endpoint record")?;
        Ok(())
    }

    async fn put<T: Serialize>(&self, key: String, record: &T) -> Result<()> {
        let value = serde_json::to_vec(record).context("encoding a record")?;
        self.store.put(&key, value).await.with_context(|| format!("writing {key} to the store"))?;
        Ok(())
    }
}
