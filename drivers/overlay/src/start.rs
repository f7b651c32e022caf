//! Start-up: the stores opened, the private records loaded and the kernel brought in line with
//! them before the socket opens, then the background sync started.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use netloom_dataplane::{Netlink, Netns};
use netloom_driver_kit::restore;
use netloom_firewall::{BackendKind, VXLAN_GUARD_OWNER};
use netloom_ipam::{Ipam, IpamConfig};
use netloom_plugin_api::engine::Engine;
use netloom_plugin_api::locks::KeyedLocks;
use netloom_plugin_api::Settings;
use netloom_store::{self as store, DriverRecords, StoreOptions};
use tracing::{debug, error, info, warn};

use crate::cluster::Shared;
use crate::dns::Directory;
use crate::dns_setup::DnsListen;
use crate::fabric::{endpoint_owner, Fabric};
use crate::gateway::{Gateway, POLICY_ID};
use crate::guard::VxlanGuard;
use crate::overlay::{Config, Overlay};
use crate::records::{short, Mode};
use crate::state::State;
use crate::sync::supervise;

/// When the rules left in the backend not in use are removed, after start.
const SWEEP_AFTER_START: std::time::Duration = std::time::Duration::from_millis(500);

impl Overlay {
    /// Opens the stores, loads the private records and brings the kernel in line with them,
    /// before the socket opens. Configuration problems don't stop the driver: they are logged
    /// and answered to every request that needs what is missing.
    pub async fn start(settings: &Settings, config: Config) -> Result<Arc<Overlay>> {
        let host = settings.host_id()?;
        let embedded = store::open(None, &settings.state_dir, store::DEFAULT_PREFIX)
            .await
            .context("opening the private record store")?;
        let local = DriverRecords::new(embedded, "overlay", &host);
        let shared = open_shared(settings, &config, &host).await?;
        if let Err(problem) = &shared {
            error!("{problem}");
        }
        let netns_dir =
            config.netns_dir.clone().unwrap_or_else(|| PathBuf::from(format!("/run/netloom/{}/netns", settings.name)));
        let fabric = Fabric::new(Netlink::connect()?, netns_dir, config.port);
        let gateway = match config.firewall {
            Some(kind) => match Gateway::open(kind).await {
                Ok(gateway) => Some(gateway),
                Err(e) => {
                    error!("the {kind} firewall is unusable: {e:#}; docker_gwbridge's rules are left to dockerd");
                    None
                }
            },
            None => None,
        };
        let guard = match VxlanGuard::open(config.guard_firewall, config.port).await {
            Ok(guard) => Some(guard),
            Err(e) => {
                error!("the {} firewall is unusable: {e:#}; VXLAN is accepted from anyone", config.guard_firewall);
                None
            }
        };
        let mut in_use = Vec::new();
        if let (Some(kind), Some(_)) = (config.firewall, &gateway) {
            in_use.push((kind, POLICY_ID));
        }
        if guard.is_some() {
            in_use.push((config.guard_firewall, VXLAN_GUARD_OWNER));
        }
        // Half a second on, when the socket is normally up: serving needs nothing from the other
        // backend, and listing it takes eight iptables runs, which doubled the start-up on two cores.
        tokio::spawn(async move {
            tokio::time::sleep(SWEEP_AFTER_START).await;
            sweep_other_backends(in_use).await
        });
        let gone_at_once = config.peer_grace.is_zero();
        let answers_names = config.mode == Mode::Local && config.dns.listen != DnsListen::Off && shared.is_ok();
        let directory = answers_names.then(Directory::new);
        let overlay = Arc::new(Overlay {
            config,
            host,
            shared,
            local,
            fabric,
            gateway,
            guard,
            gateway_lock: tokio::sync::Mutex::new(()),
            state: std::sync::Mutex::new(State { gone_at_once, ..State::default() }),
            turns: KeyedLocks::default(),
            fdb_turns: KeyedLocks::default(),
            directory,
            dns_server: std::sync::Mutex::new(None),
            crypt: tokio::sync::Mutex::new(None),
        });
        crate::status::register_metrics(&overlay);
        overlay.load().await?;
        if let Err(e) = overlay.underlay().await {
            error!("{e}");
        }
        overlay.restore().await;
        overlay.sync_gateway().await;
        overlay.sync_guard(false).await;
        overlay.start_dns().await?;
        if overlay.shared.is_ok() {
            supervise("store watch", overlay.clone(), |ov: Arc<Overlay>| async move { ov.watch().await });
            supervise("host liveness", overlay.clone(), |ov: Arc<Overlay>| async move {
                ov.track_hosts_periodically().await
            });
            supervise(
                "reconciler",
                overlay.clone(),
                |ov: Arc<Overlay>| async move { ov.reconcile_periodically().await },
            );
            follow_container_names(settings, &overlay)?;
        }
        Ok(overlay)
    }

    pub(crate) async fn load(&self) -> Result<()> {
        let networks = self.local.networks().await.context("reading private network records")?;
        let endpoints = self.local.endpoints().await.context("reading private endpoint records")?;
        info!(networks = networks.len(), endpoints = endpoints.len(), "private records loaded");
        let mut state = self.state();
        state.networks = networks;
        state.endpoints = endpoints;
        Ok(())
    }

