//! What `loomctl` shows of loom-overlay, and its peer metrics: the other hosts with their VTEP,
//! whether they are live, absent or gone and when they were last seen; each network's VNI; for
//! one network, its records, this host's endpoints and the peers it programs.
//!
//! Everything comes from the in-memory state and the copy of the store: cheap, never a store call.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use netloom_plugin_api::metrics::prometheus_client::collector::Collector;
use netloom_plugin_api::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use netloom_plugin_api::metrics::prometheus_client::metrics::gauge::ConstGauge;
use netloom_plugin_api::metrics::prometheus_client::metrics::MetricType;
use netloom_plugin_api::{PluginError, PluginResult};
use serde_json::{json, Value};

use crate::liveness::Liveness;
use crate::overlay::Overlay;
use crate::state::State;

const DRIVER: &str = "loom-overlay";

/// One other host, as this host judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerHost {
    host: String,
    vtep: Option<std::net::IpAddr>,
    liveness: Liveness,
    /// Seconds since its lease record was seen (0: it is in the store now) or its VTEP answered.
    last_seen_seconds_ago: Option<u64>,
    /// Seconds since this host first found it absent.
    absent_for_seconds: Option<u64>,
    /// Its endpoints on this host's networks.
    endpoints: usize,
}

fn state_name(liveness: Liveness) -> &'static str {
    match liveness {
        Liveness::Live => "live",
        Liveness::Absent => "absent",
        Liveness::Gone => "gone",
    }
}

/// `host`'s entry, made on first sight.
fn entry<'a>(hosts: &'a mut BTreeMap<String, PeerHost>, state: &State, host: &str) -> &'a mut PeerHost {
    hosts.entry(host.to_string()).or_insert_with(|| PeerHost {
        host: host.to_string(),
        vtep: None,
        liveness: state.liveness(host),
        last_seen_seconds_ago: None,
        absent_for_seconds: None,
        endpoints: 0,
    })
}

/// Every other host the store mentions: those with a lease record, and those without one.
fn peer_hosts(state: &State, own_host: &str) -> Vec<PeerHost> {
    let mut hosts: BTreeMap<String, PeerHost> = BTreeMap::new();
    for host in state.cache.hosts.keys().chain(state.absent.keys()).filter(|h| *h != own_host) {
        entry(&mut hosts, state, host);
    }
    let local_keys: Vec<&str> = state.networks.values().map(|n| n.config.key.as_str()).collect();
    for (key, table) in &state.cache.peers {
        for (peer, _) in table.values().filter(|(peer, _)| peer.host != own_host) {
            let host = entry(&mut hosts, state, &peer.host);
            host.vtep = host.vtep.or(Some(peer.vtep));
            if local_keys.contains(&key.as_str()) {
                host.endpoints += 1;
            }
        }
    }
    for host in hosts.values_mut() {
        if let Some((record, _)) = state.cache.hosts.get(&host.host) {
            host.vtep = Some(record.vtep);
            host.last_seen_seconds_ago = Some(0);
        } else if let Some(absence) = state.absent.get(&host.host) {
            host.vtep = absence.vtep.or(host.vtep);
            host.last_seen_seconds_ago = absence.answered.map(|at| at.elapsed().as_secs());
            host.absent_for_seconds = Some(absence.since.elapsed().as_secs());
        } else if let Some(vtep) = state.vteps.get(&host.host) {
            host.vtep = Some(*vtep);
        }
    }
    hosts.into_values().collect()
}

impl Overlay {
    pub fn status_details(&self) -> Value {
        let state = self.state();
        let peers: Vec<Value> = peer_hosts(&state, &self.host)
            .into_iter()
            .map(|p| {
                json!({
                    "host": p.host,
                    "vtep": p.vtep.map(|v| v.to_string()),
                    "state": state_name(p.liveness),
                    "last_seen_seconds_ago": p.last_seen_seconds_ago,
                    "absent_for_seconds": p.absent_for_seconds,
                    "endpoints": p.endpoints,
                })
            })
            .collect();
        let networks: Vec<Value> = state
            .networks
            .values()
            .map(|n| {
                let subnets: Vec<String> = n.config.subnets().iter().map(ToString::to_string).collect();
                let encrypted = if n.config.encrypted { ", encrypted" } else { "" };
                json!({
                    "id": n.docker_id,
                    "local_name": format!("vni {}{encrypted}", n.config.vni),
                    "subnets": subnets,
                    "vni": n.config.vni,
                    "encrypted": n.config.encrypted,
                })
            })
            .collect();
        let mut details = json!({
            "host": self.host,
            "scope": self.config.mode.to_string(),
            "vtep": state.underlay.as_ref().map(|u| u.vtep.to_string()),
            "peers": peers,
            "networks": networks,
            "tunnel": self.tunnel_status(),
        });
        if let Some(firewall) = self.config.firewall {
            details["firewall"] = json!(firewall.to_string());
        }
        if let Err(problem) = &self.shared {
            details["store_error"] = json!(problem);
        }
        details
    }

