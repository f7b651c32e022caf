//! The judging step of reconciliation, without I/O: what a driver holds and Docker does not have,
//! and which of it has been missing long enough (in two passes at least `confirm_after` apart) to
//! be released.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;

use crate::engine::model::DockerNetwork;
use crate::engine::reconcile::{HeldAllocation, HeldNetwork};
use crate::ids::short_id;

/// One thing held on this host that Docker may not have. Sorted in release order: endpoints
/// before networks, addresses and gateways before pools.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Endpoint { network_id: String, endpoint_id: String },
    Network { id: String, global: bool },
    Address { pool_id: String, address: IpAddr },
    Gateway { pool_id: String, address: IpAddr },
    Pool { pool_id: String },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Endpoint { network_id, endpoint_id } => {
                write!(f, "endpoint {} of network {}", short_id(endpoint_id), short_id(network_id))
            }
            Subject::Network { id, .. } => write!(f, "network {}", short_id(id)),
            Subject::Address { pool_id, address } => write!(f, "address {address} of pool {pool_id}"),
            Subject::Gateway { pool_id, address } => write!(f, "gateway {address} of pool {pool_id}"),
            Subject::Pool { pool_id } => write!(f, "pool {pool_id}"),
        }
    }
}

/// The held networks and endpoints Docker (`docker`: its networks of this driver) does not have.
///
/// A global (cluster-store) network Docker does not list is handed to the driver's own
/// delete_network, which asks the store; its endpoints are left to that decision, since Docker
/// not listing the network may only mean it cannot read its cluster store.
pub fn missing_networks(held: &[HeldNetwork], docker: &[DockerNetwork]) -> Vec<Subject> {
    let by_id: HashMap<&str, &DockerNetwork> = docker.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut missing = Vec::new();
    for network in held {
        let in_docker = by_id.get(network.id.as_str());
        if in_docker.is_some() || !network.global {
            for endpoint in &network.endpoints {
                let known = in_docker.is_some_and(|d| d.endpoints.iter().any(|e| e.endpoint_id == endpoint.id));
                if !known {
                    missing
                        .push(Subject::Endpoint { network_id: network.id.clone(), endpoint_id: endpoint.id.clone() });
                }
            }
        }
        if in_docker.is_none() {
            missing.push(Subject::Network { id: network.id.clone(), global: network.global });
        }
    }
    missing
}

/// The held pools and addresses no Docker network of this IPAM driver (`docker`) has. One entry
/// per held entry: a pool held twice and missing is released twice.
pub fn missing_allocations(held: &[HeldAllocation], docker: &[DockerNetwork]) -> Vec<Subject> {
    let mut subnets = HashSet::new();
    let mut addresses = HashSet::new();
    for network in docker {
        for pool in &network.pools {
            let Some(subnet) = pool.subnet.map(canonical) else { continue };
            subnets.insert(subnet);
            addresses.extend(pool.gateway.iter().chain(&pool.aux_addresses).map(|ip| (subnet, *ip)));
            let endpoint_ips = network.endpoints.iter().flat_map(|e| e.ipv4.iter().chain(&e.ipv6)).map(|n| n.ip());
            addresses.extend(endpoint_ips.filter(|ip| subnet.contains(*ip)).map(|ip| (subnet, ip)));
        }
    }
    held.iter()
        .filter_map(|allocation| match allocation {
            HeldAllocation::Pool { pool_id, subnet } => {
                (!subnets.contains(&canonical(*subnet))).then(|| Subject::Pool { pool_id: pool_id.clone() })
            }
            HeldAllocation::Gateway { pool_id, subnet, address } => (!subnets.contains(&canonical(*subnet)))
                .then(|| Subject::Gateway { pool_id: pool_id.clone(), address: *address }),
            HeldAllocation::Address { pool_id, subnet, address } => (!addresses
                .contains(&(canonical(*subnet), *address)))
            .then(|| Subject::Address { pool_id: pool_id.clone(), address: *address }),
        })
        .collect()
}

/// The address space libnetwork asks pools of global-scope (cluster-store) networks from.
const GLOBAL_ADDRESS_SPACE: &str = "GlobalDefault/";

/// Held allocations of cluster-store pools whose subnet `docker` does not show. dockerd 20.10
/// leaves global networks out of its lists while it cannot read its cluster store, so with a
/// cluster store configured these cannot be judged by Docker's lists: the caller leaves them out.
pub fn unseen_global_allocations(held: &[HeldAllocation], docker: &[DockerNetwork]) -> Vec<HeldAllocation> {
    let subnets: HashSet<IpNetwork> =
        docker.iter().flat_map(|n| &n.pools).filter_map(|p| p.subnet.map(canonical)).collect();
    held.iter()
        .filter(|allocation| {
            let (HeldAllocation::Pool { pool_id, subnet }
            | HeldAllocation::Address { pool_id, subnet, .. }
            | HeldAllocation::Gateway { pool_id, subnet, .. }) = allocation;
            pool_id.starts_with(GLOBAL_ADDRESS_SPACE) && !subnets.contains(&canonical(*subnet))
        })
        .cloned()
        .collect()
}

/// `10.0.0.5/24` and `10.0.0.0/24` are one subnet.
fn canonical(subnet: IpNetwork) -> IpNetwork {
    IpNetwork::new(subnet.network(), subnet.prefix()).unwrap_or(subnet)
}

/// What one pass decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Missing in an earlier pass at least `confirm_after` ago and still missing: release now, in
    /// this order, with how long Docker has not had each.
    pub release: Vec<(Subject, Duration)>,
    /// Missing for the first time: released only if still missing `confirm_after` from now.
    pub suspected: Vec<Subject>,
    /// Suspected before, but Docker has it again or the driver no longer holds it.
    pub cleared: Vec<Subject>,
}

/// What was found missing, and since when.
#[derive(Debug, Default)]
pub struct Suspects {
    since: BTreeMap<Subject, Instant>,
}

impl Suspects {
    /// Judges this pass's `missing` (from `missing_networks` / `missing_allocations`) at `now`.
    /// What is released stays suspect until `forget` says it is gone, so a failed release is
    /// retried by the next pass.
    pub fn judge(&mut self, missing: Vec<Subject>, now: Instant, confirm_after: Duration) -> Verdict {
        let mut counts: BTreeMap<Subject, usize> = BTreeMap::new();
        for subject in missing {
            *counts.entry(subject).or_default() += 1;
        }
        let mut verdict = Verdict::default();
        self.since.retain(|subject, _| {
            let still_missing = counts.contains_key(subject);
            if !still_missing {
                verdict.cleared.push(subject.clone());
            }
            still_missing
        });
        for (subject, count) in counts {
            match self.since.get(&subject) {
                Some(since) if now.saturating_duration_since(*since) >= confirm_after => {
                    let gone_for = now.saturating_duration_since(*since);
                    verdict.release.extend(std::iter::repeat_n((subject, gone_for), count));
                }
                Some(_) => {}
                None => {
                    self.since.insert(subject.clone(), now);
                    verdict.suspected.push(subject);
                }
            }
        }
        verdict
    }

    /// `subject` was released.
    pub fn forget(&mut self, subject: &Subject) {
        self.since.remove(subject);
    }

    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }

    /// When the earliest suspect can be confirmed.
    pub fn next_due(&self, confirm_after: Duration) -> Option<Instant> {
        self.since.values().min().map(|since| *since + confirm_after)
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
