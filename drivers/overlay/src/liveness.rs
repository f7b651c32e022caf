//! A driver that is down is not a host that is gone.
//!
//! A host whose lease record left the store (its driver was killed, or stopped) is *absent*: its
//! containers may well run on, so its peers keep their FDB and neighbour entries here, and its
//! VTEP stays in the VXLAN guard's peer set. It is *gone* once its VTEP has not answered an ICMP
//! echo for `--peer-grace` (counted from when this host first saw it absent): then its entries
//! are removed here, and after `--dead-host-grace` its records in the store too. An absent
//! host's endpoint yields at once to a newer endpoint claiming its address or MAC (see
//! [`crate::peers::desired`]). A host whose lease record comes back is live again, whatever it was.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::cache::Cache;
use crate::overlay::Overlay;
use crate::probe;
use crate::state::State;

/// How this host judges another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its lease record is in the store.
    Live,
    /// Its lease expired: its driver is down, its containers may run on.
    Absent,
    /// Absent, and its VTEP has not answered for `--peer-grace`.
    Gone,
}

/// What this host knows of an absent host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absence {
    /// When this host first saw it without a lease record.
    pub since: Instant,
    /// Its tunnel endpoint (from its last lease record or its peer records), probed.
    pub vtep: Option<IpAddr>,
    /// The last answer from its VTEP.
    pub answered: Option<Instant>,
    pub gone: bool,
}

impl Absence {
    /// Whether `grace` has passed without a sign of life.
    fn silent_for(&self, grace: Duration, now: Instant) -> bool {
        let last = self.answered.map_or(self.since, |t| t.max(self.since));
        now.saturating_duration_since(last) >= grace
    }
}

impl State {
    pub fn liveness(&self, host: &str) -> Liveness {
        if self.cache.hosts.contains_key(host) {
            Liveness::Live
        } else if self.gone_at_once || self.absent.get(host).is_some_and(|a| a.gone) {
            Liveness::Gone
        } else {
            Liveness::Absent
        }
    }

    /// The VTEPs of absent (not gone) hosts with endpoints: still members for the VXLAN guard.
    pub fn absent_vteps(&self) -> BTreeSet<IpAddr> {
        self.cache
            .peers
            .values()
            .flat_map(|table| table.values())
            .filter(|(peer, _)| self.liveness(&peer.host) == Liveness::Absent)
            .map(|(peer, _)| peer.vtep)
            .collect()
    }
}

/// Every other host the store mentions (peers, local-scope members, tunnel records) without a
/// lease record, with the VTEP its peer (or tunnel) records give.
pub fn absent_hosts(cache: &Cache, own_host: &str) -> BTreeMap<String, Option<IpAddr>> {
    let mut absent: BTreeMap<String, Option<IpAddr>> = BTreeMap::new();
    for (peer, _) in cache.peers.values().flat_map(|table| table.values()) {
        if peer.host != own_host && !cache.hosts.contains_key(&peer.host) {
            absent.insert(peer.host.clone(), Some(peer.vtep));
        }
    }
    for (host, (tunnel, _)) in &cache.tunnels {
        if host != own_host && !cache.hosts.contains_key(host) {
            absent.entry(host.clone()).or_insert(Some(tunnel.endpoint.ip()));
        }
    }
    for (config, _) in cache.networks.values() {
        for host in config.members.keys() {
            if host != own_host && !cache.hosts.contains_key(host) {
                absent.entry(host.clone()).or_insert(None);
            }
        }
    }
    absent
}

