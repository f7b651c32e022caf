//! Keeping the kernel in line with the shared store.
//!
//! - `watch`: lists `overlay/` once, then follows a watch on it; every change reprograms the
//!   networks it touches. When the watch ends (store restarted, unreachable, compacted) it lists
//!   and watches again, with back-off; until then the kernel keeps what it has.
//! - `reconcile_periodically`: every `--reconcile-interval`, and whenever the watch starts
//!   again, a full pass against a fresh list: every network's FDB and neighbour entries
//!   re-checked (so a missed event can't leave a stale entry for good), VXLAN links that went
//!   missing made again, docker_gwbridge's rules re-applied, this host's endpoints published or
//!   withdrawn as they exist or not, networks deleted on another host removed (global scope),
//!   local-scope records a store lost written back, and hosts whose lease expired long ago
//!   forgotten.
//! - Both run under [`supervise`]: a task that panics or ends is logged and started again, with
//!   back-off.
//! - The VXLAN guard ([`crate::guard`]) follows the hosts in the copy: a change of hosts is
//!   applied to it before the FDB, and the firewall (guard, docker_gwbridge) is called without
//!   the state lock, so a slow firewall does not hold up requests or the FDB.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use netloom_store::WatchEvent;
use tracing::{debug, error, info, warn};

use crate::cache::{Affected, Cache};
use crate::overlay::Overlay;
use crate::records::{NAMES, PEERS, ROOT};

/// Events taken in one go before reprogramming.
const BATCH: usize = 1024;

/// Runs `task(arg)` in the background for good: when it panics or returns, says so and starts it
/// again after a back-off (0.5 s doubling to 30 s; back to 0.5 s after a minute of running).
pub fn supervise<T, F, Fut>(name: &'static str, arg: T, task: F)
where
    T: Clone + Send + 'static,
    F: Fn(T) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    const FIRST: Duration = Duration::from_millis(500);
    tokio::spawn(async move {
        let mut delay = FIRST;
        loop {
            let started = Instant::now();
            let outcome = tokio::spawn(task(arg.clone())).await;
            if started.elapsed() > Duration::from_secs(60) {
                delay = FIRST;
            }
            match outcome {
                Ok(()) => warn!(task = name, "background task ended; starting it again in {delay:?}"),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "(no message)".to_string());
                    error!(task = name, "background task panicked: {message}; starting it again in {delay:?}");
                }
                Err(e) => {
                    debug!(task = name, "background task cancelled: {e}");
                    return;
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    });
}

impl Overlay {
    pub async fn watch(&self) {
        let Ok(shared) = &self.shared else { return };
        let mut delay = Duration::from_millis(250);
        let mut reported = false;
        loop {
            let stream = match shared.store.watch(ROOT).await {
                Ok(stream) => stream,
                Err(e) => {
                    if !reported {
                        warn!("watching the store: {e}; the kernel keeps its entries, retrying");
                        reported = true;
                    } else {
                        debug!("watching the store: {e}");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            // Listed after the watch started: nothing written in between is missed.
            match Cache::load(shared.store.as_ref()).await {
                Ok(cache) => {
                    // Whatever changed since the watch started is replayed by it below.
                    {
                        let mut state = self.state();
                        state.cache = cache;
                        state.generation += 1;
                    }
                    // The hosts are known: the guard first, then the FDB.
                    self.sync_guard(false).await;
                    self.refresh_names();
                    self.resync().await;
                    self.sync_gateway().await;
                }
                Err(e) => {
                    debug!("listing the store: {e}");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            if reported {
                info!("store reachable again; resynchronised");
                reported = false;
            }
            delay = Duration::from_millis(250);
            let mut stream = stream;
            while let Some(first) = stream.next().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(item)) => batch.push(item),
                        _ => break,
                    }
                }
                let mut affected = Affected::default();
                let mut ended = None;
                // This host's own writes too, which the copy has already.
                let mut names_touched = false;
                {
                    let mut state = self.state();
                    for item in batch {
                        match item {
                            Ok(event) => {
                                names_touched |= touches_names(&event);
                                affected.merge(state.cache.apply(&event));
                            }
                            Err(e) => ended = Some(e),
                        }
                    }
                    state.generation += 1;
                }
                if names_touched {
                    self.refresh_names();
                }
                if affected.all {
                    // A host came or went: the guard accepts a new one before an FDB entry points
                    // at it, and drops a departed one.
                    self.sync_guard(false).await;
                }
                if affected.tunnels {
                    // The tunnel knows a new host before an encrypted network's entry points at it.
                    self.sync_tunnel_peers().await;
                }
                if !affected.is_empty() {
                    self.apply_affected(affected).await;
                    // A network removed on another host may have been this host's last.
                    self.sync_guard(false).await;
                }
                if let Some(e) = ended {
                    warn!("{e}");
                    break;
                }
            }
            tokio::time::sleep(delay).await;
        }
    }

    pub async fn reconcile_periodically(&self) {
        loop {
            tokio::time::sleep(self.config.reconcile_every).await;
            self.reconcile_once().await;
        }
    }

    /// One full pass against a fresh list of the store.
    pub async fn reconcile_once(&self) {
        let Ok(shared) = &self.shared else { return };
        let generation = self.state().generation;
        let listed = Cache::load(shared.store.as_ref()).await;
        {
            let mut state = self.state();
            match listed {
                // Nothing changed the copy while the list was taken: the list is at least as new.
                Ok(cache) if state.generation == generation => {
                    state.cache = cache;
                    state.generation += 1;
                }
                // The watch delivered changes meanwhile, so the copy is newer than the list, and current.
                Ok(_) => {
                    debug!("reconciler: the store changed while it was listed; checking against the watched copy")
                }
                Err(e) => {
                    debug!("reconciler: {e}; trying again in {:?}", self.config.reconcile_every);
                    return;
                }
            }
        }
        self.refresh_names();
        // Re-applied even if unchanged here: someone may have flushed the firewall.
        if let Some(guard) = &self.guard {
            guard.sync(&self.state, true, false).await;
        }
        self.resync().await;
        self.sync_gateway().await;
        self.sync_guard(false).await;
    }

    /// Everything against the copy of the store just listed.
    async fn resync(&self) {
        self.repair_tunnel().await;
        self.sync_tunnel_peers().await;
        self.repair_dataplanes().await;
        self.retry_missing_dataplanes().await;
        self.sync_all().await;
        self.publish_own().await;
        self.restore_local_networks().await;
        self.forget_dead_hosts().await;
    }

    async fn apply_affected(&self, affected: Affected) {
        if affected.all {
            self.sync_all().await;
            return;
        }
        for key in &affected.networks {
            self.sync_network(key).await;
            self.remove_deleted_network(key).await;
        }
    }
}

/// Whether an event changes a name record or a peer record (whose addresses names answer).
fn touches_names(event: &WatchEvent) -> bool {
    let key = match event {
        WatchEvent::Put(kv) => kv.key.as_str(),
        WatchEvent::Delete { key, .. } => key.as_str(),
    };
    key.starts_with(NAMES) || key.starts_with(PEERS)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_started_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        supervise("test", runs.clone(), |runs: Arc<AtomicUsize>| async move {
            if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                panic!("boom");
            }
            std::future::pending::<()>().await;
        });
        // Back-offs 0.5 s and 1 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "panicked twice, then runs for good");
    }
}
