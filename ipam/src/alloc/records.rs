//! The JSON records stored under the keys of `keys.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use netloom_store::{KeyValue, Revision};

/// `ipam/spaces/<space>`: every pool of one address space. Pool creation and deletion rewrite it
/// conditionally, which makes "no two pools overlap" atomic across hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpaceIndex {
    pub pools: BTreeSet<String>,
}

/// `ipam/pools/<space>/<subnet>`: a cluster-wide pool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PoolRecord {
    pub space: String,
    pub subnet: String,
    /// Host id → how many RequestPool calls of that host hold the pool.
    pub hosts: BTreeMap<String, u32>,
    /// Set by the first gateway request; every host gets the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub created_by: String,
    pub created_at: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Endpoint,
    Gateway,
    Vni,
}

/// `.../ips/<ip>` and `ipam/vnis/ids/<vni>`: who holds an address or VNI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerRecord {
    /// Empty when not recorded: such an allocation is nobody's to release in reconciliation.
    #[serde(default)]
    pub host: String,
    /// Endpoint id, MAC address or network name, when the caller said; else empty.
    #[serde(default)]
    pub owner: String,
    pub kind: Kind,
    pub at: u64,
    /// Unique to the write that made the claim, so that a write whose outcome is unknown can be
    /// recognised when read back. Empty in records written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub claim: String,
}

/// `hosts/<host>`: written with the host lease, so it disappears when the host does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    pub started_at: u64,
    pub pid: u32,
    pub version: String,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, IpamError> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Corrupt { key: kv.key.clone(), detail: e.to_string() })
}

/// Decodes an optional read into (record, revision).
pub fn decode_opt<T: DeserializeOwned>(kv: Option<KeyValue>) -> Result<(Option<T>, Option<Revision>), IpamError> {
    match kv {
        Some(kv) => Ok((Some(decode(&kv)?), Some(kv.revision))),
        None => Ok((None, None)),
    }
}

/// A value no other write of this process has used; with the host id in the same record it is
/// unique across the cluster.
pub fn claim_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{nanos:x}-{n:x}", std::process::id())
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let rec = PoolRecord {
            space: "LocalDefault".into(),
            subnet: "10.1.0.0/16".into(),
            hosts: [("h1".to_string(), 2)].into(),
            gateway: None,
            created_by: "h1".into(),
            created_at: 1,
        };
        let kv = KeyValue { key: "k".into(), value: encode(&rec), revision: 3 };
        assert_eq!(decode::<PoolRecord>(&kv).unwrap(), rec);
        assert!(!String::from_utf8(kv.value).unwrap().contains("gateway"));
        let owner =
            OwnerRecord { host: "h".into(), owner: "".into(), kind: Kind::Gateway, at: 0, claim: String::new() };
        assert!(String::from_utf8(encode(&owner)).unwrap().contains("\"gateway\""));
        assert!(!String::from_utf8(encode(&owner)).unwrap().contains("claim"), "older readers see the same record");
        assert_ne!(claim_id(), claim_id());
    }

    #[test]
    fn corrupt_records_name_the_key() {
        let kv = KeyValue { key: "ipam/pools/x".into(), value: b"{nope".to_vec(), revision: 1 };
        let err = decode::<PoolRecord>(&kv).unwrap_err().to_string();
        assert!(err.contains("ipam/pools/x"), "{err}");
    }
}
