//! A driver's networks and endpoints: persisted per host before a request is answered, kept in
//! maps for lookups, and one turn per network so that requests on one network run one at a time
//! while other networks go on.
//!
//! The maps sit behind a plain mutex held only while reading or updating them, never across a
//! kernel, firewall or store call; the turns are what requests hold across those calls.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Result;
use ipnetwork::IpNetwork;
use netloom_plugin_api::addressing::{endpoint_address, short_id, Pool};
use netloom_plugin_api::engine::{HeldEndpoint, HeldNetwork};
use netloom_plugin_api::host_ports::{host_port_is_free, PortTable, PublishedPort};
use netloom_plugin_api::locks::{lock, KeyedLocks, Turn, LOCK_WAIT};
use netloom_plugin_api::wire::network::{CreateEndpointRequest, EndpointRef};
use netloom_plugin_api::wire::ports::PortBinding;
use netloom_plugin_api::{PluginError, PluginResult};
use netloom_store::DriverRecords;
use tracing::{debug, info, warn};

use crate::record::{Endpoint, Network};

/// The key every CreateNetwork takes besides its network's: name and overlap checks see
/// finished networks.
const CREATING: &str = "\0create-network";

pub struct Maps<N, E> {
    pub networks: BTreeMap<String, N>,
    pub endpoints: BTreeMap<String, E>,
    /// Host ports published by this driver's endpoints.
    pub ports: PortTable,
}

impl<N, E> Default for Maps<N, E> {
    fn default() -> Self {
        Self { networks: BTreeMap::new(), endpoints: BTreeMap::new(), ports: PortTable::default() }
    }
}

/// A copy of the networks and endpoints, for work that awaits (restore at start-up).
pub struct Snapshot<N, E> {
    pub networks: BTreeMap<String, N>,
    pub endpoints: BTreeMap<String, E>,
}

impl<N: Network, E: Endpoint> Snapshot<N, E> {
    /// The owner tags of every network and endpoint recorded: what the leftover sweep keeps.
    pub fn owners(&self) -> BTreeSet<String> {
        self.networks.values().map(Network::owner).chain(self.endpoints.values().map(Endpoint::owner)).collect()
    }

    /// The endpoints whose network is known, with it; the others are logged (they go when Docker
    /// deletes them).
    pub fn known_endpoints(&self) -> Vec<(&N, &E)> {
        let mut known = Vec::new();
        for ep in self.endpoints.values() {
            match self.networks.get(ep.network_id()) {
                Some(net) => known.push((net, ep)),
                None => warn!(
                    endpoint = %short_id(ep.endpoint_id()),
                    "endpoint of an unknown network; it will be removed when Docker deletes it"
                ),
            }
        }
        known
    }
}

/// What CreateEndpoint works with: see [`Registry::endpoint_to_create`].
pub struct NewEndpoint<N, E> {
    /// The network's turn, held until the endpoint is made.
    pub turn: Turn,
    pub net: N,
    pub existing: Option<E>,
    pub address_v4: Option<IpNetwork>,
    pub address_v6: Option<IpNetwork>,
}

pub struct Registry<N, E> {
    /// The driver's name in messages, e.g. `loom-bridge`.
    driver: &'static str,
    records: DriverRecords<N, E>,
    maps: Mutex<Maps<N, E>>,
    turns: KeyedLocks,
    /// How long a request waits for its network's turn.
    pub lock_wait: Duration,
}

