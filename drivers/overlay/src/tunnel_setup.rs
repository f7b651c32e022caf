//! This host's end of the encrypted overlays: made when its first encrypted network appears
//! (created, or restored at start) and removed, in reverse order, when its last one goes.
//!
//! Made in this order: the tunnel namespace (`<netns-dir>/ovl-crypt`), the private key
//! (`<state-dir>/wireguard.key`), a tunnel address claimed in the store
//! (`overlay/tunnel-ips/<ip>`, create-if-absent), the WireGuard device, and the store record other
//! hosts find it by (`overlay/tunnels/<host>`). A step that fails undoes the ones before it, so a
//! refused CreateNetwork leaves nothing behind.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use ipnetwork::IpNetwork;
use netloom_dataplane::{Netlink, Netns};
use netloom_plugin_api::{PluginError, PluginResult};
use netloom_store::{Condition, Txn};
use tokio::sync::MutexGuard;
use tracing::{debug, info, warn};

use crate::cluster::Shared;
use crate::crypt::{
    KeyPair, PublicKey, Tunnel, TunnelConfig, TunnelPeer, WireguardMode, DEVICE, NETNS_NAME, WIREGUARD_OVERHEAD_V4,
    WIREGUARD_OVERHEAD_V6,
};
use crate::overlay::Overlay;
use crate::records::{self, tunnel_ip_key, tunnel_key, TunnelRecord};
use crate::tunnel_ips::candidates;
use crate::underlay::Underlay;

/// Addresses tried in the tunnel subnet before giving up (each taken by another host).
const CLAIM_ATTEMPTS: usize = 64;

/// Command-line settings of encrypted overlays.
#[derive(Debug, Clone)]
pub struct CryptSettings {
    /// The WireGuard UDP port on the advertise address.
    pub port: u16,
    /// Where hosts' tunnel addresses come from.
    pub subnet: IpNetwork,
    /// The TUN clone device (hidden flag; tests point it at nothing).
    pub tun_device: PathBuf,
    /// Which WireGuard serves the tunnel (`--wireguard`).
    pub wireguard: WireguardMode,
    /// Holds the private key.
    pub state_dir: PathBuf,
}

/// The running tunnel of this host.
pub struct CryptHost {
    pub netns: Netns,
    /// A connection inside the tunnel namespace: encrypted networks' VXLAN links are made through
    /// it, so their UDP socket lives there.
    pub netlink: Netlink,
    pub tunnel: Tunnel,
    pub tunnel_ip: IpAddr,
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
    /// The peers last given to the tunnel.
    pub peers: Vec<TunnelPeer>,
}

impl Overlay {
    pub fn crypt_netns_path(&self) -> PathBuf {
        self.fabric.netns_dir().join(NETNS_NAME)
    }

