//! A network on this host: its kernel objects, its peer entries as the copy of the store says,
//! and this host's endpoints in the shared peer table. Callers hold the network's turn.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Result;
use netloom_plugin_api::locks::LOCK_WAIT;
use netloom_plugin_api::{PluginError, PluginResult};
use netloom_store::Txn;
use tracing::{debug, info, warn};

use crate::options::Encapsulation;
use crate::overlay::{store_error, Overlay};
use crate::peers;
use crate::records::{self, short, LocalEndpoint, LocalNetwork, NetworkConfig, PeerRecord};

impl Overlay {
    /// The network's kernel objects on this host, made if missing, with their peer entries.
    pub async fn ensure_dataplane(&self, config: &NetworkConfig) -> PluginResult<()> {
        if self.state().dataplanes.get(&config.key).is_some_and(|dp| dp.vni == config.vni) {
            return Ok(());
        }
        let underlay = self.underlay().await?;
        let overhead = Encapsulation { encrypted: config.encrypted, underlay_v6: underlay.vtep.is_ipv6() }.overhead();
        if underlay.mtu < config.mtu + overhead {
            warn!(
                network = %short(&config.key),
                "the network's MTU {} needs an underlay MTU of {}, but {} has {}; large packets will be fragmented",
                config.mtu, config.mtu + overhead, underlay.iface, underlay.mtu
            );
        }
        let failed = |e: anyhow::Error| PluginError::new(format!("{e:#}"));
        if config.encrypted {
            // Held until the network's links exist, so the tunnel is not removed under them.
            let crypt = self.ensure_tunnel(&underlay).await?;
            let host = crypt.as_ref().ok_or_else(|| PluginError::new("the tunnel vanished"))?;
            let dp = self.fabric.ensure_network(config, host.tunnel_ip, Some(&host.netlink)).await.map_err(failed)?;
            self.state().dataplanes.insert(config.key.clone(), Arc::new(dp));
        } else {
            let dp = self.fabric.ensure_network(config, underlay.vtep, None).await.map_err(failed)?;
            self.state().dataplanes.insert(config.key.clone(), Arc::new(dp));
        }
        self.sync_network(&config.key).await;
        Ok(())
    }

    /// Removes the network's kernel objects (after any peer sync of it has finished).
    pub async fn drop_dataplane(&self, key: &str, vni: u32) -> Result<()> {
        let _fdb = self
            .fdb_turns
            .take(key, &format!("the peer entries of network {}", short(key)), "teardown", LOCK_WAIT)
            .await;
        let dp = self.state().dataplanes.remove(key);
        let result = self.fabric.teardown_network(vni, dp).await;
        drop(_fdb);
        self.release_tunnel_if_unused().await;
        result
    }

    /// Makes one network's FDB and neighbour entries what the peer table says. What is wanted is
    /// read once the network's FDB turn is taken, so the last to program it used the newest copy.
    pub async fn sync_network(&self, key: &str) {
        let what = format!("the peer entries of network {}", short(key));
        let _fdb = match self.fdb_turns.take(key, &what, "peer sync", LOCK_WAIT).await {
            Ok(turn) => turn,
            Err(e) => {
                warn!(network = %short(key), "{e}");
                return;
            }
        };
        let (dp, want, local_macs) = {
            let state = self.state();
            if !state.cache.loaded {
                return;
            }
            let Some(dp) = state.dataplane(key) else { return };
            let want = if state.foreign(key) {
                debug!(network = %short(key), "the store's record is another network: no remote peers");
                peers::Desired::default()
            } else {
                let tunnel_ips = dp.encrypted.then(|| state.cache.tunnel_ips());
                let liveness = |h: &str| state.liveness(h);
                peers::desired(&state.cache.peers_of(key), liveness, &self.host, self.config.port, tunnel_ips.as_ref())
            };
            let local_macs: Vec<[u8; 6]> = state
                .endpoints
                .values()
                .filter(|e| e.network == key)
                .filter_map(|e| netloom_dataplane::mac::parse(&e.mac).ok())
                .collect();
            (dp, want, local_macs)
        };
        let (fdb, neighbours) = match self.fabric.kernel_entries(&dp).await {
            Ok(entries) => entries,
            Err(e) => {
                warn!(network = %short(key), "reading the kernel's entries: {e:#}");
                return;
            }
        };
        let changes = peers::diff(&want, &fdb, &neighbours);
        if !changes.is_empty() {
            if let Err(e) = self.fabric.apply(&dp, &changes).await {
                warn!("{e:#}");
            }
        }
        if let Err(e) = self.fabric.forget_moved_here(&dp, &local_macs).await {
            warn!("{e:#}");
        }
    }

