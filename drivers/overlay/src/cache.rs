//! This host's copy of the shared store's `overlay/` keys, filled by one list and kept current by
//! a watch. It only ever changes on what the store said: while the store is unreachable it keeps
//! the last state, so nothing in the kernel is removed for want of an answer.
//!
//! Every entry keeps the revision it was written at, and a change older than what the copy holds
//! is ignored: watch events that a later list already contains, or that report this host's own
//! writes (recorded here as soon as they succeed), can't turn the copy back.

use std::collections::{BTreeMap, BTreeSet};

use netloom_store::{KeyValue, Revision, Store, StoreResult, WatchEvent};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::records::{self, HostRecord, NameRecord, NetworkConfig, PeerRecord, HOSTS, NAMES, NETWORKS, PEERS, ROOT};

#[derive(Debug, Default)]
pub struct Cache {
    /// False until the first successful list: the kernel is not touched before.
    pub loaded: bool,
    pub hosts: BTreeMap<String, (HostRecord, Revision)>,
    pub networks: BTreeMap<String, (NetworkConfig, Revision)>,
    /// network key → endpoint id → record.
    pub peers: Tables<PeerRecord>,
    /// The containers' names (local scope), like `peers`.
    pub names: Tables<NameRecord>,
}

/// What a change touches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Affected {
    /// A host came or went: every network.
    pub all: bool,
    pub networks: BTreeSet<String>,
}

impl Affected {
    pub fn merge(&mut self, other: Affected) {
        self.all |= other.all;
        self.networks.extend(other.networks);
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.networks.is_empty()
    }
}

impl Cache {
    /// Reads every `overlay/` key in one consistent list.
    pub async fn load(store: &dyn Store) -> StoreResult<Cache> {
        let kvs = store.list(ROOT).await?;
        let mut cache = Cache { loaded: true, ..Cache::default() };
        for kv in kvs {
            cache.put(&kv);
        }
        Ok(cache)
    }

    pub fn apply(&mut self, event: &WatchEvent) -> Affected {
        match event {
            WatchEvent::Put(kv) => self.put(kv),
            WatchEvent::Delete { key, revision } => self.delete(key, *revision),
        }
    }

    /// Records a write (from a list, a watch event, or this host's own successful write).
    pub fn put(&mut self, kv: &KeyValue) -> Affected {
        let mut affected = Affected::default();
        if let Some(host) = kv.key.strip_prefix(HOSTS) {
            if newer(self.hosts.get(host).map(|(_, r)| *r), kv.revision) {
                match records::decode::<HostRecord>(&kv.key, &kv.value) {
                    Ok(record) => {
                        affected.all = self.hosts.get(host).map(|(h, _)| h) != Some(&record);
                        self.hosts.insert(host.to_string(), (record, kv.revision));
                    }
                    Err(e) => warn!("{e:#}"),
                }
            }
        } else if let Some(network) = kv.key.strip_prefix(NETWORKS) {
            if newer(self.networks.get(network).map(|(_, r)| *r), kv.revision) {
                match records::decode::<NetworkConfig>(&kv.key, &kv.value) {
                    Ok(config) => {
                        self.networks.insert(network.to_string(), (config, kv.revision));
                        affected.networks.insert(network.to_string());
                    }
                    Err(e) => warn!("{e:#}"),
                }
            }
        } else if let Some((network, endpoint)) = split(&kv.key, NAMES) {
            // Names touch no network's FDB; the watch refreshes the names answered itself.
            put_entry(&mut self.names, network, endpoint, kv);
        } else if let Some((network, endpoint)) = split(&kv.key, PEERS) {
            if put_entry(&mut self.peers, network, endpoint, kv) {
                affected.networks.insert(network.to_string());
            }
        }
        affected
    }

    /// Records a deletion at `revision` (a key written again later stays).
    pub fn delete(&mut self, key: &str, revision: Revision) -> Affected {
        let mut affected = Affected::default();
        let older = |have: Option<Revision>| have.is_some_and(|r| r < revision || revision == 0);
        if let Some(host) = key.strip_prefix(HOSTS) {
            if older(self.hosts.get(host).map(|(_, r)| *r)) {
                self.hosts.remove(host);
                affected.all = true;
            }
        } else if let Some(network) = key.strip_prefix(NETWORKS) {
            if older(self.networks.get(network).map(|(_, r)| *r)) {
                self.networks.remove(network);
                affected.networks.insert(network.to_string());
            }
        } else if let Some((network, endpoint)) = split(key, NAMES) {
            delete_entry(&mut self.names, network, endpoint, older);
        } else if let Some((network, endpoint)) = split(key, PEERS) {
            if delete_entry(&mut self.peers, network, endpoint, older) {
                affected.networks.insert(network.to_string());
            }
        }
        affected
    }

