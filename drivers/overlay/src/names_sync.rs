//! Following Docker for container names (local scope): the names of this host's endpoints'
//! containers are written to the store as name records (next to their peer records, and never
//! without one), records of endpoints this host no longer holds are deleted, and this host's
//! containers are told to the DNS directory as askers. A pass runs shortly after Docker's network
//! events (a `docker run` brings several at once) and every reconcile interval. While dockerd
//! cannot be reached, what is published stays.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netloom_plugin_api::engine::{Engine, EngineError};
use netloom_store::{Condition, Revision, Txn, TxnOutcome};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::cluster::Shared;
use crate::dns::Asker;
use crate::names;
use crate::overlay::Overlay;
use crate::records::{self, short, NameRecord};
use crate::state::State;

/// Docker's bridge for the containers of overlay networks: where their DNS queries come from.
const GATEWAY_BRIDGE: &str = "docker_gwbridge";
/// Events arriving within this are handled by one pass.
const DEBOUNCE: Duration = Duration::from_millis(50);
const EVENTS_BACKOFF_MIN: Duration = Duration::from_millis(250);
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(10);

impl Overlay {
    /// Runs for good: passes, woken by Docker's events (`driver`: the name Docker knows this
    /// driver by).
    pub async fn follow_container_names(&self, engine: &Engine, driver: &str) {
        let wake = Notify::new();
        tokio::join!(self.names_passes(engine, driver, &wake), watch_network_events(engine, driver, &wake));
    }