    /// Global scope: a network this host's driver never saw created, from the shared store.
    pub async fn adopt(&self, docker_id: &str) -> PluginResult<LocalNetwork> {
        let shared = self.shared()?;
        let cached = self.state().cache.networks.get(docker_id).map(|(config, _)| config.clone());
        let config = match cached {
            Some(config) => config,
            None => {
                let (config, revision) = shared.network(docker_id).await.map_err(store_error)?.ok_or_else(|| {
                    PluginError::new(format!(
                        "network {} is not in loom-overlay's store ({}); was it created with another --store, or removed?",
                        short(docker_id),
                        shared.describe()
                    ))
                })?;
                self.state().wrote(records::network_key(docker_id), records::encode(&config), revision);
                config
            }
        };
        let record = LocalNetwork { docker_id: docker_id.to_string(), config };
        self.put_network(&record).await?;
        self.state().networks.insert(docker_id.to_string(), record.clone());
        info!(network = %short(docker_id), vni = record.config.vni, "network created on another host, set up here");
        Ok(record)
    }

    /// Refuses an address that another host's endpoint holds on the network. Docker's default
    /// IPAM is per host in local scope, so every host hands out the same first addresses; two
    /// endpoints with one address would each take the other's traffic. Read from the store, or
    /// from this host's copy of it when the store does not answer.
    pub async fn check_address_free(&self, key: &str, ips: &[IpAddr]) -> PluginResult<()> {
        let Ok(shared) = &self.shared else { return Ok(()) };
        if ips.is_empty() {
            return Ok(());
        }
        let peers: Vec<PeerRecord> = match shared.store.list(&records::peers_prefix(key)).await {
            Ok(list) => list.iter().filter_map(|kv| records::decode(&kv.key, &kv.value).ok()).collect(),
            Err(e) => {
                warn!(network = %short(key), "checking the address against other hosts' endpoints: {e}; using this host's copy of the store");
                self.state().cache.peers_of(key).into_values().map(|(p, _)| p).collect()
            }
        };
        let holder = peers.iter().filter(|p| p.host != self.host).find_map(|p| {
            let held = [p.ipv4, p.ipv6].into_iter().flatten().find(|ip| ips.contains(ip))?;
            Some((held, p))
        });
        match holder {
            None => Ok(()),
            Some((ip, peer)) => Err(PluginError::new(format!(
                "address {ip} is already used on this overlay by endpoint {} on host {}: with Docker's default IPAM \
                 each host hands out the same addresses; create the network with --ipam-driver loom-ipam on every host \
                 (or give each container its own --ip)",
                short(&peer.endpoint),
                peer.host
            ))),
        }
    }

    /// Publishes an endpoint in the peer table; if the store can't be reached the reconciler
    /// does it later.
    pub async fn publish(&self, ep: &LocalEndpoint) {
        let underlay = self.state().underlay.clone();
        let (Ok(shared), Some(underlay)) = (&self.shared, underlay) else { return };
        if self.state().foreign(&ep.network) {
            warn!(endpoint = %short(&ep.id), "not published: the store's record of its network is another network");
            return;
        }
        let peer = records::encode(&ep.peer(&self.host, underlay.vtep, self.config.port));
        let key = records::peer_key(&ep.network, &ep.id);
        match shared.store.put(&key, peer.clone()).await {
            Ok(revision) => self.state().wrote(key, peer, revision),
            Err(e) => warn!(endpoint = %short(&ep.id), "publishing the endpoint: {e}; retrying in the background"),
        }
    }

    /// Withdraws an endpoint's peer record and its container's names together.
    pub async fn unpublish(&self, ep: &LocalEndpoint) {
        let Ok(shared) = &self.shared else { return };
        let (key, name_key) = (records::peer_key(&ep.network, &ep.id), records::name_key(&ep.network, &ep.id));
        match shared.store.txn(Txn::new().delete(key.clone()).delete(name_key.clone())).await {
            Ok(_) => {
                let mut state = self.state();
                state.deleted(&key);
                state.deleted(&name_key);
            }
            Err(e) => warn!(endpoint = %short(&ep.id), "withdrawing the endpoint: {e}; retrying in the background"),
        }
    }
}