    /// The peer table of one network (empty if none).
    pub fn peers_of(&self, network: &str) -> BTreeMap<String, (PeerRecord, Revision)> {
        self.peers.get(network).cloned().unwrap_or_default()
    }
}

/// Whether a write at `revision` is news to an entry last written at `have`.
fn newer(have: Option<Revision>, revision: Revision) -> bool {
    have.is_none_or(|have| revision > have || revision == 0)
}

/// network key → endpoint id → record.
pub type Tables<T> = BTreeMap<String, BTreeMap<String, (T, Revision)>>;

/// `<prefix><network>/<endpoint>` → (network, endpoint).
fn split<'k>(key: &'k str, prefix: &str) -> Option<(&'k str, &'k str)> {
    key.strip_prefix(prefix)?.split_once('/')
}

/// Records a write of one endpoint's record; false when it is not news (older, or unreadable).
fn put_entry<T: DeserializeOwned>(tables: &mut Tables<T>, network: &str, endpoint: &str, kv: &KeyValue) -> bool {
    let have = tables.get(network).and_then(|t| t.get(endpoint)).map(|(_, r)| *r);
    if !newer(have, kv.revision) {
        return false;
    }
    match records::decode::<T>(&kv.key, &kv.value) {
        Ok(record) => {
            tables.entry(network.to_string()).or_default().insert(endpoint.to_string(), (record, kv.revision));
            true
        }
        Err(e) => {
            warn!("{e:#}");
            false
        }
    }
}

/// Records a deletion of one endpoint's record if `older` says the copy's entry predates it.
fn delete_entry<T>(
    tables: &mut Tables<T>,
    network: &str,
    endpoint: &str,
    older: impl Fn(Option<Revision>) -> bool,
) -> bool {
    if !older(tables.get(network).and_then(|t| t.get(endpoint)).map(|(_, r)| *r)) {
        return false;
    }
    if let Some(table) = tables.get_mut(network) {
        table.remove(endpoint);
        if table.is_empty() {
            tables.remove(network);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: Vec<u8>, revision: Revision) -> KeyValue {
        KeyValue { key: key.into(), value, revision }
    }

    #[test]
    fn events_update_the_copy() {
        let mut cache = Cache::default();
        let host =
            HostRecord { vtep: "10.250.0.1".parse().unwrap(), port: 4789, pid: 1, version: "t".into(), started_at: 0 };
        let affected = cache.apply(&WatchEvent::Put(kv("overlay/hosts/h1", records::encode(&host), 3)));
        assert!(affected.all);
        assert!(!cache.apply(&WatchEvent::Put(kv("overlay/hosts/h1", records::encode(&host), 4))).all, "no change");
        assert!(!cache.apply(&WatchEvent::Delete { key: "overlay/hosts/h1".into(), revision: 2 }).all, "an old delete");
        assert_eq!(cache.hosts.len(), 1);

        let peer = PeerRecord {
            host: "h1".into(),
            endpoint: "e1".into(),
            vtep: "10.250.0.1".parse().unwrap(),
            port: 4789,
            mac: "02:42:0a:09:00:02".into(),
            ipv4: Some("10.9.0.2".parse().unwrap()),
            ipv6: None,
        };
        let affected = cache.apply(&WatchEvent::Put(kv("overlay/peers/n1/e1", records::encode(&peer), 5)));
        assert_eq!(affected.networks, BTreeSet::from(["n1".to_string()]));
        assert_eq!(cache.peers_of("n1")["e1"], (peer.clone(), 5));

        // An event older than what the copy has changes nothing.
        let mut older = peer.clone();
        older.mac = "02:42:0a:09:00:99".into();
        assert!(cache.apply(&WatchEvent::Put(kv("overlay/peers/n1/e1", records::encode(&older), 4))).is_empty());
        assert_eq!(cache.peers_of("n1")["e1"].1, 5);

        // Records it can't read are skipped, not fatal.
        let affected = cache.apply(&WatchEvent::Put(kv("overlay/peers/n1/e2", b"junk".to_vec(), 6)));
        assert!(affected.is_empty());
        assert_eq!(cache.peers_of("n1").len(), 1);

        let affected = cache.apply(&WatchEvent::Delete { key: "overlay/peers/n1/e1".into(), revision: 7 });
        assert_eq!(affected.networks.len(), 1);
        assert!(cache.peers_of("n1").is_empty() && cache.peers.is_empty());
        assert!(cache.apply(&WatchEvent::Delete { key: "overlay/hosts/h1".into(), revision: 8 }).all);
        assert!(cache.hosts.is_empty());
    }
}