impl<N: Network, E: Endpoint> Registry<N, E> {
    /// Reads the driver's records from the store.
    pub async fn load(driver: &'static str, records: DriverRecords<N, E>) -> Result<Self> {
        let mut maps =
            Maps { networks: records.networks().await?, endpoints: records.endpoints().await?, ..Maps::default() };
        for ep in maps.endpoints.values() {
            maps.ports.insert(ep.endpoint_id(), ep.ports().to_vec());
        }
        Ok(Self { driver, records, maps: Mutex::new(maps), turns: KeyedLocks::default(), lock_wait: LOCK_WAIT })
    }

    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// The maps, for reads and updates that the methods below do not cover; never hold the guard
    /// across an `.await`.
    pub fn maps(&self) -> MutexGuard<'_, Maps<N, E>> {
        lock(&self.maps)
    }

    pub fn snapshot(&self) -> Snapshot<N, E> {
        let maps = self.maps();
        Snapshot { networks: maps.networks.clone(), endpoints: maps.endpoints.clone() }
    }

    /// What this driver holds on this host, for reconciliation against Docker: every network
    /// made, with its endpoints, and endpoints whose network is not known (under their network's
    /// id, so that they are released too). Networks and endpoints still being made are not in the
    /// maps yet.
    pub fn held(&self) -> Vec<HeldNetwork> {
        held(&self.maps())
    }

    /// Waits for `network_id`'s turn (bounded; the error names the network and the holder).
    pub async fn turn(&self, network_id: &str, doing: String) -> PluginResult<Turn> {
        let what = format!("{} network {}", self.driver, short_id(network_id));
        self.turns.take(network_id, &what, doing, self.lock_wait).await
    }

    /// The turn every network creation takes before its network's.
    pub async fn creation_turn(&self, doing: String) -> PluginResult<Turn> {
        self.turn_on(CREATING, &format!("other {} network creations", self.driver), doing).await
    }

    /// Waits for the turn of a key of the driver's own; `what` names it in the error.
    pub async fn turn_on(&self, key: &str, what: &str, doing: String) -> PluginResult<Turn> {
        self.turns.take(key, what, doing, self.lock_wait).await
    }

    pub fn find_network(&self, network_id: &str) -> Option<N> {
        self.maps().networks.get(network_id).cloned()
    }

    /// The network, or the error telling the user it is unknown.
    pub fn network(&self, network_id: &str) -> PluginResult<N> {
        self.find_network(network_id).ok_or_else(|| PluginError::unknown_network(self.driver, network_id))
    }

    /// The network (which must be known) and the endpoint if it already exists (a retried request).
    pub fn network_and_endpoint(&self, network_id: &str, endpoint_id: &str) -> PluginResult<(N, Option<E>)> {
        let maps = self.maps();
        let net = maps
            .networks
            .get(network_id)
            .cloned()
            .ok_or_else(|| PluginError::unknown_network(self.driver, network_id))?;
        Ok((net, maps.endpoints.get(endpoint_id).cloned()))
    }

    /// The endpoint and its network, both of which must be known.
    pub fn endpoint_and_network(&self, endpoint_id: &str) -> PluginResult<(N, E)> {
        let maps = self.maps();
        let ep = maps
            .endpoints
            .get(endpoint_id)
            .cloned()
            .ok_or_else(|| PluginError::unknown_endpoint(self.driver, endpoint_id))?;
        let net = maps
            .networks
            .get(ep.network_id())
            .cloned()
            .ok_or_else(|| PluginError::unknown_network(self.driver, ep.network_id()))?;
        Ok((net, ep))
    }

    /// The endpoint, if known, with its network if that is known too (teardown works without it).
    pub fn endpoint_with_network(&self, endpoint_id: &str) -> Option<(Option<N>, E)> {
        let maps = self.maps();
        let ep = maps.endpoints.get(endpoint_id).cloned()?;
        Some((maps.networks.get(ep.network_id()).cloned(), ep))
    }

    /// What DeleteNetwork removes: the network, if known, with its endpoints (those Docker did
    /// not delete before the network). An unknown network is not an error: Docker retries.
    pub fn network_to_delete(&self, network_id: &str) -> Option<(N, Vec<E>)> {
        let maps = self.maps();
        let Some(net) = maps.networks.get(network_id).cloned() else {
            debug!(network = %network_id, "unknown network; nothing to delete");
            return None;
        };
        let endpoints = maps.endpoints.values().filter(|e| e.network_id() == network_id).cloned().collect();
        Some((net, endpoints))
    }

    /// Records a new network, makes it with `ensure` and, when that fails, undoes it with
    /// `rollback` and forgets the record. The network is visible to other requests only once made.
    pub async fn create_network(
        &self,
        record: &N,
        ensure: impl Future<Output = Result<()>>,
        rollback: impl Future<Output = Result<()>>,
    ) -> PluginResult<()> {
        self.records.put_network(record).await?;
        if let Err(e) = ensure.await {
            if let Err(cleanup) = rollback.await {
                warn!("rolling back network {}: {cleanup:#}", short_id(record.network_id()));
            }
            let _ = self.records.delete_network(record.network_id()).await;
            return Err(e.into());
        }
        self.maps().networks.insert(record.network_id().to_string(), record.clone());
        Ok(())
    }

    /// Stores the network record, then updates the map.
    pub async fn put_network(&self, record: N) -> Result<()> {
        self.records.put_network(&record).await?;
        self.maps().networks.insert(record.network_id().to_string(), record);
        Ok(())
    }

    /// Forgets the network: its record first, then the map.
    pub async fn remove_network(&self, network_id: &str) -> Result<()> {
        self.records.delete_network(network_id).await?;
        self.maps().networks.remove(network_id);
        info!(network = %short_id(network_id), "network removed");
        Ok(())
    }

    /// CreateEndpoint's start: the network's turn, the network (which must be known), the
    /// endpoint if the request is a retry, and the addresses Docker gave, checked against the
    /// network's IPv4 and IPv6 `pools`.
    pub async fn endpoint_to_create(
        &self,
        req: &CreateEndpointRequest,
        pools: impl FnOnce(&N) -> [Vec<Pool>; 2],
    ) -> PluginResult<NewEndpoint<N, E>> {
        let turn = self.turn(&req.network_id, format!("CreateEndpoint of {}", short_id(&req.endpoint_id))).await?;
        let (net, existing) = self.network_and_endpoint(&req.network_id, &req.endpoint_id)?;
        let [pools_v4, pools_v6] = pools(&net);
        let address_v4 = endpoint_address(&req.interface.address, &pools_v4, "IPv4")?;
        let address_v6 = endpoint_address(&req.interface.address_ipv6, &pools_v6, "IPv6")?;
        Ok(NewEndpoint { turn, net, existing, address_v4, address_v6 })
    }

    /// DeleteEndpoint: `teardown` takes the endpoint off the host (given its network when that is
    /// known), then it is forgotten; an unknown endpoint is not an error (Docker retries).
    pub async fn delete_endpoint<F, Fut>(&self, req: &EndpointRef, teardown: F) -> PluginResult<()>
    where
        F: FnOnce(Option<N>, E) -> Fut,
        Fut: Future<Output = Result<E>>,
    {
        let _turn = self.turn(&req.network_id, format!("DeleteEndpoint of {}", short_id(&req.endpoint_id))).await?;
        let Some((net, ep)) = self.endpoint_with_network(&req.endpoint_id) else {
            return Ok(());
        };
        let ep = teardown(net, ep).await?;
        self.remove_endpoint(&ep).await?;
        Ok(())
    }

    /// Records a new (or retried) endpoint while `ensure` makes it; when either fails, undoes it
    /// with `rollback` and forgets the record. The two run side by side (the store's commit waits
    /// on the disk, `ensure` on the kernel); a crash between them leaves a record whose objects
    /// the restore makes, or objects tagged as the driver's without a record, which the start-up
    /// sweep removes (a veth pair made but not yet tagged stays, as it did with the record first).
    pub async fn create_endpoint(
        &self,
        record: &E,
        ensure: impl Future<Output = Result<()>>,
        rollback: impl Future<Output = Result<()>>,
    ) -> PluginResult<()> {
        let (made, stored) = tokio::join!(ensure, self.records.put_endpoint(record));
        if let Err(e) = made.and(stored) {
            if let Err(cleanup) = rollback.await {
                warn!("rolling back endpoint {}: {cleanup:#}", short_id(record.endpoint_id()));
            }
            let _ = self.records.delete_endpoint(record.network_id(), record.endpoint_id()).await;
            return Err(e.into());
        }
        self.maps().endpoints.insert(record.endpoint_id().to_string(), record.clone());
        Ok(())
    }

    /// Stores the endpoint record, then updates the maps (its published ports included).
    pub async fn put_endpoint(&self, record: E) -> Result<()> {
        self.records.put_endpoint(&record).await?;
        let mut maps = self.maps();
        maps.ports.insert(record.endpoint_id(), record.ports().to_vec());
        maps.endpoints.insert(record.endpoint_id().to_string(), record);
        Ok(())
    }

    /// Forgets the endpoint: its record first, then the maps.
    pub async fn remove_endpoint(&self, record: &E) -> Result<()> {
        self.records.delete_endpoint(record.network_id(), record.endpoint_id()).await?;
        let mut maps = self.maps();
        maps.endpoints.remove(record.endpoint_id());
        maps.ports.remove(record.endpoint_id());
        Ok(())
    }

    /// Tears down and forgets each endpoint in turn, stopping at the first failure (the request
    /// fails and Docker retries it).
    pub async fn remove_endpoints<F, Fut>(&self, endpoints: Vec<E>, teardown: F) -> Result<()>
    where
        F: Fn(E) -> Fut,
        Fut: Future<Output = Result<E>>,
    {
        for ep in endpoints {
            let ep = teardown(ep).await?;
            self.remove_endpoint(&ep).await?;
        }
        Ok(())
    }

    /// Resolves Docker's port bindings for the endpoint and reserves the host ports in one go, so
    /// that a request on another network cannot take the same ones while the firewall is being
    /// programmed. Returns the network, the endpoint as recorded and its new ports.
    pub fn reserve_ports(
        &self,
        endpoint_id: &str,
        bindings: &[PortBinding],
        default_host_ipv4: impl Fn(&N) -> Option<Ipv4Addr>,
    ) -> PluginResult<(N, E, Vec<PublishedPort>)> {
        let (net, ep) = self.endpoint_and_network(endpoint_id)?;
        if net.internal() && !bindings.is_empty() {
            return Err(PluginError::new("an --internal network cannot publish ports"));
        }
        let mut maps = self.maps();
        let ports = maps
            .ports
            .resolve(
                endpoint_id,
                bindings,
                ep.address_v4().map(|a| a.ip()),
                ep.address_v6().map(|a| a.ip()),
                default_host_ipv4(&net),
                &host_port_is_free,
            )
            .map_err(PluginError::from)?;
        maps.ports.insert(endpoint_id, ports.clone());
        Ok((net, ep, ports))
    }
}

