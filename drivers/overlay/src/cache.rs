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

use crate::records::{
    self, HostRecord, NameRecord, NetworkConfig, PeerRecord, TunnelRecord, HOSTS, NAMES, NETWORKS, PEERS, ROOT, TUNNELS,
};

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
    /// host → its end of the encrypted overlays.
    pub tunnels: BTreeMap<String, (TunnelRecord, Revision)>,
}

/// What a change touches.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Affected {
    /// A host came or went: every network.
    pub all: bool,
    pub networks: BTreeSet<String>,
    /// A host's tunnel record changed (the tunnel's peers; also every encrypted network's FDB,
    /// which `all` covers).
    pub tunnels: bool,
}

impl Affected {
    pub fn merge(&mut self, other: Affected) {
        self.all |= other.all;
        self.tunnels |= other.tunnels;
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
        } else if let Some(host) = kv.key.strip_prefix(TUNNELS) {
            if newer(self.tunnels.get(host).map(|(_, r)| *r), kv.revision) {
                match records::decode::<TunnelRecord>(&kv.key, &kv.value) {
                    Ok(record) => {
                        let changed = self.tunnels.get(host).map(|(t, _)| t) != Some(&record);
                        (affected.all, affected.tunnels) = (changed, changed);
                        self.tunnels.insert(host.to_string(), (record, kv.revision));
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
        } else if let Some(host) = key.strip_prefix(TUNNELS) {
            if older(self.tunnels.get(host).map(|(_, r)| *r)) {
                self.tunnels.remove(host);
                (affected.all, affected.tunnels) = (true, true);
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

    /// Every host's tunnel address (the VTEP of its encrypted networks).
    pub fn tunnel_ips(&self) -> BTreeMap<String, std::net::IpAddr> {
        self.tunnels.iter().map(|(host, (t, _))| (host.clone(), t.tunnel_ip)).collect()
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

    #[test]
    fn tunnel_records_are_followed() {
        let mut cache = Cache::default();
        let tunnel = TunnelRecord {
            public_key: "a2V5".into(),
            endpoint: "10.250.0.2:51820".parse().unwrap(),
            tunnel_ip: "100.64.0.2".parse().unwrap(),
        };
        let affected = cache.apply(&WatchEvent::Put(kv("overlay/tunnels/h2", records::encode(&tunnel), 3)));
        assert!(affected.tunnels && affected.all, "{affected:?}");
        assert_eq!(cache.tunnel_ips()["h2"], tunnel.tunnel_ip);
        assert!(cache.apply(&WatchEvent::Put(kv("overlay/tunnels/h2", records::encode(&tunnel), 4))).is_empty());
        // The claim of an address is not a tunnel record.
        assert!(cache.apply(&WatchEvent::Put(kv("overlay/tunnel-ips/100.64.0.2", b"h2".to_vec(), 5))).is_empty());
        let mut rotated = tunnel.clone();
        rotated.public_key = "bmV3".into();
        assert!(cache.apply(&WatchEvent::Put(kv("overlay/tunnels/h2", records::encode(&rotated), 6))).tunnels);
        let affected = cache.apply(&WatchEvent::Delete { key: "overlay/tunnels/h2".into(), revision: 7 });
        assert!(affected.tunnels && cache.tunnels.is_empty());
    }
}
