//! Reconciliation against Docker: what a driver (or loom-ipam) holds on this host and Docker no
//! longer has is released through the driver's own handlers, at start, every interval and on
//! Docker's network events. Unknown is not gone: when dockerd cannot be asked, nothing is removed.

use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

pub use crate::engine::judge::{
    missing_allocations, missing_networks, unseen_global_allocations, Subject, Suspects, Verdict,
};
pub use crate::engine::reconciler::{request_pass, PassReport, Reconciler, RunningReconciler};

/// A network a driver holds on this host, with the endpoints it holds on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldNetwork {
    pub id: String,
    /// A Docker 20.10 cluster-store network: Docker's list on this host is not the whole story,
    /// the driver confirms with the store before anything is removed.
    pub global: bool,
    pub endpoints: Vec<HeldEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldEndpoint {
    pub id: String,
}

/// What loom-ipam holds for this host: released with the IPAM driver's own ReleaseAddress and
/// ReleasePool when no Docker network (with this IPAM driver) has it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HeldAllocation {
    /// Kept while a Docker network has a pool with this subnet. One entry per reference held:
    /// each missing entry is one ReleasePool.
    Pool { pool_id: String, subnet: IpNetwork },
    /// Kept while an endpoint of a network with this subnet has the address, or the network lists
    /// it as its gateway or an auxiliary address.
    Address { pool_id: String, subnet: IpNetwork, address: IpAddr },
    /// The address Docker asked for as the gateway: kept while a Docker network has the subnet
    /// (Docker shows a network's gateway only when the user gave one).
    Gateway { pool_id: String, subnet: IpNetwork, address: IpAddr },
}

/// How often to ask Docker, and how long something must stay missing before it is removed (a
/// network or endpoint being created is held by the driver a moment before Docker records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    pub interval: Duration,
    pub confirm_after: Duration,
}

impl ReconcileConfig {
    pub fn every(interval: Duration) -> Self {
        Self { interval, confirm_after: interval.min(Duration::from_secs(5)) }
    }
}
