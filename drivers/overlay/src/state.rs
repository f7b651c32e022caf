//! What loom-overlay holds in memory: this host's records, its networks' kernel objects, the copy
//! of the shared store. Behind a plain mutex held only to read or update these maps, never
//! across a store, kernel or firewall call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use netloom_store::{KeyValue, Revision};

use crate::cache::Cache;
use crate::cluster::same_identity;
use crate::dns::Asker;
use crate::fabric::NetDataplane;
use crate::liveness::Absence;
use crate::records::{LocalEndpoint, LocalNetwork};
use crate::underlay::Underlay;

#[derive(Default)]
pub struct State {
    pub underlay: Option<Underlay>,
    /// Docker network id → record.
    pub networks: BTreeMap<String, LocalNetwork>,
    /// Endpoint id → record.
    pub endpoints: BTreeMap<String, LocalEndpoint>,
    /// Network key → kernel objects.
    pub dataplanes: BTreeMap<String, Arc<NetDataplane>>,
    pub cache: Cache,
    /// Hosts the store mentions without a lease record (see [`crate::liveness`]).
    pub absent: BTreeMap<String, Absence>,
    /// The last VTEP each host's lease record gave.
    pub vteps: BTreeMap<String, IpAddr>,
    /// `--peer-grace 0`: a host without a lease record is gone at once.
    pub gone_at_once: bool,
    /// Bumped on every change to `cache`, so that a list taken meanwhile is known to be stale.
    pub generation: u64,
    /// Global networks Docker did not list but kept for their attached containers (said once).
    pub kept_networks: BTreeSet<String>,
    /// docker_gwbridge's firewall policy as last programmed.
    pub gateway_policy: Option<netloom_firewall::NetworkPolicy>,
    /// Network key → the Docker network's name on this host, as Docker last said.
    pub docker_names: BTreeMap<String, String>,
    /// This host's containers that may ask for names, as Docker last said.
    pub docker_askers: Vec<Asker>,
    /// Endpoint id → its container as an asker, learnt at Join before Docker says (kept while
    /// the endpoint is).
    pub joined_askers: BTreeMap<String, Asker>,
}

impl State {
    /// Records this host's own successful write in the copy of the store.
    pub fn wrote(&mut self, key: String, value: Vec<u8>, revision: Revision) {
        self.cache.put(&KeyValue { key, value, revision });
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

    /// Whether the store's record under this host's network key describes another network (the
    /// key was reused while this host was away): such a record's peers are not programmed here,
    /// and this host's endpoints are not published into it.
    pub fn foreign(&self, key: &str) -> bool {
        let mine = self.network_by_key(key).map(|n| &n.config);
        let theirs = self.cache.networks.get(key).map(|(c, _)| c);
        mine.zip(theirs).is_some_and(|(mine, theirs)| !same_identity(mine, theirs))
    }

    pub fn endpoints_of(&self, key: &str) -> Vec<LocalEndpoint> {
        self.endpoints.values().filter(|e| e.network == key).cloned().collect()
    }

    pub fn dataplane(&self, key: &str) -> Option<Arc<NetDataplane>> {
        self.dataplanes.get(key).cloned()
    }
}
