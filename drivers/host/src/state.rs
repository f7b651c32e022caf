//! What loom-host persists under `host/<host-id>/` in the store: one record per network and per
//! endpoint, written before a request is answered, so that a restarted driver can restore routes
//! and tell its own leftovers apart.

use ipnetwork::IpNetwork;
use netloom_plugin_api::addressing::Pool;
use netloom_plugin_api::host_ports::PublishedPort;
use serde::{Deserialize, Serialize};

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
    /// An internal network's routing table: its endpoints' host routes live only there, and
    /// their traffic is looked up only there, so nothing is routed off the network or into it.
    #[serde(default)]
    pub table: Option<u32>,
}

/// Routing tables of internal loom-host networks are taken from this range.
pub const TABLES: std::ops::RangeInclusive<u32> = 0x4c48_0000..=0x4c48_ffff;

impl NetworkRecord {
    pub fn subnets(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.pools_v4.iter().chain(&self.pools_v6).map(|p| p.subnet)
    }
}

/// A routing table for a new internal network, derived from its id and unused by `taken`.
pub fn pick_table(network_id: &str, taken: &[u32]) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    network_id.hash(&mut hasher);
    let span = TABLES.end() - TABLES.start() + 1;
    let start = (hasher.finish() % u64::from(span)) as u32;
    (0..span).map(|i| TABLES.start() + (start + i) % span).find(|t| !taken.contains(t)).unwrap_or(*TABLES.start())
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
    /// The endpoint's addresses as host routes (/32, /128).
    pub fn host_routes(&self) -> Vec<IpNetwork> {
        [self.address_v4, self.address_v6].into_iter().flatten().map(|a| IpNetwork::from(a.ip())).collect()
    }
}

netloom_driver_kit::driver_records!(network NetworkRecord, endpoint EndpointRecord, owner OWNER_PREFIX, with ports);

#[cfg(test)]
mod tests {
    use netloom_driver_kit::Endpoint;

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

    #[test]
    fn tables_are_in_range_and_unique() {
        let first = pick_table("net-a", &[]);
        assert!(TABLES.contains(&first));
        assert_eq!(pick_table("net-a", &[]), first, "stable for one id");
        let second = pick_table("net-a", &[first]);
        assert!(TABLES.contains(&second) && second != first);
        assert!(TABLES.contains(&pick_table("ü🦀", &[])));
    }

    #[test]
    fn records_without_a_table_still_load() {
        let old =
            r#"{"id":"n","options":{"masquerade":false,"mtu":null},"pools_v4":[],"pools_v6":[],"internal":false}"#;
        let record: NetworkRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.table, None);
    }
}
