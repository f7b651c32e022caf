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

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use netloom_ipam::store::{Condition, Txn};
use tracing::{debug, error, info, warn};

use crate::cache::{Affected, Cache};
use crate::driver::{Overlay, State};
use crate::peers;
use crate::records::{self, short, Mode, ROOT};

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

pub async fn watch(ov: Arc<Overlay>) {
    let Ok(shared) = &ov.shared else { return };
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
                    let mut state = ov.state.lock().await;
                    state.cache = cache;
                    state.generation += 1;
                }
                // The hosts are known: the guard first, then the FDB.
                ov.sync_guard(false).await;
                resync(&ov, &mut *ov.state.lock().await).await;
                sync_gateway(&ov).await;
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
            {
                let mut state = ov.state.lock().await;
                for item in batch {
                    match item {
                        Ok(event) => affected.merge(state.cache.apply(&event)),
                        Err(e) => ended = Some(e),
                    }
                }
                state.generation += 1;
            }
            if affected.all {
                // A host came or went: the guard accepts a new one before an FDB entry points at
                // it, and drops a departed one.
                ov.sync_guard(false).await;
            }
            if !affected.is_empty() {
                apply_affected(&ov, &mut *ov.state.lock().await, affected).await;
                // A network removed on another host may have been this host's last.
                ov.sync_guard(false).await;
            }
            if let Some(e) = ended {
                warn!("{e}");
                break;
            }
        }
        tokio::time::sleep(delay).await;
    }
}

pub async fn reconcile_periodically(ov: Arc<Overlay>) {
    loop {
        tokio::time::sleep(ov.config.reconcile_every).await;
        reconcile_once(&ov).await;
    }
}

/// One full pass against a fresh list of the store.
pub async fn reconcile_once(ov: &Overlay) {
    let Ok(shared) = &ov.shared else { return };
    let generation = ov.state.lock().await.generation;
    let listed = Cache::load(shared.store.as_ref()).await;
    {
        let mut state = ov.state.lock().await;
        match listed {
            // Nothing changed the copy while the list was taken: the list is at least as new.
            Ok(cache) if state.generation == generation => {
                state.cache = cache;
                state.generation += 1;
            }
            // The watch delivered changes meanwhile, so the copy is newer than the list, and current.
            Ok(_) => debug!("reconciler: the store changed while it was listed; checking against the watched copy"),
            Err(e) => {
                debug!("reconciler: {e}; trying again in {:?}", ov.config.reconcile_every);
                return;
            }
        }
    }
    // Re-applied even if unchanged here: someone may have flushed the firewall.
    if let Some(guard) = &ov.guard {
        guard.sync(&ov.state, true, false).await;
    }
    resync(ov, &mut *ov.state.lock().await).await;
    sync_gateway(ov).await;
    ov.sync_guard(false).await;
}

/// Everything against the copy of the store just listed.
async fn resync(ov: &Overlay, state: &mut State) {
    repair_dataplanes(ov, state).await;
    sync_all(ov, state).await;
    publish_own(ov, state).await;
    restore_local_networks(ov, state).await;
    forget_dead_hosts(ov, state).await;
}

async fn apply_affected(ov: &Overlay, state: &mut State, affected: Affected) {
    if affected.is_empty() {
        return;
    }
    if affected.all {
        sync_all(ov, state).await;
        return;
    }
    for key in &affected.networks {
        sync_network(ov, state, key).await;
        if !state.cache.networks.contains_key(key) {
            remove_deleted_network(ov, state, key).await;
        }
    }
}

pub async fn sync_all(ov: &Overlay, state: &mut State) {
    let keys: Vec<String> = state.dataplanes.keys().cloned().collect();
    for key in keys {
        sync_network(ov, state, &key).await;
    }
    let gone: Vec<String> = state
        .networks
        .values()
        .filter(|n| n.config.mode == Mode::Global && !state.cache.networks.contains_key(&n.config.key))
        .map(|n| n.config.key.clone())
        .collect();
    for key in gone {
        remove_deleted_network(ov, state, &key).await;
    }
}

/// Makes one network's FDB and neighbour entries what the peer table says.
pub async fn sync_network(ov: &Overlay, state: &State, key: &str) {
    if !state.cache.loaded {
        return;
    }
    let Some(dp) = state.dataplanes.get(key) else { return };
    let want =
        peers::desired(&state.cache.peers_of(key), |h| state.cache.hosts.contains_key(h), &ov.host, ov.config.port);
    let (fdb, neighbours) = match ov.fabric.kernel_entries(dp).await {
        Ok(entries) => entries,
        Err(e) => {
            warn!(network = %short(key), "reading the kernel's entries: {e:#}");
            return;
        }
    };
    let changes = peers::diff(&want, &fdb, &neighbours);
    if !changes.is_empty() {
        if let Err(e) = ov.fabric.apply(dp, &changes).await {
            warn!("{e:#}");
        }
    }
    let local_macs: Vec<[u8; 6]> = state
        .endpoints
        .values()
        .filter(|e| e.network == key)
        .filter_map(|e| netloom_dataplane::mac::parse(&e.mac).ok())
        .collect();
    if let Err(e) = ov.fabric.forget_moved_here(dp, &local_macs).await {
        warn!("{e:#}");
    }
}