    /// Start-up reconciliation: every recorded network's namespace, bridge and VXLAN link, every
    /// endpoint whose veth still exists back on its bridge, leftovers removed. FDB and neighbour
    /// entries are left as they are until the shared store has been read.
    pub(crate) async fn restore(&self) {
        let started = Instant::now();
        let (networks, endpoints) = {
            let state = self.state();
            (state.networks.clone(), state.endpoints.clone())
        };
        for net in networks.values() {
            if let Err(e) = self.ensure_dataplane(&net.config).await {
                warn!(network = %short(&net.config.key), "could not restore network: {e}");
            }
        }
        for ep in endpoints.values() {
            let Some(dp) = self.state().dataplane(&ep.network) else { continue };
            match self.fabric.endpoint_alive(&dp, ep).await {
                Ok(true) => {
                    if let Some(net) = networks.values().find(|n| n.config.key == ep.network) {
                        if let Err(e) = self.fabric.ensure_endpoint(&dp, &net.config, ep).await {
                            warn!(endpoint = %short(&ep.id), "could not re-attach endpoint: {e:#}");
                        }
                    }
                }
                Ok(false) => {
                    debug!(endpoint = %short(&ep.id), "veth is gone (its container went); waiting for DeleteEndpoint")
                }
                Err(e) => warn!(endpoint = %short(&ep.id), "{e:#}"),
            }
        }
        self.remove_leftovers().await;
        // No encrypted network left (or none restored): a tunnel of an earlier run goes.
        self.release_tunnel_if_unused().await;
        restore::done(started, networks.len(), endpoints.len());
    }

    async fn remove_leftovers(&self) {
        let (owners, dataplanes, vnis) = {
            let state = self.state();
            let owners: BTreeSet<String> =
                state.endpoints.values().map(|e| endpoint_owner(&e.network, &e.id)).collect();
            let dataplanes: Vec<_> = state.dataplanes.values().cloned().collect();
            let vnis: Vec<u32> = state.networks.values().map(|n| n.config.vni).collect();
            (owners, dataplanes, vnis)
        };
        self.fabric.remove_leftover_links(&owners).await;
        for dp in &dataplanes {
            self.fabric.remove_leftover_ports(dp, &owners).await;
        }
        match Netns::list(self.fabric.netns_dir()) {
            Ok(list) => {
                for ns in list {
                    let name = ns.name();
                    let Some(vni) = Fabric::vni_of_netns(&name) else { continue };
                    if !dataplanes.iter().any(|dp| dp.vni == vni) && !vnis.contains(&vni) {
                        info!(netns = %name, "removing leftover network namespace");
                        if let Err(e) = self.fabric.teardown_network(vni, None).await {
                            warn!("{e:#}");
                        }
                    }
                }
            }
            Err(e) => warn!("listing network namespaces: {e:#}"),
        }
    }
}

/// Local scope, with dockerd to ask: this host's container names published and its containers
/// known as DNS askers.
fn follow_container_names(settings: &Settings, overlay: &Arc<Overlay>) -> Result<()> {
    let Some(docker_host) = settings.docker_host.as_deref() else { return Ok(()) };
    if overlay.config.mode != Mode::Local {
        return Ok(());
    }
    let engine = Engine::new(docker_host)?;
    let driver = settings.docker_driver_name.clone();
    supervise("container names", overlay.clone(), move |ov: Arc<Overlay>| {
        let (engine, driver) = (engine.clone(), driver.clone());
        async move { ov.follow_container_names(&engine, &driver).await }
    });
    Ok(())
}

/// The outer error stops the driver: the store refuses our TLS settings or credentials. The inner
/// one is logged and answered to requests, as the store may come later.
async fn open_shared(settings: &Settings, config: &Config, host: &str) -> Result<Result<Shared, String>> {
    let Some(url) = settings.store.as_deref() else {
        return Ok(Err("loom-overlay needs a store shared by every host: start it with --store etcd://HOST:2379 \
                    (or consul://HOST:8500); the embedded store serves one host and cannot make an overlay"
            .to_string()));
    };
    let options = StoreOptions { lease_ttl: config.lease_ttl, ..settings.store_options()? };
    let store = match store::open_with(Some(url), &settings.state_dir, options).await {
        Ok(store) => store,
        Err(e) if e.is_misconfiguration() => anyhow::bail!("--store: {e}"),
        Err(e) => return Ok(Err(format!("--store: {e}"))),
    };
    let ipam = Ipam::new(store.clone(), host, IpamConfig::default())
        .await
        .map_err(|e| format!("starting the VNI allocator: {e}"));
    Ok(ipam.map(|ipam| Shared { store, ipam }))
}

/// Removes our rules left in the backend not in use (from before a `--firewall` switch): one
/// sweep per backend for every owner using it, since each sweep lists every table of both
/// families.
async fn sweep_other_backends(in_use: Vec<(BackendKind, &'static str)>) {
    let mut kinds: Vec<BackendKind> = Vec::new();
    for (kind, _) in &in_use {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    for kind in kinds {
        let mine: Vec<&'static str> = in_use.iter().filter(|(k, _)| *k == kind).map(|(_, owner)| *owner).collect();
        if let Err(e) = netloom_firewall::sweep_other_backend(kind, move |id| mine.contains(&id)).await {
            warn!("{e:#}");
        }
    }
}
