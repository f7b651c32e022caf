//! The names loom-overlay answers, and who may ask for them.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};

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

#[derive(Default)]
struct Index {
    // Filled in by the DNS work: endpoints by lower-cased name, askers by address.
}

impl Directory {
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Replaces every endpoint's names (the whole set, as the store has it now).
    pub fn set_endpoints(&self, endpoints: Vec<NamedEndpoint>) {
        let _ = (endpoints, &self.inner);
        todo!("DNS")
    }

    /// Replaces the containers of this host that may ask.
    pub fn set_askers(&self, askers: Vec<Asker>) {
        let _ = askers;
        todo!("DNS")
    }

    /// What to answer `source` asking `name` (as sent, with or without the trailing dot).
    pub fn lookup(&self, source: IpAddr, name: &str, kind: QueryKind) -> Lookup {
        let _ = (source, name, kind);
        todo!("DNS")
    }
}
