//! The reconciliation loop: a pass at start, every interval, on Docker's network events
//! (debounced) and when a request came with an empty body; what Docker has not had for two
//! passes `confirm_after` apart is released through the driver's own handlers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::driver::{IpamDriver, NetworkDriver};
use crate::engine::client::{Engine, EngineError};
use crate::engine::judge::{missing_allocations, missing_networks, unseen_global_allocations, Subject, Suspects};
use crate::engine::model::DockerNetwork;
use crate::engine::reconcile::HeldAllocation;
use crate::engine::reconcile::ReconcileConfig;
use crate::ids::short_id;
use crate::server::Plugin;
use crate::wire::ipam::{ReleaseAddressRequest, ReleasePoolRequest};
use crate::wire::network::{EndpointRef, NetworkRef};

/// Events often come in bursts (a `docker run` is connect, then more): one pass after the burst.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(500);

/// Reconnecting to Docker's event stream waits from this, doubling up to `EVENTS_BACKOFF_MAX`.
const EVENTS_BACKOFF_MIN: Duration = Duration::from_secs(1);
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a stopping driver waits for a pass that is releasing something.
const STOP_GRACE: Duration = Duration::from_secs(20);

static EMPTY_REQUEST: Notify = Notify::const_new();

/// A request came with an empty body: dockerd 20.10 retries a call the driver died during that
/// way, and then goes on as if it had succeeded, so whatever the call was about may be gone from
/// Docker already. Asks the running loop for a pass now.
pub fn request_pass() {
    EMPTY_REQUEST.notify_one();
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Docker answered; when not, nothing was judged.
    pub docker_answered: bool,
    pub released: Vec<Subject>,
    /// Released but the driver's handler failed: retried by the next pass.
    pub failed: Vec<Subject>,
    /// Missing from Docker, waiting for confirmation (the failed ones included).
    pub suspects: usize,
    /// When the earliest suspect can be confirmed.
    pub next_due: Option<Instant>,
}

/// Reconciles one plugin's network driver and/or IPAM driver against one dockerd.
#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// The name Docker knows the driver by: the socket's file stem.
    driver_name: String,
    network: Option<Arc<dyn NetworkDriver>>,
    ipam: Option<Arc<dyn IpamDriver>>,
    config: ReconcileConfig,
    /// Held for a whole pass: passes never overlap.
    state: Mutex<State>,
    passes: AtomicU64,
}

#[derive(Default)]
struct State {
    suspects: Suspects,
    /// Whether dockerd answered the last time it was asked; `None` before the first time.
    docker_answered: Option<bool>,
    /// Cluster-store networks Docker does not list here, already handed to the driver (whose
    /// store may keep them): said once, not at every pass.
    handed_to_store: HashSet<String>,
}

/// A running loop; `stop` ends it after the pass in progress.
pub struct RunningReconciler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningReconciler {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(STOP_GRACE, self.task).await.is_err() {
            warn!("a reconciliation pass still running after {STOP_GRACE:?}; stopping without it");
        }
    }
}

impl Reconciler {
    pub fn new(engine: Engine, driver_name: &str, plugin: &Plugin, config: ReconcileConfig) -> Reconciler {
        Reconciler {
            inner: Arc::new(Inner {
                engine,
                driver_name: driver_name.to_string(),
                network: plugin.network.clone(),
                ipam: plugin.ipam.clone(),
                config,
                state: Mutex::new(State::default()),
                passes: AtomicU64::new(0),
            }),
        }
    }

    /// Whether any of the plugin's drivers says what it holds (otherwise there is nothing to do).
    pub async fn has_anything_to_reconcile(&self) -> bool {
        let network = match &self.inner.network {
            Some(driver) => driver.held_networks().await.is_some(),
            None => false,
        };
        let ipam = match &self.inner.ipam {
            Some(driver) => driver.held_allocations().await.is_some(),
            None => false,
        };
        network || ipam
    }

    /// Passes run so far.
    pub fn passes(&self) -> u64 {
        self.inner.passes.load(Ordering::Relaxed)
    }

    /// Starts the loop (first pass at once) and the watch on Docker's events.
    pub fn spawn(self) -> RunningReconciler {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(self.run(stopped));
        RunningReconciler { stop, task }
    }

