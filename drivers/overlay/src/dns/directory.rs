//! The names loom-overlay answers, and who may ask for them.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

use ipnetwork::IpNetwork;

use super::lookup::{Lookup, QueryKind};

/// One endpoint's names on one network, on any host (from the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedEndpoint {
    /// The cluster-wide network key (`vni-<N>` in local scope).
    pub network: String,
    pub endpoint: String,
    /// The container's name, then its aliases on this network. Answered case-insensitively.
    pub names: Vec<String>,
    /// The network's Docker names (`<name>.<network name>` is answered for each).
    pub network_names: Vec<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// A container on this host that may ask: the addresses its queries come from (docker_gwbridge,
/// overlay) and the network keys it is on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Asker {
    pub addresses: Vec<IpAddr>,
    pub networks: BTreeSet<String>,
}

/// Shared by the store watch (writer) and the DNS server (reader). Cheap to clone.
#[derive(Clone, Default)]
pub struct Directory {
    inner: Arc<RwLock<Index>>,
}

/// One address set a name stands for, on one network.
#[derive(Debug, Clone)]
struct Entry {
    network: Arc<str>,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
}

#[derive(Default)]
struct Index {
    /// Lower-cased name (no trailing dot) -> where it is, in (network, endpoint) order.
    endpoints: HashMap<String, Vec<Entry>>,
    /// Source address -> the network keys of the containers asking from it.
    askers: HashMap<IpAddr, BTreeSet<String>>,
    /// The subnets of this host's Docker networks: a sender inside one that is no asker is a
    /// container of this host on another network (the default bridge sends its queries straight
    /// to dockerd's `--dns` servers), so its queries are forwarded, never answered with names.
    container_subnets: Vec<IpNetwork>,
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Replaces every endpoint's names (the whole set, as the store has it now).
    pub fn set_endpoints(&self, mut endpoints: Vec<NamedEndpoint>) {
        endpoints.sort_by(|a, b| (&a.network, &a.endpoint).cmp(&(&b.network, &b.endpoint)));
        let mut index: HashMap<String, Vec<Entry>> = HashMap::new();
        for endpoint in &endpoints {
            let entry =
                Entry { network: Arc::from(endpoint.network.as_str()), ipv4: endpoint.ipv4, ipv6: endpoint.ipv6 };
            for key in names_of(endpoint) {
                index.entry(key).or_default().push(entry.clone());
            }
        }
        self.write().endpoints = index;
    }

    /// Replaces the containers of this host that may ask.
    pub fn set_askers(&self, askers: Vec<Asker>) {
        let mut index: HashMap<IpAddr, BTreeSet<String>> = HashMap::new();
        for asker in askers {
            for address in &asker.addresses {
                index.entry(address.to_canonical()).or_default().extend(asker.networks.iter().cloned());
            }
        }
        self.write().askers = index;
    }

    /// Replaces the subnets of this host's Docker networks.
    pub fn set_container_subnets(&self, subnets: Vec<IpNetwork>) {
        self.write().container_subnets = subnets;
    }

    /// What to answer `source` asking `name` (as sent, with or without the trailing dot).
    pub fn lookup(&self, source: IpAddr, name: &str, kind: QueryKind) -> Lookup {
        let index = self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let source = source.to_canonical();
        let Some(networks) = index.askers.get(&source) else {
            if index.container_subnets.iter().any(|subnet| subnet.contains(source)) {
                return Lookup::NotOurs;
            }
            return Lookup::Refused;
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let entries = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            index.endpoints.get(&name.to_ascii_lowercase())
        } else {
            index.endpoints.get(name)
        };
        let mut visible = entries.into_iter().flatten().filter(|e| networks.contains(&*e.network)).peekable();
        if visible.peek().is_none() {
            return Lookup::NotOurs;
        }
        let mut addresses: Vec<IpAddr> = Vec::new();
        for entry in visible {
            let address = match kind {
                QueryKind::A => entry.ipv4.map(IpAddr::V4),
                QueryKind::Aaaa => entry.ipv6.map(IpAddr::V6),
                QueryKind::Other => None,
            };
            if let Some(address) = address.filter(|a| !addresses.contains(a)) {
                addresses.push(address);
            }
        }
        Lookup::Found(addresses)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every name an endpoint answers to, lower-cased, without duplicates.
fn names_of(endpoint: &NamedEndpoint) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for name in endpoint.names.iter().map(|n| normalized(n)).filter(|n| !n.is_empty()) {
        for network in endpoint.network_names.iter().map(|n| normalized(n)).filter(|n| !n.is_empty()) {
            keys.insert(format!("{name}.{network}"));
        }
        keys.insert(name);
    }
    keys
}

fn normalized(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
#[path = "directory_tests.rs"]
mod tests;
