//! The steps of a pass against the copy of the shared store. Work on one network takes its turn
//! (briefly: a network busy with a request is left to the next pass); the state lock is held only
//! to read or update the maps.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use netloom_store::{Condition, Revision, Txn};
use tracing::{debug, info, warn};

use crate::cluster::Shared;
use crate::fabric::VXLAN;
use crate::overlay::Overlay;
use crate::records::{self, short, Mode};
use crate::underlay::Underlay;

/// A host gone, and absent for more than `--dead-host-grace`.
struct GoneHost {
    host: String,
    /// The local-scope networks it is a member of.
    memberships: Vec<String>,
    /// Network key → its endpoints there (peer and name records).
    peers: BTreeMap<String, BTreeSet<String>>,
    /// The tunnel address in its tunnel record, if it has one.
    tunnel: Option<std::net::IpAddr>,
}

impl Overlay {
    /// Every network's peer entries; networks removed on another host removed here.
    pub async fn sync_all(&self) {
        let keys: Vec<String> = self.state().dataplanes.keys().cloned().collect();
        for key in keys {
            self.sync_network(&key).await;
        }
        let gone: Vec<String> = {
            let state = self.state();
            state
                .networks
                .values()
                .filter(|n| n.config.mode == Mode::Global && !state.cache.networks.contains_key(&n.config.key))
                .map(|n| n.config.key.clone())
                .collect()
        };
        for key in gone {
            self.remove_deleted_network(&key).await;
        }
    }

