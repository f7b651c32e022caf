//! Where a driver keeps its own networks and endpoints: one JSON record per object, under
//! `<driver>/<host-id>/networks/<network-id>` and
//! `<driver>/<host-id>/endpoints/<network-id>/<endpoint-id>`, so that hosts sharing one store
//! never read each other's records.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::kv::{Store, StoreResult};

pub trait NetworkRecord: Serialize + DeserializeOwned {
    fn network_id(&self) -> &str;
}

pub trait EndpointRecord: Serialize + DeserializeOwned {
    fn network_id(&self) -> &str;
    fn endpoint_id(&self) -> &str;
}

/// All [`DriverRecords`] needs of a store, so that a driver with nothing to share across hosts
/// can keep its records without a database: `FileRecords`, or any
/// [`Store`].
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// Every key starting with `prefix` and its value, in key order.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>>;

    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<()>;

    /// Returns whether the key existed.
    async fn delete(&self, key: &str) -> StoreResult<bool>;
}

/// A [`Store`] seen as a [`RecordStore`].
struct InStore(Arc<dyn Store>);

#[async_trait]
impl RecordStore for InStore {
    async fn list(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        Ok(self.0.list(prefix).await?.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.0.put(key, value).await.map(|_| ())
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.0.delete(key).await
    }
}

pub struct DriverRecords<N, E> {
    store: Arc<dyn RecordStore>,
    prefix: String,
    _records: PhantomData<fn() -> (N, E)>,
}

impl<N: NetworkRecord, E: EndpointRecord> DriverRecords<N, E> {
    pub fn new(store: Arc<dyn Store>, driver: &str, host_id: &str) -> Self {
        Self::with_store(Arc::new(InStore(store)), driver, host_id)
    }

    pub fn with_store(store: Arc<dyn RecordStore>, driver: &str, host_id: &str) -> Self {
        Self { store, prefix: format!("{driver}/{host_id}/"), _records: PhantomData }
    }

    fn network_key(&self, id: &str) -> Result<String> {
        Ok(format!("{}networks/{}", self.prefix, one_segment("network", id)?))
    }

    fn endpoint_key(&self, network_id: &str, id: &str) -> Result<String> {
        Ok(format!("{}endpoints/{}/{}", self.prefix, one_segment("network", network_id)?, one_segment("endpoint", id)?))
    }

    /// Every stored network, by id.
    pub async fn networks(&self) -> Result<BTreeMap<String, N>> {
        let list: Vec<N> = self.load(&format!("{}networks/", self.prefix)).await?;
        Ok(list.into_iter().map(|n| (n.network_id().to_string(), n)).collect())
    }

    /// Every stored endpoint, by endpoint id.
    pub async fn endpoints(&self) -> Result<BTreeMap<String, E>> {
        let list: Vec<E> = self.load(&format!("{}endpoints/", self.prefix)).await?;
        Ok(list.into_iter().map(|e| (e.endpoint_id().to_string(), e)).collect())
    }

    async fn load<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        let records = self.store.list(prefix).await.with_context(|| format!("reading {prefix} from the store"))?;
        records
            .iter()
            .map(|(key, value)| serde_json::from_slice(value).with_context(|| format!("decoding stored {key}")))
            .collect()
    }

    pub async fn put_network(&self, record: &N) -> Result<()> {
        self.put(self.network_key(record.network_id())?, record).await
    }

    pub async fn delete_network(&self, id: &str) -> Result<()> {
        self.store.delete(&self.network_key(id)?).await.context("deleting a network record")?;
        Ok(())
    }

    pub async fn put_endpoint(&self, record: &E) -> Result<()> {
        self.put(self.endpoint_key(record.network_id(), record.endpoint_id())?, record).await
    }

    pub async fn delete_endpoint(&self, network_id: &str, id: &str) -> Result<()> {
        self.store.delete(&self.endpoint_key(network_id, id)?).await.context("deleting an endpoint record")?;
        Ok(())
    }

    async fn put<T: Serialize>(&self, key: String, record: &T) -> Result<()> {
        let value = serde_json::to_vec(record).context("encoding a record")?;
        self.store.put(&key, value).await.with_context(|| format!("writing {key} to the store"))?;
        Ok(())
    }
}
/// An id as one key segment: with a '/' two different ids could name one record.
fn one_segment<'a>(kind: &str, id: &'a str) -> Result<&'a str> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        anyhow::bail!("{kind} id {id:?} cannot name a record: use Docker's ids (letters and digits, no '/')");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::one_segment;

    #[test]
    fn ids_are_single_key_segments() {
        assert_eq!(one_segment("network", "3f2a9c").unwrap(), "3f2a9c");
        // "n1" + "x/y" and "n1/x" + "y" would otherwise name the same record.
        for bad in ["", ".", "..", "n1/x", "../../etc"] {
            let err = one_segment("network", bad).unwrap_err().to_string();
            assert!(err.contains("cannot name a record"), "{bad:?}: {err}");
        }
    }
}