fn held<N: Network, E: Endpoint>(maps: &Maps<N, E>) -> Vec<HeldNetwork> {
    let mut held: BTreeMap<&str, Vec<HeldEndpoint>> =
        maps.networks.keys().map(|id| (id.as_str(), Vec::new())).collect();
    for ep in maps.endpoints.values() {
        held.entry(ep.network_id()).or_default().push(HeldEndpoint { id: ep.endpoint_id().to_string() });
    }
    held.into_iter().map(|(id, endpoints)| HeldNetwork { id: id.to_string(), global: false, endpoints }).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Clone, Serialize, Deserialize)]
    struct Net {
        id: String,
        internal: bool,
    }

    #[derive(Clone, Serialize, Deserialize)]
    struct Ep {
        network_id: String,
        id: String,
        address_v4: Option<IpNetwork>,
        address_v6: Option<IpNetwork>,
    }

    crate::driver_records!(network Net, endpoint Ep, owner "test:");

    fn ep(network_id: &str, id: &str) -> (String, Ep) {
        (id.into(), Ep { network_id: network_id.into(), id: id.into(), address_v4: None, address_v6: None })
    }

    /// Records in memory; with `refuse_puts`, every write fails as a full disk would.
    #[derive(Default)]
    struct MemoryRecords {
        keys: Mutex<BTreeMap<String, Vec<u8>>>,
        refuse_puts: bool,
    }

    #[async_trait::async_trait]
    impl netloom_store::RecordStore for MemoryRecords {
        async fn list(&self, prefix: &str) -> netloom_store::StoreResult<Vec<(String, Vec<u8>)>> {
            let keys = self.keys.lock().unwrap();
            Ok(keys.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> netloom_store::StoreResult<()> {
            if self.refuse_puts {
                return Err(netloom_store::StoreError::Files { path: key.into(), detail: "disk full".into() });
            }
            self.keys.lock().unwrap().insert(key.into(), value);
            Ok(())
        }
        async fn delete(&self, key: &str) -> netloom_store::StoreResult<bool> {
            Ok(self.keys.lock().unwrap().remove(key).is_some())
        }
    }

    /// A registry over `store`, and what `create_endpoint` did with one endpoint whose kernel
    /// objects `ensure` makes (or fails to): the call's result, whether the rollback ran.
    async fn create_one(store: Arc<MemoryRecords>, ensure_fails: bool) -> (Registry<Net, Ep>, PluginResult<()>, bool) {
        let registry = Registry::load("test", DriverRecords::with_store(store, "test", "host")).await.unwrap();
        let (_, record) = ep("n1", "e1");
        let rolled_back = std::sync::atomic::AtomicBool::new(false);
        let ensure = async {
            tokio::task::yield_now().await;
            if ensure_fails {
                anyhow::bail!("veth pair refused");
            }
            Ok(())
        };
        let rollback = async {
            rolled_back.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        };
        let result = registry.create_endpoint(&record, ensure, rollback).await;
        (registry, result, rolled_back.into_inner())
    }

    #[tokio::test]
    async fn a_created_endpoint_is_stored_and_known() {
        let store = Arc::new(MemoryRecords::default());
        let (registry, result, rolled_back) = create_one(store.clone(), false).await;
        assert!(result.is_ok());
        assert!(!rolled_back);
        assert!(registry.maps().endpoints.contains_key("e1"));
        assert_eq!(store.keys.lock().unwrap().keys().collect::<Vec<_>>(), ["test/host/endpoints/n1/e1"]);
    }

    #[tokio::test]
    async fn an_endpoint_the_kernel_refuses_is_rolled_back_and_forgotten() {
        let store = Arc::new(MemoryRecords::default());
        let (registry, result, rolled_back) = create_one(store.clone(), true).await;
        assert!(format!("{:?}", result.unwrap_err()).contains("veth pair refused"));
        assert!(rolled_back);
        assert!(registry.maps().endpoints.is_empty());
        assert!(store.keys.lock().unwrap().is_empty(), "the record written side by side is deleted again");
    }

    #[tokio::test]
    async fn an_endpoint_the_store_refuses_is_rolled_back_in_the_kernel() {
        let store = Arc::new(MemoryRecords { refuse_puts: true, ..MemoryRecords::default() });
        let (registry, result, rolled_back) = create_one(store, false).await;
        assert!(format!("{:?}", result.unwrap_err()).contains("disk full"));
        assert!(rolled_back, "the kernel objects made side by side are removed");
        assert!(registry.maps().endpoints.is_empty());
    }

    #[test]
    fn every_network_and_endpoint_is_held_with_orphaned_endpoints_under_their_network() {
        let maps = Maps {
            networks: ["n1", "n2"].map(|id| (id.to_string(), Net { id: id.into(), internal: false })).into(),
            endpoints: [ep("n1", "e1"), ep("n1", "e2"), ep("gone", "e3")].into(),
            ports: PortTable::default(),
        };
        let held_endpoints = |ids: &[&str]| ids.iter().map(|id| HeldEndpoint { id: id.to_string() }).collect();
        assert_eq!(
            held(&maps),
            [
                HeldNetwork { id: "gone".into(), global: false, endpoints: held_endpoints(&["e3"]) },
                HeldNetwork { id: "n1".into(), global: false, endpoints: held_endpoints(&["e1", "e2"]) },
                HeldNetwork { id: "n2".into(), global: false, endpoints: Vec::new() },
            ]
        );
        assert!(held(&Maps::<Net, Ep>::default()).is_empty());
    }
}