/// Global scope: a network removed on another host (DeleteNetwork only reaches the host where
/// `docker network rm` ran) goes here too, once no local endpoint uses it.
async fn remove_deleted_network(ov: &Overlay, state: &mut State, key: &str) {
    if !state.cache.loaded || state.cache.networks.contains_key(key) {
        return;
    }
    let Some(net) = state.network_by_key(key).cloned() else { return };
    if net.config.mode != Mode::Global {
        return;
    }
    if !state.endpoints_of(key).is_empty() {
        warn!(network = %short(key), "network was removed from the store but still has endpoints here; keeping it");
        return;
    }
    // Tearing a network down is worth one more question to the store.
    match ov.shared.as_ref().map(|s| s.network(key)) {
        Ok(read) => match read.await {
            Ok(None) => {}
            Ok(Some(_)) => return,
            Err(e) => {
                debug!("checking network {}: {e:#}", short(key));
                return;
            }
        },
        Err(_) => return,
    }
    let dp = state.dataplanes.remove(key);
    if let Err(e) = ov.fabric.teardown_network(net.config.vni, dp).await {
        warn!("{e:#}");
    }
    if let Err(e) = ov.delete_network_record(&net.docker_id).await {
        warn!("{e:#}");
    }
    state.networks.remove(&net.docker_id);
    info!(network = %short(key), "network removed on another host; removed here");
}

/// This host's endpoints in the peer table: the ones whose veth exists are published, the rest
/// withdrawn (a record the store lost comes back; a container that vanished goes).
async fn publish_own(ov: &Overlay, state: &mut State) {
    let (Ok(shared), Some(underlay)) = (&ov.shared, state.underlay.clone()) else { return };
    let mut wanted = BTreeSet::new();
    let mut missing = Vec::new();
    for ep in state.endpoints.values() {
        let Some(dp) = state.dataplanes.get(&ep.network) else { continue };
        if !ov.fabric.endpoint_alive(dp, ep).await.unwrap_or(true) {
            continue;
        }
        wanted.insert((ep.network.clone(), ep.id.clone()));
        let peer = ep.peer(&ov.host, underlay.vtep, ov.config.port);
        let published = state.cache.peers.get(&ep.network).and_then(|t| t.get(&ep.id)).map(|(p, _)| p);
        if published != Some(&peer) {
            missing.push((records::peer_key(&ep.network, &ep.id), records::encode(&peer), ep.id.clone()));
        }
    }
    for (key, value, endpoint) in missing {
        match shared.store.put(&key, value.clone()).await {
            Ok(revision) => {
                info!(endpoint = %short(&endpoint), "endpoint published");
                state.wrote(key, value, revision);
            }
            Err(e) => debug!("publishing endpoint {}: {e}", short(&endpoint)),
        }
    }
    let mut stale = Vec::new();
    for (network, table) in &state.cache.peers {
        for (endpoint, (peer, revision)) in table {
            if peer.host == ov.host && !wanted.contains(&(network.clone(), endpoint.clone())) {
                stale.push((records::peer_key(network, endpoint), *revision, endpoint.clone()));
            }
        }
    }
    for (key, revision, endpoint) in stale {
        let txn = Txn::new().when(Condition::Revision(key.clone(), revision)).delete(key.clone());
        match shared.store.txn(txn).await {
            Ok(outcome) if outcome.committed() => {
                info!(endpoint = %short(&endpoint), "stale endpoint of this host withdrawn");
                state.deleted(&key);
            }
            Ok(_) => {}
            Err(e) => debug!("withdrawing endpoint {}: {e}", short(&endpoint)),
        }
    }
}

/// Local scope: networks this host has whose store record is missing, or lacks this host.
async fn restore_local_networks(ov: &Overlay, state: &State) {
    let Ok(shared) = &ov.shared else { return };
    for net in state.networks.values().filter(|n| n.config.mode == Mode::Local) {
        let fine = state
            .cache
            .networks
            .get(&net.config.key)
            .is_some_and(|(c, _)| c.members.get(&ov.host) == Some(&net.docker_id));
        if !fine {
            if let Err(e) = shared.restore_local(&net.config, &ov.host, &net.docker_id).await {
                debug!("restoring network {}: {e:#}", net.config.key);
            }
        }
    }
}

