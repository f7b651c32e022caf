//! Restore at start-up, before the socket opens: endpoints side by side (their netlink round
//! trips overlap), then the firewall in one pass.

use std::future::Future;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use netloom_dataplane::{Link, Netlink};
use netloom_firewall::{Firewall, NetworkPolicy};
use netloom_plugin_api::addressing::short_id;
use netloom_plugin_api::host_ports::PublishedPort;
use tracing::{debug, info, warn};

use crate::ports::mappings;

/// Endpoints restored side by side.
pub const CONCURRENCY: usize = 8;

/// Runs `restore` for every item, [`CONCURRENCY`] at a time; returns the items it restored.
pub async fn side_by_side<T, F, Fut>(items: Vec<T>, restore: F) -> Vec<T>
where
    T: Copy,
    F: Fn(T) -> Fut,
    Fut: Future<Output = bool>,
{
    stream::iter(items)
        .map(|item| {
            let restoring = restore(item);
            async move { restoring.await.then_some(item) }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|restored| async move { restored })
        .collect()
        .await
}

/// The endpoint's host-side link, if it is still there to restore; a link gone with its
/// container waits for DeleteEndpoint.
pub async fn present_link(netlink: &Netlink, name: &str, endpoint_id: &str) -> Option<Link> {
    match netlink.link(name).await {
        Ok(Some(link)) => Some(link),
        Ok(None) => {
            debug!(endpoint = %short_id(endpoint_id), "{name} is gone (its container stopped); waiting for DeleteEndpoint");
            None
        }
        Err(e) => {
            warn!(endpoint = %short_id(endpoint_id), "{e:#}");
            None
        }
    }
}

/// Installs the policies in one pass (a backend whose per-call cost grows with the ruleset, like
/// iptables, would otherwise list it once per policy); on an error, one by one, logging each
/// failure with `names[i]`.
pub async fn policies(firewall: &dyn Firewall, policies: &[NetworkPolicy], names: &[&str]) {
    if let Err(e) = firewall.add_networks(policies).await {
        warn!("restoring firewall policies together: {e:#}; retrying one by one");
        for (policy, name) in policies.iter().zip(names) {
            if let Err(e) = firewall.add_network(policy).await {
                warn!(id = %short_id(name), "could not restore firewall policy: {e:#}");
            }
        }
    }
}

/// Publishes the recorded ports again, per endpoint.
pub async fn ports(firewall: &dyn Firewall, published: &[(NetworkPolicy, &str, &[PublishedPort])]) {
    for (policy, endpoint_id, ports) in published.iter().filter(|(_, _, ports)| !ports.is_empty()) {
        if let Err(e) = firewall.add_ports(policy, endpoint_id, &mappings(ports)).await {
            warn!(endpoint = %short_id(endpoint_id), "could not restore published ports: {e:#}");
        }
    }
}

/// The one log line a restore ends with (the benchmark reads its `elapsed_ms`).
pub fn done(started: Instant, networks: usize, endpoints: usize) {
    info!(networks, endpoints, elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
}
