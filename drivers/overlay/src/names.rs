//! Container names across hosts (local scope), as pure functions: what the DNS directory answers
//! (each endpoint's name record joined with its peer record, which gives the addresses), which of
//! this host's containers may ask, and what a pass against Docker writes to and deletes from the
//! store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use netloom_plugin_api::engine::DockerNetwork;
use netloom_store::Revision;

use crate::cache::{Cache, Tables};
use crate::dns::{Asker, NamedEndpoint};
use crate::records::NameRecord;

/// Every endpoint with both a name record and a peer record; without the peer record (not yet
/// published, or withdrawn with its endpoint) a name is not answered. `docker_names` gives this
/// host's Docker name of a network key, answered besides the holding host's.
pub fn named_endpoints(cache: &Cache, docker_names: &BTreeMap<String, String>) -> Vec<NamedEndpoint> {
    let mut named = Vec::new();
    for (network, table) in &cache.names {
        let Some(peers) = cache.peers.get(network) else { continue };
        for (endpoint, (record, _)) in table {
            let Some((peer, _)) = peers.get(endpoint) else { continue };
            let names = unique([record.name.as_str()].into_iter().chain(record.aliases.iter().map(String::as_str)));
            let local = docker_names.get(network).map(String::as_str);
            let network_names = unique([Some(record.network_name.as_str()), local].into_iter().flatten());
            named.push(NamedEndpoint {
                network: network.clone(),
                endpoint: endpoint.clone(),
                names,
                network_names,
                ipv4: match peer.ipv4 {
                    Some(IpAddr::V4(ip)) => Some(ip),
                    _ => None,
                },
                ipv6: match peer.ipv6 {
                    Some(IpAddr::V6(ip)) => Some(ip),
                    _ => None,
                },
            });
        }
    }
    named
}

/// Non-empty, each once, in order.
fn unique<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for text in texts {
        if !text.is_empty() && !out.iter().any(|t| t == text) {
            out.push(text.to_string());
        }
    }
    out
}

/// This host's containers on loom-overlay networks, as the DNS server knows a query's sender:
/// their addresses on docker_gwbridge (where Docker's resolver forwards from), on the overlays and
/// any `more` (container id → its addresses on other networks, one of which may hold its default
/// route), and the network keys they are on. `keys`: Docker network id → network key.
pub fn askers(
    overlays: &[DockerNetwork],
    gwbridge: Option<&DockerNetwork>,
    more: &BTreeMap<String, Vec<IpAddr>>,
    keys: &BTreeMap<String, String>,
) -> Vec<Asker> {
    let mut by_container: BTreeMap<&str, Asker> = BTreeMap::new();
    for network in overlays {
        let Some(key) = keys.get(&network.id) else { continue };
        for endpoint in network.endpoints.iter().filter(|e| !e.container_id.is_empty()) {
            let asker = by_container.entry(&endpoint.container_id).or_default();
            asker.networks.insert(key.clone());
            asker.addresses.extend([endpoint.ipv4, endpoint.ipv6].into_iter().flatten().map(|a| a.ip()));
        }
    }
    for endpoint in gwbridge.map(|n| n.endpoints.as_slice()).unwrap_or_default() {
        if let Some(asker) = by_container.get_mut(endpoint.container_id.as_str()) {
            asker.addresses.extend(endpoint.ipv4.map(|a| a.ip()));
        }
    }
    for (container, addresses) in more {
        if let Some(asker) = by_container.get_mut(container.as_str()) {
            for address in addresses {
                if !asker.addresses.contains(address) {
                    asker.addresses.push(*address);
                }
            }
        }
    }
    by_container.into_values().collect()
}

/// What a pass writes and deletes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (network key, record): new or changed.
    pub writes: Vec<(String, NameRecord)>,
    /// (network key, endpoint, revision read): this host's records whose endpoint is gone.
    pub deletes: Vec<(String, String, Revision)>,
}

/// `wanted`: (network key, record) for this host's endpoints joined to a container; `held`:
/// (network key, endpoint) of every endpoint this host holds.
pub fn plan(
    wanted: Vec<(String, NameRecord)>,
    published: &Tables<NameRecord>,
    host: &str,
    held: &BTreeSet<(String, String)>,
) -> Plan {
    let writes = wanted
        .into_iter()
        .filter(|(key, record)| {
            published.get(key).and_then(|t| t.get(&record.endpoint)).map(|(r, _)| r) != Some(record)
        })
        .collect();
    Plan { writes, deletes: stale(published, host, held) }
}

/// This host's name records whose endpoint it no longer holds.
pub fn stale(
    published: &Tables<NameRecord>,
    host: &str,
    held: &BTreeSet<(String, String)>,
) -> Vec<(String, String, Revision)> {
    published
        .iter()
        .flat_map(|(key, table)| {
            table.iter().map(move |(endpoint, (record, revision))| (key, endpoint, record, revision))
        })
        .filter(|(key, endpoint, record, _)| {
            record.host == host && !held.contains(&((*key).clone(), (*endpoint).clone()))
        })
        .map(|(key, endpoint, _, revision)| (key.clone(), endpoint.clone(), *revision))
        .collect()
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