/// Peers of hosts whose lease expired more than `--dead-host-grace` ago are deleted from the
/// store (their kernel entries went when the lease did). Each delete holds only while the host
/// is still absent, so a host coming back keeps its records.
async fn forget_dead_hosts(ov: &Overlay, state: &mut State) {
    let Ok(shared) = &ov.shared else { return };
    let now = Instant::now();
    let mut absent: BTreeSet<String> = BTreeSet::new();
    for table in state.cache.peers.values() {
        for (peer, _) in table.values() {
            if peer.host != ov.host && !state.cache.hosts.contains_key(&peer.host) {
                absent.insert(peer.host.clone());
            }
        }
    }
    for (config, _) in state.cache.networks.values() {
        for host in config.members.keys() {
            if *host != ov.host && !state.cache.hosts.contains_key(host) {
                absent.insert(host.clone());
            }
        }
    }
    state.absent_since.retain(|host, _| absent.contains(host));
    for host in &absent {
        let since = *state.absent_since.entry(host.clone()).or_insert(now);
        if now.duration_since(since) < ov.config.dead_host_grace {
            continue;
        }
        // Local-scope networks it was a member of: the last member out deletes them (a host
        // that comes back writes its membership again).
        let memberships: Vec<String> = state
            .cache
            .networks
            .values()
            .filter(|(c, _)| c.members.contains_key(host))
            .map(|(c, _)| c.key.clone())
            .collect();
        for key in memberships {
            match shared.leave_local(&key, host).await {
                Ok(()) => info!(host = %host, network = %key, "host gone for good removed from the network"),
                Err(e) => debug!("removing host {host} from network {key}: {e:#}"),
            }
        }
        for (network, table) in &state.cache.peers {
            let mut txn = Txn::new().when(Condition::Absent(records::host_key(host)));
            let mut any = false;
            for (endpoint, (peer, _)) in table {
                if &peer.host == host {
                    txn = txn.delete(records::peer_key(network, endpoint));
                    any = true;
                }
            }
            if any {
                match shared.store.txn(txn).await {
                    Ok(outcome) if outcome.committed() => {
                        info!(host = %host, network = %short(network), "peers of a host gone for good deleted")
                    }
                    Ok(_) => {}
                    Err(e) => debug!("deleting peers of host {host}: {e}"),
                }
            }
        }
    }
}

/// docker_gwbridge's rules and port flags, and the published ports of this host's endpoints:
/// re-applied (rules someone flushed come back), leftovers of endpoints that are gone removed.
/// Takes the state lock only to read and record, never across a firewall call.
pub async fn sync_gateway(ov: &Overlay) {
    let Some(gateway) = &ov.gateway else { return };
    let _serial = ov.gateway_lock.lock().await;
    let policy = match gateway.ensure(ov.fabric.netlink()).await {
        Ok(policy) => policy,
        Err(e) => {
            warn!("programming docker_gwbridge: {e:#}");
            return;
        }
    };
    let published: Vec<(String, Vec<netloom_plugin_api::wire::ports::PortBinding>, std::net::IpAddr)> = {
        let mut state = ov.state.lock().await;
        state.gateway_policy = policy.clone();
        state.endpoints.values().filter_map(|ep| Some((ep.id.clone(), ep.ports.clone(), ep.gateway_ip?))).collect()
    };
    let Some(policy) = policy else { return };
    let mut live = Vec::new();
    for (id, ports, address) in published {
        if let Err(e) = gateway.publish(&policy, &id, &crate::gateway::mappings(&ports, address)).await {
            warn!(endpoint = %short(&id), "re-publishing ports: {e:#}");
        }
        live.push(id);
    }
    gateway.retain(&policy, &live).await;
}

/// A network whose VXLAN link went missing (deleted by hand, say) gets it back.
async fn repair_dataplanes(ov: &Overlay, state: &mut State) {
    let mut broken = Vec::new();
    for (key, dp) in &state.dataplanes {
        match dp.netlink.link(crate::fabric::VXLAN).await {
            Ok(Some(_)) => {}
            Ok(None) => broken.push(key.clone()),
            Err(e) => debug!("checking network {}: {e:#}", short(key)),
        }
    }
    for key in broken {
        let Some(net) = state.network_by_key(&key).cloned() else { continue };
        warn!(network = %short(&key), "the network's VXLAN link is missing; making it again");
        state.dataplanes.remove(&key);
        if let Err(e) = ov.ensure_dataplane(state, &net.config).await {
            warn!(network = %short(&key), "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

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