    pub fn inspect(&self, network_id: &str) -> PluginResult<Value> {
        let state = self.state();
        let network = state
            .networks
            .values()
            .find(|n| n.docker_id == network_id)
            .cloned()
            .ok_or_else(|| PluginError::unknown_network(DRIVER, network_id))?;
        let endpoints = state.endpoints_of(&network.config.key);
        let peers: Vec<Value> = state
            .cache
            .peers_of(&network.config.key)
            .into_values()
            .filter(|(peer, _)| peer.host != self.host)
            .map(|(peer, _)| {
                let liveness = state_name(state.liveness(&peer.host));
                json!({ "record": peer, "host_state": liveness })
            })
            .collect();
        Ok(json!({
            "record": network,
            "endpoints": endpoints,
            "peers": peers,
            "kernel_objects": state.dataplanes.contains_key(&network.config.key),
        }))
    }
}

/// `netloom_overlay_peer_hosts{state}` and `netloom_overlay_peers`, read from the state at scrape time.
struct PeerMetrics(Weak<Overlay>);

impl std::fmt::Debug for PeerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerMetrics")
    }
}

impl Collector for PeerMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(overlay) = self.0.upgrade() else { return Ok(()) };
        let hosts = peer_hosts(&overlay.state(), &overlay.host);
        let mut family = encoder.encode_descriptor(
            "netloom_overlay_peer_hosts",
            "Other hosts of the overlay, by state: live (lease record in the store), absent (none; its containers \
             may run on), gone (absent and its VTEP silent for --peer-grace).",
            None,
            MetricType::Gauge,
        )?;
        for liveness in [Liveness::Live, Liveness::Absent, Liveness::Gone] {
            let count = hosts.iter().filter(|h| h.liveness == liveness).count();
            ConstGauge::new(count as i64).encode(family.encode_family(&[("state", state_name(liveness))])?)?;
        }
        let peers = ConstGauge::new(hosts.iter().map(|h| h.endpoints).sum::<usize>() as i64);
        peers.encode(encoder.encode_descriptor(
            "netloom_overlay_peers",
            "Endpoints of other hosts on this host's overlay networks (FDB and neighbour entries programmed).",
            None,
            MetricType::Gauge,
        )?)
    }
}

/// Adds the peer metrics to the process's registry, for as long as `overlay` lives.
pub fn register_metrics(overlay: &Arc<Overlay>) {
    let collector = PeerMetrics(Arc::downgrade(overlay));
    netloom_plugin_api::metrics::global().register(|r| r.register_collector(Box::new(collector)));
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::liveness::Absence;
    use crate::records::{HostRecord, PeerRecord};

    fn peer(host: &str, endpoint: &str, vtep: &str) -> PeerRecord {
        PeerRecord {
            host: host.into(),
            endpoint: endpoint.into(),
            vtep: vtep.parse().unwrap(),
            port: 4789,
            mac: "02:00:00:00:00:01".into(),
            ipv4: None,
            ipv6: None,
        }
    }

    #[test]
    fn peer_hosts_are_live_absent_or_gone_with_their_vtep_and_last_sign_of_life() {
        let mut state = State::default();
        let record = HostRecord {
            vtep: "10.0.0.2".parse().unwrap(),
            port: 4789,
            pid: 7,
            version: "0.1.0".into(),
            started_at: 0,
        };
        state.cache.hosts.insert("live".into(), (record.clone(), 1));
        state.cache.hosts.insert("me".into(), (record, 1));
        let long_ago = Instant::now() - Duration::from_secs(90);
        let absence = Absence { since: long_ago, vtep: None, answered: Some(Instant::now()), gone: false };
        state.absent.insert("away".into(), absence);
        state.absent.insert("dead".into(), Absence { since: long_ago, vtep: None, answered: None, gone: true });
        let table = BTreeMap::from([
            ("e1".to_string(), (peer("away", "e1", "10.0.0.3"), 1)),
            ("e2".to_string(), (peer("me", "e2", "10.0.0.1"), 1)),
        ]);
        state.cache.peers.insert("k1".into(), table);

        let hosts = peer_hosts(&state, "me");
        let summary: Vec<(&str, Option<String>, &str, Option<u64>)> = hosts
            .iter()
            .map(|h| (h.host.as_str(), h.vtep.map(|v| v.to_string()), state_name(h.liveness), h.last_seen_seconds_ago))
            .collect();
        assert_eq!(
            summary,
            [
                ("away", Some("10.0.0.3".to_string()), "absent", Some(0)),
                ("dead", None, "gone", None),
                ("live", Some("10.0.0.2".to_string()), "live", Some(0)),
            ]
        );
        assert!(hosts[0].absent_for_seconds.is_some_and(|s| s >= 90));
        assert_eq!(hosts.iter().map(|h| h.endpoints).sum::<usize>(), 0, "k1 is no network of this host");
    }
}
