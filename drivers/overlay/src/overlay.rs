//! loom-overlay's one piece of state: its configuration, the stores, the kernel and firewall
//! handles, the in-memory maps and the locks that order work on them.
//!
//! Lock order, outermost first: a network's turn (`turns`, by Docker network id: requests, and
//! the reconciler's work on that network), docker_gwbridge's firewall (`gateway_lock`), the
//! tunnel (`crypt`), the FDB
//! turn of a network (`fdb_turns`, by network key: programming its peer entries), and `state`,
//! which is only ever held to read or update the maps.
//!
//! Its behaviour is spread by concern: `start.rs` (start-up), `network.rs` (kernel objects and
//! peer entries), `handlers.rs` (Docker's requests), `ports.rs` (docker_gwbridge), `sync.rs` and
//! `reconcile.rs` (following the shared store).

use std::path::PathBuf;
use std::sync::MutexGuard;
use std::time::Duration;

use netloom_plugin_api::locks::{lock, KeyedLocks, Turn, LOCK_WAIT};
use netloom_plugin_api::{PluginError, PluginResult};
use netloom_store::DriverRecords;
use tracing::{debug, info, warn};

use crate::cluster::Shared;
use crate::dns::{Directory, DnsServer};
use crate::dns_setup::DnsSettings;
use crate::fabric::Fabric;
use crate::gateway::Gateway;
use crate::guard::VxlanGuard;
use crate::records::{self, host_key, short, HostRecord, LocalEndpoint, LocalNetwork, Mode};
use crate::state::State;
use crate::tunnel_setup::{CryptHost, CryptSettings};
use crate::underlay::{self, Underlay};

/// How long background work waits for a network busy with a request before leaving it to the
/// next pass.
const BACKGROUND_WAIT: Duration = Duration::from_secs(1);

/// Command-line settings beyond the common ones.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub advertise: Option<String>,
    pub port: u16,
    pub reconcile_every: Duration,
    pub lease_ttl: Duration,
    pub dead_host_grace: Duration,
    /// How long an absent host's VTEP must stay unreachable before the host counts as gone.
    pub peer_grace: Duration,
    pub netns_dir: Option<PathBuf>,
    pub firewall: Option<netloom_firewall::BackendKind>,
    /// The VXLAN guard's backend (also with `--firewall none`).
    pub guard_firewall: netloom_firewall::BackendKind,
    pub dns: DnsSettings,
    pub crypt: CryptSettings,
}

pub struct Overlay {
    pub config: Config,
    pub host: String,
    /// The shared store, or why there is none (answered to every request that needs it).
    pub shared: Result<Shared, String>,
    /// This host's private records, in the embedded store.
    pub local: DriverRecords<LocalNetwork, LocalEndpoint>,
    pub fabric: Fabric,
    /// docker_gwbridge's rules (None: `--firewall none`, or the backend could not start).
    pub gateway: Option<Gateway>,
    /// VXLAN only from member hosts (None: the backend could not start).
    pub guard: Option<VxlanGuard>,
    /// Serialises docker_gwbridge's firewall work.
    pub gateway_lock: tokio::sync::Mutex<()>,
    pub state: std::sync::Mutex<State>,
    /// One turn per Docker network: its requests and the reconciler's work on it, one at a time.
    pub turns: KeyedLocks,
    /// One turn per network key for programming its FDB and neighbour entries.
    pub fdb_turns: KeyedLocks,
    /// The names the DNS server answers (local scope with DNS on), kept from the copy of the store.
    pub directory: Option<Directory>,
    /// Serving while held.
    pub dns_server: std::sync::Mutex<Option<DnsServer>>,
    /// This host's end of the encrypted overlays while it has one (after the network turns,
    /// before the FDB turns and `state`).
    pub crypt: tokio::sync::Mutex<Option<CryptHost>>,
}

impl Overlay {
    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn shared(&self) -> PluginResult<&Shared> {
        self.shared.as_ref().map_err(|problem| PluginError::new(problem.clone()))
    }

    /// Waits (bounded) for a Docker network's turn; the error names the network and the holder.
    pub async fn turn(&self, docker_id: &str, doing: String) -> PluginResult<Turn> {
        self.turns.take(docker_id, &format!("loom-overlay network {}", short(docker_id)), doing, LOCK_WAIT).await
    }

    /// A network's turn for background work, or None while a request keeps it busy.
    pub async fn background_turn(&self, docker_id: &str, doing: &str) -> Option<Turn> {
        let what = format!("loom-overlay network {}", short(docker_id));
        match self.turns.take(docker_id, &what, doing, BACKGROUND_WAIT).await {
            Ok(turn) => Some(turn),
            Err(e) => {
                debug!("{doing}: {e}; left to the next pass");
                None
            }
        }
    }

    /// The VXLAN guard brought in line with the state.
    pub async fn sync_guard(&self, expect_network: bool) {
        if let Some(guard) = &self.guard {
            guard.sync(&self.state, false, expect_network).await;
        }
    }

    /// This host's VTEP, resolved from --advertise-addr on first use (an interface may come up
    /// after the driver), and the lease record that tells other hosts this one is alive.
    pub async fn underlay(&self) -> PluginResult<Underlay> {
        if let Some(underlay) = &self.state().underlay {
            return Ok(underlay.clone());
        }
        let advertise = self.config.advertise.as_deref().unwrap_or("");
        let resolved = underlay::resolve(self.fabric.netlink(), advertise)
            .await
            .map_err(|e| PluginError::new(format!("{e:#}")))?;
        if let Some(underlay) = &self.state().underlay {
            // Another request resolved it meanwhile.
            return Ok(underlay.clone());
        }
        info!(vtep = %resolved.vtep, iface = %resolved.iface, mtu = resolved.mtu, port = self.config.port, "tunnel endpoint");
        if let Ok(shared) = &self.shared {
            let record = HostRecord {
                vtep: resolved.vtep,
                port: self.config.port,
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: records::now(),
            };
            // Kept alive with the host's lease; written later if the store is unreachable now.
            if let Err(e) = shared.store.put_leased(&host_key(&self.host), records::encode(&record)).await {
                warn!("announcing this host in the store: {e}; retrying in the background");
            }
        }
        self.state().underlay = Some(resolved.clone());
        Ok(resolved)
    }

    pub async fn put_network(&self, record: &LocalNetwork) -> PluginResult<()> {
        self.local.put_network(record).await.map_err(private_error)
    }

    pub async fn delete_network_record(&self, docker_id: &str) -> PluginResult<()> {
        self.local.delete_network(docker_id).await.map_err(private_error)
    }

    pub async fn put_endpoint(&self, record: &LocalEndpoint) -> PluginResult<()> {
        self.local.put_endpoint(record).await.map_err(private_error)
    }

    pub async fn delete_endpoint_record(&self, record: &LocalEndpoint) -> PluginResult<()> {
        self.local.delete_endpoint(&record.docker_network, &record.id).await.map_err(private_error)
    }
}

fn private_error(err: anyhow::Error) -> PluginError {
    PluginError::new(format!("private records: {err:#}"))
}

pub fn store_error(err: anyhow::Error) -> PluginError {
    PluginError::new(format!("{err:#}"))
}