    /// Global scope: a network removed on another host (DeleteNetwork only reaches the host where
    /// `docker network rm` ran) goes here too, once no local endpoint uses it.
    pub async fn remove_deleted_network(&self, key: &str) {
        let Some(docker_id) = self.deleted_network(key).map(|n| n.docker_id) else { return };
        let Some(_turn) = self.background_turn(&docker_id, "removing a network deleted on another host").await else {
            return;
        };
        // Again under the turn: a request may have changed it meanwhile.
        let Some(net) = self.deleted_network(key) else { return };
        if !self.state().endpoints_of(key).is_empty() {
            warn!(network = %short(key), "network was removed from the store but still has endpoints here; keeping it");
            return;
        }
        // Tearing a network down is worth one more question to the store.
        let Ok(shared) = &self.shared else { return };
        match shared.network(key).await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                debug!("checking network {}: {e:#}", short(key));
                return;
            }
        }
        if let Err(e) = self.drop_dataplane(key, net.config.vni).await {
            warn!("{e:#}");
        }
        if let Err(e) = self.delete_network_record(&net.docker_id).await {
            warn!("{e:#}");
        }
        self.state().networks.remove(&net.docker_id);
        info!(network = %short(key), "network removed on another host; removed here");
    }

    /// This host's global-scope network `key`, if the copy of the store no longer has it.
    fn deleted_network(&self, key: &str) -> Option<records::LocalNetwork> {
        let state = self.state();
        if !state.cache.loaded || state.cache.networks.contains_key(key) {
            return None;
        }
        state.network_by_key(key).filter(|n| n.config.mode == Mode::Global).cloned()
    }

    /// This host's endpoints in the peer table: the ones whose veth exists are published, the
    /// rest withdrawn (a record the store lost comes back; a container that vanished goes).
    pub async fn publish_own(&self) {
        let underlay = self.state().underlay.clone();
        let (Ok(shared), Some(underlay)) = (&self.shared, underlay) else { return };
        let networks: Vec<(String, String)> =
            self.state().networks.values().map(|n| (n.docker_id.clone(), n.config.key.clone())).collect();
        for (docker_id, key) in &networks {
            let Some(_turn) = self.background_turn(docker_id, "publishing this host's endpoints").await else {
                continue;
            };
            self.publish_own_in(shared, &underlay, key).await;
        }
        // Peers of this host in networks it no longer has.
        let stale: Vec<(String, String, Revision)> = {
            let state = self.state();
            let mine: BTreeSet<&str> = state.networks.values().map(|n| n.config.key.as_str()).collect();
            state
                .cache
                .peers
                .iter()
                .filter(|(network, _)| !mine.contains(network.as_str()))
                .flat_map(|(network, table)| {
                    table
                        .iter()
                        .filter(|(_, (peer, _))| peer.host == self.host)
                        .map(|(endpoint, (_, revision))| (network.clone(), endpoint.clone(), *revision))
                })
                .collect()
        };
        self.withdraw_stale(shared, stale).await;
        self.withdraw_stale_names(shared).await;
    }

    /// One network's part of [`Self::publish_own`]; the caller holds the network's turn.
    async fn publish_own_in(&self, shared: &Shared, underlay: &Underlay, key: &str) {
        let (endpoints, dp, published) = {
            let state = self.state();
            if state.foreign(key) {
                return;
            }
            (state.endpoints_of(key), state.dataplane(key), state.cache.peers_of(key))
        };
        let mut wanted = BTreeSet::new();
        for ep in &endpoints {
            let Some(dp) = &dp else { continue };
            if !self.fabric.endpoint_alive(dp, ep).await.unwrap_or(true) {
                continue;
            }
            wanted.insert(ep.id.clone());
            let peer = ep.peer(&self.host, underlay.vtep, self.config.port);
            if published.get(&ep.id).map(|(p, _)| p) == Some(&peer) {
                continue;
            }
            let (peer_key, value) = (records::peer_key(key, &ep.id), records::encode(&peer));
            match shared.store.put(&peer_key, value.clone()).await {
                Ok(revision) => {
                    info!(endpoint = %short(&ep.id), "endpoint published");
                    self.state().wrote(peer_key, value, revision);
                }
                Err(e) => debug!("publishing endpoint {}: {e}", short(&ep.id)),
            }
        }
        let stale = published
            .iter()
            .filter(|(endpoint, (peer, _))| peer.host == self.host && !wanted.contains(*endpoint))
            .map(|(endpoint, (_, revision))| (key.to_string(), endpoint.clone(), *revision))
            .collect();
        self.withdraw_stale(shared, stale).await;
    }

    /// Deletes peer records of this host (network key, endpoint, revision), each only if unchanged
    /// since it was read, with their name records.
    async fn withdraw_stale(&self, shared: &Shared, stale: Vec<(String, String, Revision)>) {
        for (network, endpoint, revision) in stale {
            let (key, name_key) = (records::peer_key(&network, &endpoint), records::name_key(&network, &endpoint));
            let txn = Txn::new()
                .when(Condition::Revision(key.clone(), revision))
                .delete(key.clone())
                .delete(name_key.clone());
            match shared.store.txn(txn).await {
                Ok(outcome) if outcome.committed() => {
                    info!(endpoint = %short(&endpoint), "stale endpoint of this host withdrawn");
                    let mut state = self.state();
                    state.deleted(&key);
                    state.deleted(&name_key);
                }
                Ok(_) => {}
                Err(e) => debug!("withdrawing endpoint {}: {e}", short(&endpoint)),
            }
        }
    }

    /// Local scope: networks this host has whose store record is missing, or lacks this host.
    pub async fn restore_local_networks(&self) {
        let Ok(shared) = &self.shared else { return };
        let local: Vec<String> = self
            .state()
            .networks
            .values()
            .filter(|n| n.config.mode == Mode::Local)
            .map(|n| n.docker_id.clone())
            .collect();
        for docker_id in local {
            let Some(_turn) = self.background_turn(&docker_id, "restoring the network's store record").await else {
                continue;
            };
            let missing = {
                let state = self.state();
                state.networks.get(&docker_id).cloned().filter(|net| {
                    state
                        .cache
                        .networks
                        .get(&net.config.key)
                        .is_none_or(|(c, _)| c.members.get(&self.host) != Some(&net.docker_id))
                })
            };
            if let Some(net) = missing {
                if let Err(e) = shared.restore_local(&net.config, &self.host, &net.docker_id).await {
                    warn!("restoring network {} in the store: {e:#}", net.config.key);
                }
            }
        }
    }

    /// Peers of hosts gone (see [`crate::liveness`]) and absent for more than
    /// `--dead-host-grace` are deleted from the store (their kernel entries went when they were
    /// found gone). Each delete holds only while the host is still absent, so a host coming back
    /// keeps its records.
    pub async fn forget_dead_hosts(&self) {
        let Ok(shared) = &self.shared else { return };
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let state = self.state();
            for (host, absence) in &state.absent {
                if !absence.gone || now.saturating_duration_since(absence.since) < self.config.dead_host_grace {
                    continue;
                }
                let memberships = state
                    .cache
                    .networks
                    .values()
                    .filter(|(c, _)| c.members.contains_key(host))
                    .map(|(c, _)| c.key.clone())
                    .collect();
                let published = state.cache.peers.iter().flat_map(|(network, table)| {
                    table.iter().filter(|(_, (p, _))| p.host == *host).map(move |(e, _)| (network, e))
                });
                let named = state.cache.names.iter().flat_map(|(network, table)| {
                    table.iter().filter(|(_, (n, _))| n.host == *host).map(move |(e, _)| (network, e))
                });
                let mut peers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for (network, endpoint) in published.chain(named) {
                    peers.entry(network.clone()).or_default().insert(endpoint.clone());
                }
                let tunnel = state.cache.tunnels.get(host).map(|(t, _)| t.tunnel_ip);
                gone.push(GoneHost { host: host.clone(), memberships, peers, tunnel });
            }
        }
        for GoneHost { host, memberships, peers, tunnel } in gone {
            if let Some(tunnel_ip) = tunnel {
                self.forget_tunnel_of(shared, &host, tunnel_ip).await;
            }
            // Local-scope networks it was a member of: the last member out deletes them (a host
            // that comes back writes its membership again).
            for key in memberships {
                match shared.leave_local(&key, &host).await {
                    Ok(()) => info!(host = %host, network = %key, "host gone for good removed from the network"),
                    Err(e) => debug!("removing host {host} from network {key}: {e:#}"),
                }
            }
            for (network, endpoints) in peers {
                let mut txn = Txn::new().when(Condition::Absent(records::host_key(&host)));
                for endpoint in &endpoints {
                    txn =
                        txn.delete(records::peer_key(&network, endpoint)).delete(records::name_key(&network, endpoint));
                }
                match shared.store.txn(txn).await {
                    Ok(outcome) if outcome.committed() => {
                        info!(host = %host, network = %short(&network), "peers of a host gone for good deleted")
                    }
                    Ok(_) => {}
                    Err(e) => debug!("deleting peers of host {host}: {e}"),
                }
            }
        }
    }

    /// A gone host's tunnel record and its claim of a tunnel address, each only while the host is
    /// still absent.
    async fn forget_tunnel_of(&self, shared: &Shared, host: &str, tunnel_ip: std::net::IpAddr) {
        let mut txn = Txn::new().when(Condition::Absent(records::host_key(host))).delete(records::tunnel_key(host));
        let claim = records::tunnel_ip_key(tunnel_ip);
        match shared.store.get(&claim).await {
            Ok(Some(kv)) if kv.value == host.as_bytes() => {
                txn = txn.when(Condition::Revision(claim.clone(), kv.revision)).delete(claim);
            }
            Ok(_) => {}
            Err(e) => {
                debug!("reading the tunnel address claim of host {host}: {e}");
                return;
            }
        }
        match shared.store.txn(txn).await {
            Ok(outcome) if outcome.committed() => {
                info!(host = %host, "tunnel record of a host gone for good deleted");
                self.state().deleted(&records::tunnel_key(host));
            }
            Ok(_) => {}
            Err(e) => debug!("deleting the tunnel record of host {host}: {e}"),
        }
    }

    /// Encrypted networks of this host whose kernel objects could not be made (their tunnel could
    /// not start, say, at a start-up with the store unreachable) are tried again.
    pub async fn retry_missing_dataplanes(&self) {
        let missing: Vec<_> = {
            let state = self.state();
            state
                .networks
                .values()
                .filter(|n| n.config.encrypted && !state.dataplanes.contains_key(&n.config.key))
                .cloned()
                .collect()
        };
        for net in missing {
            let Some(_turn) = self.background_turn(&net.docker_id, "setting up the network again").await else {
                continue;
            };
            if self.state().dataplanes.contains_key(&net.config.key) {
                continue;
            }
            match self.ensure_dataplane(&net.config).await {
                Ok(()) => info!(network = %short(&net.config.key), "network set up again"),
                Err(e) => debug!(network = %short(&net.config.key), "setting up the network again: {e}"),
            }
        }
    }

    /// A network whose VXLAN link went missing (deleted by hand, say) gets it back.
    pub async fn repair_dataplanes(&self) {
        let dataplanes: Vec<_> = self.state().dataplanes.iter().map(|(k, dp)| (k.clone(), dp.clone())).collect();
        for (key, dp) in dataplanes {
            match dp.netlink.link(VXLAN).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    debug!("checking network {}: {e:#}", short(&key));
                    continue;
                }
            }
            let Some(net) = self.state().network_by_key(&key).cloned() else { continue };
            let Some(_turn) = self.background_turn(&net.docker_id, "repairing the network's VXLAN link").await else {
                continue;
            };
            warn!(network = %short(&key), "the network's VXLAN link is missing; making it again");
            {
                let mut state = self.state();
                // Removed or remade by a request meanwhile: not this pass's to touch.
                if !state.dataplanes.get(&key).is_some_and(|d| std::sync::Arc::ptr_eq(d, &dp)) {
                    continue;
                }
                state.dataplanes.remove(&key);
            }
            if let Err(e) = self.ensure_dataplane(&net.config).await {
                warn!(network = %short(&key), "{e}");
            }
        }
    }
}