    async fn run(self, mut stopped: watch::Receiver<bool>) {
        if !self.has_anything_to_reconcile().await {
            debug!("this driver keeps nothing to reconcile against Docker");
            return;
        }
        let event_wake = Arc::new(Notify::new());
        let events = tokio::spawn(watch_events(
            self.inner.engine.clone(),
            self.inner.driver_name.clone(),
            self.inner.ipam.is_some(),
            event_wake.clone(),
        ));
        info!(
            docker_host = self.inner.engine.docker_host(),
            driver = self.inner.driver_name,
            interval_s = self.inner.config.interval.as_secs(),
            "reconciling against Docker: what it no longer has is removed"
        );
        loop {
            let report = self.pass().await;
            let mut wait = self.inner.config.interval;
            if let (Some(due), true) = (report.next_due, report.failed.is_empty()) {
                wait = wait.min(due.saturating_duration_since(Instant::now()) + Duration::from_millis(50));
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = event_wake.notified() => {
                    tokio::time::sleep(EVENT_DEBOUNCE).await;
                    let _ = event_wake.notified().now_or_never();
                }
                () = EMPTY_REQUEST.notified() => {
                    info!("a request came with an empty body (dockerd retrying a call this driver may have missed): asking Docker now");
                }
                _ = stopped.changed() => break,
            }
            if *stopped.borrow() {
                break;
            }
        }
        events.abort();
    }

    /// One pass: what the drivers hold, what Docker has, the verdict, the releases.
    pub async fn pass(&self) -> PassReport {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        let number = inner.passes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut report = PassReport::default();

        let held_networks = match &inner.network {
            Some(driver) => driver.held_networks().await,
            None => None,
        };
        let held_allocations = match &inner.ipam {
            Some(driver) => driver.held_allocations().await,
            None => None,
        };
        let mut missing = Vec::new();
        if let Some(held) = &held_networks {
            match inner.engine.networks_of_driver(&inner.driver_name).await {
                Ok(docker) => missing.extend(missing_networks(held, &docker)),
                Err(e) => return self.docker_silent(&mut state, e, report),
            }
        }
        if let Some(held) = &held_allocations {
            match self.judgeable_allocations(held).await {
                Ok((judged, docker)) => missing.extend(missing_allocations(&judged, &docker)),
                Err(e) => return self.docker_silent(&mut state, e, report),
            }
        }
        self.docker_answers(&mut state).await;
        report.docker_answered = true;

        state
            .handed_to_store
            .retain(|id| missing.iter().any(|m| matches!(m, Subject::Network { id: n, .. } if n == id)));
        let verdict = state.suspects.judge(missing, Instant::now(), inner.config.confirm_after);
        for subject in &verdict.suspected {
            debug!(
                "{subject}: Docker does not have it; removed if still so in {}s",
                inner.config.confirm_after.as_secs_f32()
            );
        }
        for subject in &verdict.cleared {
            debug!("{subject}: no longer missing from Docker");
        }
        let (mut failed_networks, mut failed_pools) = (HashSet::new(), HashSet::new());
        for (subject, gone_for) in verdict.release {
            let blocked = match &subject {
                Subject::Network { id, .. } => failed_networks.contains(id),
                Subject::Pool { pool_id } => failed_pools.contains(pool_id),
                _ => false,
            };
            let outcome = if blocked {
                Err("kept for now: releasing what it holds failed".to_string())
            } else {
                let first_time = match &subject {
                    Subject::Network { id, global: true } => state.handed_to_store.insert(id.clone()),
                    _ => true,
                };
                self.release(&subject, gone_for, first_time).await
            };
            match outcome {
                Ok(()) => {
                    crate::metrics::global().removed(&subject);
                    state.suspects.forget(&subject);
                    report.released.push(subject);
                }
                Err(error) => {
                    warn!(
                        error,
                        "{subject}: Docker has not had it for {}s, but releasing it failed; retried later",
                        gone_for.as_secs()
                    );
                    match &subject {
                        Subject::Endpoint { network_id, .. } => _ = failed_networks.insert(network_id.clone()),
                        Subject::Address { pool_id, .. } | Subject::Gateway { pool_id, .. } => {
                            _ = failed_pools.insert(pool_id.clone())
                        }
                        _ => {}
                    }
                    report.failed.push(subject);
                }
            }
        }
        report.suspects = state.suspects.len();
        report.next_due = state.suspects.next_due(inner.config.confirm_after);
        debug!(
            pass = number,
            held_networks = held_networks.as_ref().map_or(0, Vec::len),
            held_allocations = held_allocations.as_ref().map_or(0, Vec::len),
            released = report.released.len(),
            failed = report.failed.len(),
            suspects = report.suspects,
            "reconcile pass"
        );
        report
    }

    /// The held allocations Docker's networks of this IPAM driver can judge, and those networks.
    /// With a cluster store, an allocation of a global pool Docker does not show is left out:
    /// dockerd 20.10 does not list global networks while its cluster store cannot be read.
    async fn judgeable_allocations(
        &self,
        held: &[HeldAllocation],
    ) -> Result<(Vec<HeldAllocation>, Vec<DockerNetwork>), EngineError> {
        let engine = &self.inner.engine;
        let docker = engine.networks_of_ipam(&self.inner.driver_name).await?;
        let unseen = unseen_global_allocations(held, &docker);
        if unseen.is_empty() || engine.cluster_store().await?.is_none() {
            return Ok((held.to_vec(), docker));
        }
        debug!(
            count = unseen.len(),
            "allocations of cluster-store pools Docker does not show here are left to the store"
        );
        Ok((held.iter().filter(|a| !unseen.contains(a)).cloned().collect(), docker))
    }

