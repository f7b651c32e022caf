//! What loom-host persists under `host/<host-id>/` in the store: one record per network and per
//! endpoint, written before a request is answered, so that a restarted driver can restore routes
//! and tell its own leftovers apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use netloom_ipam::store::Store;
use netloom_plugin_api::addressing::Pool;
use netloom_plugin_api::host_ports::PublishedPort;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::options::HostOptions;

/// Prefix of every owner tag (link alias) of this driver.
pub const OWNER_PREFIX: &str = "netloom:host:";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub options: HostOptions,
    pub pools_v4: Vec<Pool>,
    pub pools_v6: Vec<Pool>,
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub id: String,
    /// The end that stays on the host and carries the routes.
    pub host_veth: String,
    /// The end Docker moves into the container.
    pub peer_veth: String,
    pub address_v4: Option<IpNetwork>,
    pub address_v6: Option<IpNetwork>,
    pub mac: String,
    /// Between Join and Leave: the host routes the addresses to the veth.
    pub joined: bool,
    /// Published ports as programmed (after ProgramExternalConnectivity).
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
}

impl EndpointRecord {
    pub fn owner(&self) -> String {
        format!("{OWNER_PREFIX}{}:{}", self.network_id, self.id)
    }

    /// The endpoint's addresses as host routes (/32, /128).
    pub fn host_routes(&self) -> Vec<IpNetwork> {
        [self.address_v4, self.address_v6].into_iter().flatten().map(|a| IpNetwork::from(a.ip())).collect()
    }
}

/// The records of this host under `host/<host-id>/` in the store.
pub struct Records {
    store: Arc<dyn Store>,
    prefix: String,
}

impl Records {
    pub fn new(store: Arc<dyn Store>, host_id: &str) -> Self {
        Self { store, prefix: format!("host/{host_id}/") }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routes_are_single_addresses() {
        let ep = EndpointRecord {
            network_id: "n".into(),
            id: "e".into(),
            host_veth: "lhe".into(),
            peer_veth: "lpe".into(),
            address_v4: Some("10.1.2.3/24".parse().unwrap()),
            address_v6: Some("fd00::3/64".parse().unwrap()),
            mac: String::new(),
            joined: false,
            ports: Vec::new(),
        };
        let routes: Vec<String> = ep.host_routes().iter().map(|r| r.to_string()).collect();
        assert_eq!(routes, ["10.1.2.3/32", "fd00::3/128"]);
        assert_eq!(ep.owner(), "netloom:host:n:e");
    }
}