    /// The tunnel, started if this host has none yet. The guard is held while an encrypted
    /// network's links are made, so the tunnel cannot be removed under them.
    pub async fn ensure_tunnel(&self, underlay: &Underlay) -> PluginResult<MutexGuard<'_, Option<CryptHost>>> {
        let mut crypt = self.crypt.lock().await;
        if crypt.is_none() {
            let host = self
                .start_tunnel(underlay)
                .await
                .map_err(|e| PluginError::new(format!("encrypted networks cannot start on this host: {e:#}")))?;
            *crypt = Some(host);
            drop(crypt);
            self.sync_tunnel_peers().await;
            crypt = self.crypt.lock().await;
            if crypt.is_none() {
                return Err(PluginError::new("the tunnel was removed while it started; try again"));
            }
        }
        Ok(crypt)
    }

    async fn start_tunnel(&self, underlay: &Underlay) -> Result<CryptHost> {
        let shared = self.shared.as_ref().map_err(|problem| anyhow!("{problem}"))?;
        let settings = &self.config.crypt;
        let path = self.crypt_netns_path();
        let mut undo = Undo::default();
        let result = async {
            // A namespace already there holds encrypted networks' VXLAN sockets: it stays.
            let had_netns = path.exists();
            let netns = Netns::ensure(&path).context("making the tunnel namespace")?;
            undo.netns = (!had_netns).then(|| path.clone());
            let had_key = settings.state_dir.join(crate::crypt::keys::KEY_FILE).exists();
            let key = KeyPair::load_or_create(&settings.state_dir)?;
            undo.key = (!had_key).then(|| settings.state_dir.clone());
            let (tunnel_ip, fresh) = self.claim_tunnel_ip(shared).await?;
            undo.claim = fresh.then_some(tunnel_ip);
            let overhead = if underlay.vtep.is_ipv6() { WIREGUARD_OVERHEAD_V6 } else { WIREGUARD_OVERHEAD_V4 };
            let endpoint = SocketAddr::new(underlay.vtep, settings.port);
            let config = TunnelConfig {
                netns: &path,
                tunnel_ip,
                tunnel_subnet: settings.subnet,
                listen: endpoint,
                mtu: underlay.mtu.saturating_sub(overhead),
                tun_path: &settings.tun_device,
                underlay_netns: None,
                mode: settings.wireguard,
            };
            let tunnel = Tunnel::start(&config, &key).await?;
            let netlink = Netlink::connect_in(&netns)?;
            let host =
                CryptHost { netns, netlink, tunnel, tunnel_ip, public_key: key.public, endpoint, peers: Vec::new() };
            if let Err(e) = self.put_tunnel_record(shared, &host).await {
                if let Err(cleanup) = host.tunnel.remove().await {
                    warn!("removing the tunnel again: {cleanup:#}");
                }
                return Err(e);
            }
            Ok(host)
        }
        .await;
        match result {
            Ok(host) => {
                info!(kind = %host.tunnel.kind(), tunnel_ip = %host.tunnel_ip, endpoint = %host.endpoint,
                      public_key = %host.public_key.to_base64(), "tunnel started");
                Ok(host)
            }
            Err(e) => {
                undo.run(self, shared).await;
                Err(e)
            }
        }
    }

    async fn put_tunnel_record(&self, shared: &Shared, host: &CryptHost) -> Result<()> {
        let record = TunnelRecord {
            public_key: host.public_key.to_base64(),
            endpoint: host.endpoint,
            tunnel_ip: host.tunnel_ip,
        };
        let (key, value) = (tunnel_key(&self.host), records::encode(&record));
        let revision = shared.store.put(&key, value.clone()).await.context("writing this host's tunnel record")?;
        self.state().wrote(key, value, revision);
        Ok(())
    }

    /// This host's tunnel address: the one it had (its record, or its claim), else a stable pick
    /// from a hash of the host id, else the next free one. True when the claim is new.
    async fn claim_tunnel_ip(&self, shared: &Shared) -> Result<(IpAddr, bool)> {
        let subnet = self.config.crypt.subnet;
        let previous = match shared.store.get(&tunnel_key(&self.host)).await? {
            Some(kv) => records::decode::<TunnelRecord>(&kv.key, &kv.value).ok().map(|t| t.tunnel_ip),
            None => None,
        };
        let picks = previous.filter(|ip| subnet.contains(*ip)).into_iter().chain(candidates(subnet, &self.host)?);
        for ip in picks.take(CLAIM_ATTEMPTS) {
            let key = tunnel_ip_key(ip);
            let txn = Txn::new().when(Condition::Absent(key.clone())).put(key.clone(), self.host.as_bytes().to_vec());
            if shared.store.txn(txn).await?.committed() {
                debug!(%ip, "tunnel address claimed");
                return Ok((ip, true));
            }
            if shared.store.get(&key).await?.is_some_and(|kv| kv.value == self.host.as_bytes()) {
                return Ok((ip, false));
            }
        }
        bail!("no free tunnel address in {subnet} after {CLAIM_ATTEMPTS} tries; give a larger --tunnel-subnet")
    }

    /// The store's tunnel records of the other hosts (not gone) given to the tunnel, if changed.
    pub async fn sync_tunnel_peers(&self) {
        let mut crypt = self.crypt.lock().await;
        let Some(host) = crypt.as_mut() else { return };
        let peers: Vec<TunnelPeer> = {
            let state = self.state();
            state
                .cache
                .tunnels
                .iter()
                .filter(|(name, _)| **name != self.host && state.liveness(name) != crate::liveness::Liveness::Gone)
                .filter_map(|(name, (record, _))| match PublicKey::from_base64(&record.public_key) {
                    Ok(public_key) => Some(TunnelPeer {
                        host: name.clone(),
                        public_key,
                        endpoint: record.endpoint,
                        tunnel_ip: record.tunnel_ip,
                    }),
                    Err(e) => {
                        warn!(host = %name, "tunnel record: {e:#}");
                        None
                    }
                })
                .collect()
        };
        if peers == host.peers {
            return;
        }
        match host.tunnel.set_peers(&peers) {
            Ok(()) => {
                let names: Vec<&str> = peers.iter().map(|p| p.host.as_str()).collect();
                info!(peers = ?names, count = names.len(), "tunnel peers set");
                host.peers = peers;
            }
            Err(e) => warn!("setting the tunnel's peers: {e:#}"),
        }
    }

    /// The tunnel goes with this host's last encrypted network: device, store record, claim,
    /// key file, namespace. Without a running tunnel, what a previous run left is removed.
    pub async fn release_tunnel_if_unused(&self) {
        let mut crypt = self.crypt.lock().await;
        if self.state().dataplanes.values().any(|dp| dp.encrypted) {
            return;
        }
        let Some(host) = crypt.take() else {
            drop(crypt);
            // An encrypted network whose tunnel could not start (yet) keeps the key and namespace.
            if !self.state().networks.values().any(|n| n.config.encrypted) {
                self.remove_tunnel_leftovers().await;
            }
            return;
        };
        let CryptHost { netns, netlink, tunnel, tunnel_ip, .. } = host;
        if let Err(e) = tunnel.remove().await {
            warn!("removing the tunnel device: {e:#}");
        }
        drop((netns, netlink));
        let undo = Undo {
            netns: Some(self.crypt_netns_path()),
            key: Some(self.config.crypt.state_dir.clone()),
            claim: Some(tunnel_ip),
            record: true,
        };
        match &self.shared {
            Ok(shared) => undo.run(self, shared).await,
            Err(_) => undo.run_local(),
        }
        info!("tunnel removed: no encrypted network is left on this host");
    }

    /// A tunnel namespace or key file with no encrypted network here (the driver stopped while
    /// removing the last one, or the networks went while it was down), and at start this host's
    /// store records of them.
    pub async fn remove_tunnel_leftovers(&self) {
        let path = self.crypt_netns_path();
        let key_file = self.config.crypt.state_dir.join(crate::crypt::keys::KEY_FILE);
        if !path.exists() && !key_file.exists() {
            return;
        }
        info!("removing a tunnel left from before: no encrypted network is on this host");
        let undo =
            Undo { netns: Some(path), key: Some(self.config.crypt.state_dir.clone()), claim: None, record: true };
        match &self.shared {
            Ok(shared) => {
                let claim = match shared.store.get(&tunnel_key(&self.host)).await {
                    Ok(Some(kv)) => records::decode::<TunnelRecord>(&kv.key, &kv.value).ok().map(|t| t.tunnel_ip),
                    Ok(None) => None,
                    Err(e) => {
                        warn!("reading this host's tunnel record: {e}");
                        None
                    }
                };
                Undo { claim, ..undo }.run(self, shared).await
            }
            Err(_) => undo.run_local(),
        }
    }

    /// `Netloom.RotateKey`: a new key pair for this host's tunnel; peers pick it up from the store
    /// record and handshake again.
    pub async fn rotate_key(&self) -> PluginResult<PublicKey> {
        let shared = self.shared()?;
        let mut crypt = self.crypt.lock().await;
        let Some(host) = crypt.as_mut() else {
            return Err(PluginError::new(
                "this host has no tunnel: no encrypted network is on it (create one with -o encrypted first)",
            ));
        };
        let key = KeyPair::rotate(&self.config.crypt.state_dir).map_err(|e| PluginError::new(format!("{e:#}")))?;
        host.tunnel.set_key(&key).map_err(|e| PluginError::new(format!("giving the tunnel its new key: {e:#}")))?;
        host.public_key = key.public;
        self.put_tunnel_record(shared, host).await.map_err(|e| PluginError::new(format!("{e:#}")))?;
        info!(public_key = %key.public.to_base64(), "tunnel key rotated");
        Ok(key.public)
    }

    /// The reconciler's check: a tunnel device that went missing is started again (same key,
    /// same address), as is a tunnel that encrypted networks here need but that is not running.
    pub async fn repair_tunnel(&self) {
        let mut crypt = self.crypt.lock().await;
        match crypt.as_ref() {
            Some(host) => match host.netlink.link(DEVICE).await {
                Ok(Some(_)) => return,
                Ok(None) => {
                    warn!("the tunnel device {DEVICE} is missing; starting the tunnel again");
                    if let Some(old) = crypt.take() {
                        // Frees the WireGuard port for the new one; the device is gone already.
                        let _ = old.tunnel.remove().await;
                    }
                }
                Err(e) => {
                    debug!("checking the tunnel device: {e:#}");
                    return;
                }
            },
            None if !self.state().dataplanes.values().any(|dp| dp.encrypted) => return,
            None => warn!("encrypted networks are here but their tunnel is not running; starting it"),
        }
        drop(crypt);
        let underlay = match self.underlay().await {
            Ok(underlay) => underlay,
            Err(e) => {
                warn!("starting the tunnel again: {}", e.message());
                return;
            }
        };
        match self.ensure_tunnel(&underlay).await {
            Ok(_) => info!("tunnel started again"),
            Err(e) => warn!("{}", e.message()),
        }
    }
}