    /// Releases `subject` through the driver's own handlers, as Docker would have asked.
    /// `first_time`: not released before in this stretch of Docker not having it.
    async fn release(&self, subject: &Subject, gone_for: Duration, first_time: bool) -> Result<(), String> {
        let secs = gone_for.as_secs();
        let inner = &self.inner;
        let (network, ipam) = (inner.network.as_deref(), inner.ipam.as_deref());
        match (subject, network, ipam) {
            (Subject::Endpoint { network_id, endpoint_id }, Some(driver), _) => {
                let request = EndpointRef { network_id: network_id.clone(), endpoint_id: endpoint_id.clone() };
                if let Err(e) = driver.leave(request.clone()).await {
                    debug!(error = e.message(), "{subject}: leave before delete failed (not joined?)");
                }
                driver.delete_endpoint(request).await.map_err(|e| e.message().to_string())?;
                info!(
                    network = short_id(network_id),
                    endpoint = short_id(endpoint_id),
                    "endpoint removed: Docker has no such endpoint since {secs} s"
                );
            }
            (Subject::Network { id, global }, Some(driver), _) => {
                if *global && first_time {
                    info!(
                        network = short_id(id),
                        "Docker on this host has no such network since {secs} s; it is a cluster-store network, so the driver's store decides whether it goes"
                    );
                }
                driver
                    .delete_network(NetworkRef { network_id: id.clone() })
                    .await
                    .map_err(|e| e.message().to_string())?;
                if !*global {
                    info!(network = short_id(id), "network removed: Docker has no such network since {secs} s");
                }
            }
            (Subject::Address { pool_id, address } | Subject::Gateway { pool_id, address }, _, Some(driver)) => {
                let request = ReleaseAddressRequest { pool_id: pool_id.clone(), address: address.to_string() };
                driver.release_address(request).await.map_err(|e| e.message().to_string())?;
                info!(pool = pool_id, %address, "{subject} released: no Docker network has it since {secs} s");
            }
            (Subject::Pool { pool_id }, _, Some(driver)) => {
                let request = ReleasePoolRequest { pool_id: pool_id.clone() };
                driver.release_pool(request).await.map_err(|e| e.message().to_string())?;
                info!(pool = pool_id, "pool released: no Docker network has it since {secs} s");
            }
            _ => return Err("no driver to release it with".into()),
        }
        Ok(())
    }

    fn docker_silent(&self, state: &mut State, error: EngineError, mut report: PassReport) -> PassReport {
        if state.docker_answered != Some(false) {
            warn!(
                docker_host = self.inner.engine.docker_host(),
                error = %error,
                "Docker cannot be asked which networks exist; nothing is removed while Docker cannot be asked"
            );
        }
        state.docker_answered = Some(false);
        report.suspects = state.suspects.len();
        report
    }

    async fn docker_answers(&self, state: &mut State) {
        if state.docker_answered == Some(true) {
            return;
        }
        let version = self.inner.engine.api_version().await.unwrap_or_default();
        let again = if state.docker_answered == Some(false) { " again" } else { "" };
        info!(docker_host = self.inner.engine.docker_host(), api_version = version, "dockerd answers{again}");
        state.docker_answered = Some(true);
    }
}

/// Follows Docker's network events for as long as the loop runs, waking it for those about this
/// driver (for an IPAM driver: any network), and once after each reconnection (events may have
/// been missed meanwhile).
async fn watch_events(engine: Engine, driver_name: String, every_network: bool, wake: Arc<Notify>) {
    let mut backoff = EVENTS_BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        match engine.network_events().await {
            Ok(mut events) => {
                let since = Instant::now();
                if connected_before {
                    wake.notify_one();
                }
                connected_before = true;
                debug!("following Docker's network events");
                while let Some(event) = events.recv().await {
                    if every_network || event.driver.as_deref().is_none_or(|d| d == driver_name) {
                        debug!(action = event.action, network = short_id(&event.network_id), "Docker network event");
                        wake.notify_one();
                    }
                }
                if since.elapsed() > EVENTS_BACKOFF_MAX {
                    backoff = EVENTS_BACKOFF_MIN;
                }
                debug!("Docker's event stream ended; reconnecting in {backoff:?}");
            }
            Err(e) => debug!(error = %e, "cannot follow Docker's events; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(EVENTS_BACKOFF_MAX);
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;