    async fn names_passes(&self, engine: &Engine, driver: &str, wake: &Notify) {
        let mut unreachable = false;
        loop {
            match self.names_pass(engine, driver).await {
                Ok(()) if unreachable => {
                    info!("dockerd answers again; container names followed");
                    unreachable = false;
                }
                Ok(()) => {}
                Err(e) if !unreachable => {
                    warn!("container names: {e}; the names published stay until dockerd answers");
                    unreachable = true;
                }
                Err(e) => debug!("container names: {e}"),
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.config.reconcile_every) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
    }

    /// One pass: Docker's view of this driver's networks and docker_gwbridge, against the store's.
    async fn names_pass(&self, engine: &Engine, driver: &str) -> Result<(), EngineError> {
        let Ok(shared) = &self.shared else { return Ok(()) };
        let started = Instant::now();
        let overlays = engine.networks_of_driver(driver).await?;
        let gwbridge = engine.network(GATEWAY_BRIDGE).await?;
        let (keys, held) = {
            let state = self.state();
            let keys: BTreeMap<String, String> = state
                .networks
                .values()
                .filter(|n| !state.foreign(&n.config.key))
                .map(|n| (n.docker_id.clone(), n.config.key.clone()))
                .collect();
            (keys, state.endpoints.keys().cloned().collect::<BTreeSet<String>>())
        };
        // Before the containers are inspected: dockerd answers that only once a starting
        // container has started, and by then it may already be asking.
        self.set_docker_askers(names::askers(&overlays, gwbridge.as_ref(), &BTreeMap::new(), &keys));
        if let Some(directory) = &self.directory {
            // Other containers of this host (a default-bridge one asks the --dns servers itself)
            // have their other names forwarded.
            directory.set_container_subnets(engine.local_subnets().await?);
        }
        let mut more = BTreeMap::new();
        let mut wanted = Vec::new();
        let mut docker_names = BTreeMap::new();
        for network in &overlays {
            let Some(key) = keys.get(&network.id) else { continue };
            docker_names.insert(key.clone(), network.name.clone());
            for endpoint in &network.endpoints {
                if endpoint.container_id.is_empty() || !held.contains(&endpoint.endpoint_id) {
                    continue;
                }
                // None: the container went meanwhile.
                let Some((found, addresses)) = engine.container_on(&endpoint.container_id, &network.id).await? else {
                    continue;
                };
                more.insert(endpoint.container_id.clone(), addresses);
                let record = NameRecord {
                    host: self.host.clone(),
                    endpoint: endpoint.endpoint_id.clone(),
                    container: endpoint.container_id.clone(),
                    name: found.name,
                    aliases: found.aliases,
                    network_name: network.name.clone(),
                };
                wanted.push((key.clone(), record));
            }
        }
        if !more.is_empty() {
            self.set_docker_askers(names::askers(&overlays, gwbridge.as_ref(), &more, &keys));
        }
        let plan = {
            let mut state = self.state();
            state.docker_names = docker_names;
            names::plan(wanted, &state.cache.names, &self.host, &held_endpoints(&state))
        };
        let (writes, deletes) = (plan.writes.len(), plan.deletes.len());
        self.write_names(shared, plan.writes).await;
        self.delete_names(shared, plan.deletes).await;
        self.refresh_names();
        debug!(writes, deletes, elapsed_ms = started.elapsed().as_millis() as u64, "container names pass");
        Ok(())
    }

    /// Each record is written only while its endpoint's peer record exists, so a name never
    /// outlives its endpoint (one removed meanwhile takes its peer record with it).
    async fn write_names(&self, shared: &Shared, writes: Vec<(String, NameRecord)>) {
        for (key, record) in writes {
            let name_key = records::name_key(&key, &record.endpoint);
            let value = records::encode(&record);
            let txn = Txn::new()
                .when(Condition::Exists(records::peer_key(&key, &record.endpoint)))
                .put(name_key.clone(), value.clone());
            match shared.store.txn(txn).await {
                Ok(TxnOutcome::Committed(revision)) => {
                    info!(endpoint = %short(&record.endpoint), name = %record.name, aliases = ?record.aliases,
                          network = %record.network_name, "container name published");
                    self.state().wrote(name_key, value, revision);
                }
                Ok(_) => debug!(endpoint = %short(&record.endpoint), "endpoint not published yet; its name waits"),
                Err(e) => debug!(endpoint = %short(&record.endpoint), "publishing the container's name: {e}"),
            }
        }
    }

    /// Deletes name records of this host, each only if unchanged since it was read.
    async fn delete_names(&self, shared: &Shared, deletes: Vec<(String, String, Revision)>) {
        for (key, endpoint, revision) in deletes {
            let name_key = records::name_key(&key, &endpoint);
            let txn = Txn::new().when(Condition::Revision(name_key.clone(), revision)).delete(name_key.clone());
            match shared.store.txn(txn).await {
                Ok(outcome) if outcome.committed() => {
                    info!(endpoint = %short(&endpoint), "container name of a removed endpoint withdrawn");
                    self.state().deleted(&name_key);
                }
                Ok(_) => {}
                Err(e) => debug!(endpoint = %short(&endpoint), "withdrawing the container's name: {e}"),
            }
        }
    }

    /// This host's name records whose endpoint it no longer holds, deleted (also without dockerd).
    pub async fn withdraw_stale_names(&self, shared: &Shared) {
        let stale = {
            let state = self.state();
            names::stale(&state.cache.names, &self.host, &held_endpoints(&state))
        };
        self.delete_names(shared, stale).await;
    }

    /// This host's containers as Docker lists them, with those learnt at Join whose endpoint is
    /// still here.
    fn set_docker_askers(&self, askers: Vec<Asker>) {
        let Some(directory) = &self.directory else { return };
        let askers = {
            let mut state = self.state();
            state.docker_askers = askers;
            let State { joined_askers, endpoints, .. } = &mut *state;
            joined_askers.retain(|endpoint, _| endpoints.contains_key(endpoint));
            all_askers(&state)
        };
        directory.set_askers(askers);
    }

    /// A container that joined `endpoint` may ask from its docker_gwbridge `address` at once,
    /// before Docker lists it.
    pub fn learn_asker(&self, endpoint: &str, address: IpAddr) {
        let Some(directory) = &self.directory else { return };
        let askers = {
            let mut state = self.state();
            let Some(network) = state.endpoints.get(endpoint).map(|e| e.network.clone()) else { return };
            let asker = Asker { addresses: vec![address], networks: BTreeSet::from([network]) };
            state.joined_askers.insert(endpoint.to_string(), asker);
            all_askers(&state)
        };
        directory.set_askers(askers);
    }

    /// The DNS directory's endpoints rebuilt from the copy of the store.
    pub fn refresh_names(&self) {
        let Some(directory) = &self.directory else { return };
        let endpoints = {
            let state = self.state();
            names::named_endpoints(&state.cache, &state.docker_names)
        };
        directory.set_endpoints(endpoints);
    }
}

fn all_askers(state: &State) -> Vec<Asker> {
    state.docker_askers.iter().chain(state.joined_askers.values()).cloned().collect()
}

/// (network key, endpoint id) of every endpoint this host holds.
fn held_endpoints(state: &State) -> BTreeSet<(String, String)> {
    state.endpoints.values().map(|e| (e.network.clone(), e.id.clone())).collect()
}

/// Wakes the passes on Docker's events about this driver's networks and docker_gwbridge, and
/// once after each (re)connection, since events may have been missed meanwhile.
async fn watch_network_events(engine: &Engine, driver: &str, wake: &Notify) {
    let mut backoff = EVENTS_BACKOFF_MIN;
    loop {
        match engine.network_events().await {
            Ok(mut events) => {
                let since = Instant::now();
                wake.notify_one();
                while let Some(event) = events.recv().await {
                    let ours = event.driver.as_deref().is_none_or(|d| d == driver)
                        || event.network_name.as_deref() == Some(GATEWAY_BRIDGE);
                    if ours {
                        debug!(action = event.action, network = %short(&event.network_id), "Docker network event");
                        wake.notify_one();
                    }
                }
                if since.elapsed() > EVENTS_BACKOFF_MAX {
                    backoff = EVENTS_BACKOFF_MIN;
                }
                debug!("Docker's event stream ended; reconnecting in {backoff:?}");
            }
            Err(e) => debug!("cannot follow Docker's events: {e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(EVENTS_BACKOFF_MAX);
    }
}
