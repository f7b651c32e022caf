//! The firewall's view of a loom-host endpoint.
//!
//! The shared firewall programs policy per interface, and a loom-host network has no interface of
//! its own: every endpoint is a policy on its host veth, holding just the container's addresses.
//! The policy accepts forwarding from and to the veth (dockerd sets FORWARD's policy to DROP),
//! masquerades the container's traffic that leaves through another interface when the network asks
//! for it, and carries the endpoint's published ports.

use netloom_firewall::NetworkPolicy;

use crate::state::{EndpointRecord, NetworkRecord};

/// Firewall ids of loom-host's policies start with this, so that its leftover sweep never takes
/// another driver's networks for its own.
pub const ID_PREFIX: &str = "loom-host.";

/// Whether a firewall id is one of loom-host's policies.
pub fn owns(firewall_id: &str) -> bool {
    firewall_id.starts_with(ID_PREFIX)
}

pub fn id(ep: &EndpointRecord) -> String {
    format!("{ID_PREFIX}{}", ep.id)
}

pub fn of(net: &NetworkRecord, ep: &EndpointRecord) -> NetworkPolicy {
    NetworkPolicy {
        network_id: id(ep),
        bridge: ep.host_veth.clone(),
        subnets: ep.host_routes(),
        masquerade: net.options.masquerade && !net.internal,
        snat_source: None,
        icc: true,
        internal: false,
        isolate: false,
    }
}