/// What a tunnel start made, removed in reverse order.
#[derive(Default)]
struct Undo {
    netns: Option<PathBuf>,
    /// The state directory whose key file goes.
    key: Option<PathBuf>,
    claim: Option<IpAddr>,
    record: bool,
}

impl Undo {
    async fn run(self, overlay: &Overlay, shared: &Shared) {
        if self.record {
            let key = tunnel_key(&overlay.host);
            match shared.store.delete(&key).await {
                Ok(_) => overlay.state().deleted(&key),
                Err(e) => warn!("deleting this host's tunnel record: {e}"),
            }
        }
        if let Some(ip) = self.claim {
            if let Err(e) = release_claim(shared, &overlay.host, ip).await {
                warn!(%ip, "releasing the tunnel address: {e:#}");
            }
        }
        Undo { record: false, claim: None, ..self }.run_local();
    }

    fn run_local(self) {
        if let Some(state_dir) = &self.key {
            if let Err(e) = KeyPair::delete(state_dir) {
                warn!("removing the tunnel's private key: {e:#}");
            }
        }
        if let Some(path) = &self.netns {
            if let Err(e) = Netns::delete(path) {
                warn!("removing the tunnel namespace: {e:#}");
            }
        }
    }
}

/// Deletes the claim of `ip` if it is still this host's.
async fn release_claim(shared: &Shared, host: &str, ip: IpAddr) -> Result<()> {
    let key = tunnel_ip_key(ip);
    let Some(kv) = shared.store.get(&key).await? else { return Ok(()) };
    if kv.value != host.as_bytes() {
        return Ok(());
    }
    shared.store.txn(Txn::new().when(Condition::Revision(key.clone(), kv.revision)).delete(key)).await?;
    Ok(())
}

