//! What loom-bridge persists: one record per network and per endpoint, written before a request
//! is answered, so that a restarted driver can rebuild the kernel's side from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use netloom_ipam::store::Store;
use netloom_plugin_api::host_ports::PublishedPort;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::options::BridgeOptions;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub bridge: String,
    pub options: BridgeOptions,
    pub subnet_v4: Option<IpNetwork>,
    /// With the pool's prefix length, as it goes on the bridge.
    pub gateway_v4: Option<IpNetwork>,
    pub subnet_v6: Option<IpNetwork>,
    pub gateway_v6: Option<IpNetwork>,
    pub internal: bool,
}

impl NetworkRecord {
    pub fn subnets(&self) -> Vec<IpNetwork> {
        self.subnet_v4.into_iter().chain(self.subnet_v6).collect()
    }

    /// The tag on every link and rule of this network.
    pub fn owner(&self) -> String {
        format!("netloom:bridge:{}", self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub id: String,
    pub host_veth: String,
    pub peer_veth: String,
    pub address_v4: Option<IpNetwork>,
    pub address_v6: Option<IpNetwork>,
    pub mac: String,
    /// Published ports as programmed (after ProgramExternalConnectivity).
    pub ports: Vec<PublishedPort>,
}

impl EndpointRecord {
    pub fn owner(&self) -> String {
        format!("netloom:bridge:{}:{}", self.network_id, self.id)
    }
}

/// The records of this host under `bridge/<host-id>/` in the store.
pub struct Records {
    store: Arc<dyn Store>,
    prefix: String,
}

impl Records {
    pub fn new(store: Arc<dyn Store>, host_id: &str) -> Self {
        Self { store, prefix: format!("bridge/{host_id}/") }
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
