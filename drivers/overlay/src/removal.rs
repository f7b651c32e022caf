//! Removing networks, for Docker's DeleteNetwork and for the reconciliation against Docker
//! (which calls the same handlers for what this host holds and Docker no longer has): every
//! step works on whatever is left, so a half-removed network is finished, and a second call
//! finds nothing to do.
//!
//! A global-scope network (Docker 20.10's cluster store) is shown by every host's Docker, so one
//! that this host's Docker no longer has is gone cluster-wide, unless dockerd cannot read its
//! cluster store just then (it leaves global networks out of its list meanwhile). So it is kept
//! whole while a container here is still attached to it (Docker removes a network only once it
//! has no endpoints); otherwise this host's part goes, and its store record too unless another
//! live host publishes endpoints on it (see [`crate::cluster::Shared::release_global`]).

use netloom_plugin_api::engine::{HeldEndpoint, HeldNetwork};
use netloom_plugin_api::PluginResult;
use tracing::{debug, info, warn};

use crate::cluster::GlobalRelease;
use crate::overlay::{store_error, Overlay};
use crate::records::{self, short, LocalNetwork, Mode};

impl Overlay {
    /// The networks and endpoints this host holds, by Docker id; `global` for cluster-store ones.
    pub fn held(&self) -> Vec<HeldNetwork> {
        let state = self.state();
        let mut held: Vec<HeldNetwork> = state
            .networks
            .values()
            .map(|n| HeldNetwork { id: n.docker_id.clone(), global: n.config.mode == Mode::Global, endpoints: vec![] })
            .collect();
        for ep in state.endpoints.values() {
            let endpoint = HeldEndpoint { id: ep.id.clone() };
            match held.iter_mut().find(|n| n.id == ep.docker_network) {
                Some(network) => network.endpoints.push(endpoint),
                // An endpoint record whose network record is gone: held all the same, so that
                // it is removed once Docker no longer has it.
                None => held.push(HeldNetwork {
                    id: ep.docker_network.clone(),
                    global: self.config.mode == Mode::Global,
                    endpoints: vec![endpoint],
                }),
            }
        }
        held
    }

    /// DeleteNetwork: the store's record first (this host's membership, or the global record as
    /// judged above), then this host's endpoints, kernel objects and private records.
    pub async fn delete_network(&self, docker_id: &str) -> PluginResult<()> {
        let _turn = self.turn(docker_id, format!("DeleteNetwork of {}", short(docker_id))).await?;
        let net = self.state().networks.get(docker_id).cloned();
        let Some(net) = net else {
            if self.config.mode == Mode::Global {
                // `docker network rm` ran on a host that never had a container on the network:
                // the store record is this host's to remove all the same.
                self.release_global_record(docker_id).await?;
            }
            self.remove_endpoints_of(docker_id, None).await;
            debug!(network = %short(docker_id), "no local state for the network");
            return Ok(());
        };
        if net.config.mode == Mode::Global && self.has_live_endpoints(&net).await {
            // dockerd 20.10 leaves global networks out of its list while it cannot read its
            // cluster store, and Docker removes a network only once it has no endpoints: a
            // container still attached here means the network is not gone.
            if self.state().kept_networks.insert(net.docker_id.clone()) {
                warn!(network = %short(&net.docker_id),
                      "Docker does not list this global network, but containers here are still attached to it; keeping it");
            }
            return Ok(());
        }
        match net.config.mode {
            Mode::Global => self.release_global_record(&net.config.key).await?,
            Mode::Local => self.shared()?.leave_local(&net.config.key, &self.host).await.map_err(store_error)?,
        }
        self.remove_endpoints_of(docker_id, Some(&net.config.key)).await;
        self.drop_dataplane(&net.config.key, net.config.vni).await?;
        self.delete_network_record(&net.docker_id).await?;
        {
            let mut state = self.state();
            state.networks.remove(&net.docker_id);
            state.kept_networks.remove(&net.docker_id);
        }
        info!(network = %short(&net.docker_id), vni = net.config.vni, "network removed");
        Ok(())
    }

    /// Whether any of this host's endpoints on the network still has its veth pair (its
    /// container is attached, or about to be).
    async fn has_live_endpoints(&self, net: &LocalNetwork) -> bool {
        let (endpoints, dp) = {
            let state = self.state();
            (state.endpoints_of(&net.config.key), state.dataplane(&net.config.key))
        };
        let Some(dp) = dp else { return false };
        for ep in &endpoints {
            // Unknown (netlink failed) counts as attached: nothing is torn down on a guess.
            if self.fabric.endpoint_alive(&dp, ep).await.unwrap_or(true) {
                return true;
            }
        }
        false
    }

    async fn release_global_record(&self, key: &str) -> PluginResult<()> {
        let shared = self.shared()?;
        match shared.release_global(key, &self.host).await.map_err(store_error)? {
            GlobalRelease::Deleted => self.state().deleted(&records::network_key(key)),
            GlobalRelease::KeptFor(hosts) => warn!(
                network = %short(key), hosts = ?hosts,
                "network removed from this host only: other live hosts still have endpoints on it, so its store record stays"
            ),
        }
        Ok(())
    }

    /// This host's endpoints on a network being removed (normally none: Docker removes them
    /// first): veths, published ports, peer records and private records.
    async fn remove_endpoints_of(&self, docker_id: &str, key: Option<&str>) {
        let (endpoints, dp) = {
            let state = self.state();
            let endpoints: Vec<_> =
                state.endpoints.values().filter(|e| e.docker_network == docker_id).cloned().collect();
            (endpoints, key.and_then(|k| state.dataplane(k)))
        };
        for ep in endpoints {
            self.withdraw_ports(&ep.id).await;
            if let Err(e) = self.fabric.teardown_endpoint(dp.as_deref(), &ep).await {
                warn!(endpoint = %short(&ep.id), "{e:#}");
            }
            self.unpublish(&ep).await;
            if let Err(e) = self.delete_endpoint_record(&ep).await {
                warn!(endpoint = %short(&ep.id), "{e}");
            }
            self.state().endpoints.remove(&ep.id);
            info!(endpoint = %short(&ep.id), network = %short(docker_id), "endpoint removed with its network");
        }
    }
}