impl Overlay {
    /// The tunnel for `loomctl status`: None without one; never waits (a tunnel being started or
    /// changed just then is reported as busy).
    #[cfg_attr(not(test), allow(dead_code))] // for loomctl's status, once it asks
    pub fn tunnel_status(&self) -> Option<serde_json::Value> {
        let Ok(crypt) = self.crypt.try_lock() else { return Some(serde_json::json!({ "busy": true })) };
        let host = crypt.as_ref()?;
        let stats = host.tunnel.stats();
        let peers: Vec<serde_json::Value> = host
            .peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "host": p.host,
                    "public_key": p.public_key.to_base64(),
                    "endpoint": p.endpoint.to_string(),
                    "tunnel_ip": p.tunnel_ip.to_string(),
                })
            })
            .collect();
        Some(serde_json::json!({
            "kind": host.tunnel.kind().to_string(),
            "kernel_wireguard": host.tunnel.kernel_available(),
            "public_key": host.public_key.to_base64(),
            "endpoint": host.endpoint.to_string(),
            "tunnel_ip": host.tunnel_ip.to_string(),
            "peers": peers,
            "stats": {
                "tx_packets": stats.tx_packets,
                "tx_bytes": stats.tx_bytes,
                "rx_packets": stats.rx_packets,
                "rx_bytes": stats.rx_bytes,
                "dropped": stats.dropped,
                "handshakes": stats.handshakes,
            },
        }))
    }
}