/// How often absent hosts are probed: ten times per grace, between 1 and 10 seconds.
pub fn probe_every(grace: Duration) -> Duration {
    (grace / 10).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

impl Overlay {
    pub async fn track_hosts_periodically(&self) {
        let every = probe_every(self.config.peer_grace);
        let mut probe_broken = false;
        loop {
            self.track_hosts(every.min(Duration::from_secs(1)), &mut probe_broken).await;
            tokio::time::sleep(every).await;
        }
    }

    /// One round: absent hosts noted, their VTEPs probed, the silent ones past the grace gone
    /// (their entries removed here at once).
    pub async fn track_hosts(&self, wait: Duration, probe_broken: &mut bool) {
        let targets = self.note_absent_hosts();
        let mut answered = BTreeSet::new();
        if !targets.is_empty() {
            match tokio::task::spawn_blocking(move || probe::answering(&targets, wait)).await {
                Ok(Ok(set)) => {
                    answered = set;
                    *probe_broken = false;
                }
                Ok(Err(e)) if !*probe_broken => {
                    warn!("cannot probe absent hosts' tunnel endpoints: {e:#}; an absent host counts as gone after --peer-grace");
                    *probe_broken = true;
                }
                Ok(Err(_)) => {}
                Err(e) => warn!("probing absent hosts: {e}"),
            }
        }
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut state = self.state();
            for (host, absence) in state.absent.iter_mut().filter(|(_, a)| !a.gone) {
                if absence.vtep.is_some_and(|vtep| answered.contains(&vtep)) {
                    absence.answered = Some(now);
                } else if absence.silent_for(self.config.peer_grace, now) {
                    absence.gone = true;
                    gone.push((host.clone(), absence.vtep));
                }
            }
        }
        for (host, vtep) in &gone {
            warn!(host = %host, vtep = ?vtep, grace = ?self.config.peer_grace,
                  "host gone: its driver stopped renewing its lease and its tunnel endpoint has not answered since; its peers' entries are removed");
        }
        if !gone.is_empty() {
            self.sync_guard(false).await;
            self.sync_tunnel_peers().await;
            self.sync_all().await;
        }
    }

    /// Brings the list of absent hosts in line with the copy of the store; returns the VTEPs to
    /// probe (absent hosts not yet gone).
    fn note_absent_hosts(&self) -> BTreeSet<IpAddr> {
        let now = Instant::now();
        let mut state = self.state();
        if !state.cache.loaded {
            return BTreeSet::new();
        }
        let state = &mut *state;
        for (host, (record, _)) in &state.cache.hosts {
            state.vteps.insert(host.clone(), record.vtep);
        }
        let absent = absent_hosts(&state.cache, &self.host);
        let cache = &state.cache;
        state.absent.retain(|host, absence| {
            let still = absent.contains_key(host);
            if !still && cache.hosts.contains_key(host) {
                info!(host = %host, was_gone = absence.gone, "host renews its lease again; its peers are live");
            }
            still
        });
        for (host, vtep) in absent {
            if state.absent.contains_key(&host) {
                continue;
            }
            let vtep = state.vteps.get(&host).copied().or(vtep);
            let gone = state.gone_at_once;
            if gone {
                info!(host = %host, "host's lease expired: it is gone (--peer-grace 0)");
            } else {
                info!(host = %host, vtep = ?vtep, grace = ?self.config.peer_grace,
                      "host's lease expired: keeping its peers' entries while its tunnel endpoint answers");
            }
            state.absent.insert(host, Absence { since: now, vtep, answered: None, gone });
        }
        state.absent.values().filter(|a| !a.gone).filter_map(|a| a.vtep).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_from_the_last_answer() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(5);
        let mut absence = Absence { since: t0, vtep: None, answered: None, gone: false };
        assert!(!absence.silent_for(grace, t0 + Duration::from_secs(4)));
        assert!(absence.silent_for(grace, t0 + Duration::from_secs(5)));
        absence.answered = Some(t0 + Duration::from_secs(3));
        assert!(!absence.silent_for(grace, t0 + Duration::from_secs(7)));
        assert!(absence.silent_for(grace, t0 + Duration::from_secs(8)));
        assert_eq!(probe_every(Duration::from_secs(300)), Duration::from_secs(10));
        assert_eq!(probe_every(Duration::from_secs(4)), Duration::from_secs(1));
        assert_eq!(probe_every(Duration::ZERO), Duration::from_secs(1));
    }
}
