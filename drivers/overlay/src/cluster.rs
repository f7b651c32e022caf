//! Network records in the shared store: creating, joining and leaving networks, with their VNIs
//! taken from the IPAM's VNI table. Every change is one store transaction conditioned on what
//! was read, so hosts acting at the same moment agree on one record and one VNI.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use ipnetwork::IpNetwork;
use netloom_ipam::{Ipam, IpamError};
use netloom_store::{Condition, Revision, Store, StoreError, Txn, TxnOutcome};
use tracing::{info, warn};

use crate::options::subnet_key;
use crate::records::{
    self, local_network_key, network_key, subnet_index_key, vni_owner, Mode, NetworkConfig, PeerRecord,
};

/// Bounded: each retry means another host changed the same record in between.
const ATTEMPTS: usize = 20;
/// Reads of a record after a write whose outcome is unknown, before giving up.
const READ_BACK_ATTEMPTS: usize = 3;

pub struct Shared {
    pub store: Arc<dyn Store>,
    pub ipam: Ipam,
}

/// What a host asks for when it creates a network.
#[derive(Debug, Clone)]
pub struct NetworkRequest {
    pub docker_id: String,
    pub host: String,
    pub vni: Option<u32>,
    pub subnet_v4: Option<IpNetwork>,
    pub subnet_v6: Option<IpNetwork>,
    /// The containers' MTU this host would use.
    pub mtu: u32,
    /// Whether the user gave the MTU (else another host's choice is taken).
    pub mtu_given: bool,
    pub internal: bool,
    pub encrypted: bool,
}

impl NetworkRequest {
    fn subnets(&self) -> Vec<IpNetwork> {
        self.subnet_v4.into_iter().chain(self.subnet_v6).collect()
    }

    fn config(&self, key: String, mode: Mode, vni: u32) -> NetworkConfig {
        let members = match mode {
            Mode::Local => BTreeMap::from([(self.host.clone(), self.docker_id.clone())]),
            Mode::Global => BTreeMap::new(),
        };
        NetworkConfig {
            key,
            mode,
            vni,
            subnet_v4: self.subnet_v4,
            subnet_v6: self.subnet_v6,
            mtu: self.mtu,
            internal: self.internal,
            encrypted: self.encrypted,
            created_by: self.host.clone(),
            created_at: records::now(),
            members,
        }
    }
}

/// What [`Shared::release_global`] did with a network's store record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalRelease {
    /// Deleted (or it was already gone).
    Deleted,
    /// Kept: these live hosts still publish endpoints on the network.
    KeptFor(Vec<String>),
}

/// How a network record came to be, for rolling back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Joined,
}

impl Shared {
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    async fn read(&self, key: &str) -> Result<Option<(NetworkConfig, Revision)>> {
        match self.store.get(&network_key(key)).await? {
            Some(kv) => Ok(Some((records::decode(&kv.key, &kv.value)?, kv.revision))),
            None => Ok(None),
        }
    }

    pub async fn network(&self, key: &str) -> Result<Option<(NetworkConfig, Revision)>> {
        self.read(key).await
    }

    /// Global scope: the record of a network only this host's dockerd saw created.
    pub async fn create_global(&self, req: &NetworkRequest) -> Result<(NetworkConfig, Revision)> {
        let key = req.docker_id.clone();
        if let Some(existing) = self.read(&key).await? {
            return Ok(existing);
        }
        let owner = vni_owner(&key);
        let vni = self.take_vni(req.vni, &owner).await?;
        let config = req.config(key.clone(), Mode::Global, vni);
        let txn =
            Txn::new().when(Condition::Absent(network_key(&key))).put(network_key(&key), records::encode(&config));
        match self.store.txn(txn).await {
            Ok(TxnOutcome::Committed(revision)) => {
                info!(network = %records::short(&key), vni, "network recorded");
                Ok((config, revision))
            }
            Ok(TxnOutcome::Conflict) => match self.read(&key).await? {
                Some(existing) => Ok(existing),
                None => {
                    bail!("network {} changed in the store while it was being created; try again", records::short(&key))
                }
            },
            Err(e) => {
                self.release_quietly(vni, &owner).await;
                Err(e.into())
            }
        }
    }

    /// Local scope: the network named by the VNI option, or else by the subnet, joined if
    /// another host made it already, else made. Hosts racing to make the same network end with
    /// one record: the loser of the transaction joins the winner's.
    pub async fn join_local(&self, req: &NetworkRequest) -> Result<(NetworkConfig, Outcome, Revision)> {
        let subnets = req.subnets();
        let Some(primary) = subnets.first().copied() else { bail!("a loom-overlay network needs a subnet (--subnet)") };
        for _ in 0..ATTEMPTS {
            let mut by_subnet = None;
            for subnet in &subnets {
                if let Some(kv) = self.store.get(&subnet_index_key(subnet)).await? {
                    by_subnet = Some((String::from_utf8_lossy(&kv.value).into_owned(), *subnet));
                    break;
                }
            }
            let target = match (req.vni, &by_subnet) {
                (Some(vni), Some((key, subnet))) if *key != local_network_key(vni) => bail!(
                    "subnet {subnet} is already the overlay {key}; give -o com.docker.network.driver.overlay.vxlanid_list={} \
                     (or no VNI) to join it, or use another subnet",
                    key.trim_start_matches("vni-")
                ),
                (Some(vni), _) => Some(local_network_key(vni)),
                (None, Some((key, _))) => Some(key.clone()),
                (None, None) => None,
            };
            if let Some(key) = &target {
                if let Some((config, revision)) = self.read(key).await? {
                    check_same_network(&config, req)?;
                    if let Some(other) = config.members.get(&req.host).filter(|id| **id != req.docker_id) {
                        bail!(
                            "this host already has Docker network {} for the overlay with VNI {}; use that one",
                            records::short(other),
                            config.vni
                        );
                    }
                    let mut updated = config.clone();
                    updated.members.insert(req.host.clone(), req.docker_id.clone());
                    if updated == config {
                        return Ok((config, Outcome::Joined, revision));
                    }
                    let txn = Txn::new()
                        .when(Condition::Revision(network_key(key), revision))
                        .put(network_key(key), records::encode(&updated));
                    if let Some(revision) = self.change_membership(key, txn, is_member(req)).await? {
                        info!(network = %key, vni = config.vni, "joined the network other hosts made");
                        return Ok((updated, Outcome::Joined, revision));
                    }
                    continue;
                }
            }
            // A new network. Hosts creating it at the same moment get the same VNI: it is
            // reserved (or allocated) for the same owner name.
            let owner = match req.vni {
                Some(vni) => vni_owner(&local_network_key(vni)),
                None => subnet_vni_owner(&primary),
            };
            let vni = self.take_vni(req.vni, &owner).await?;
            let key = local_network_key(vni);
            let config = req.config(key.clone(), Mode::Local, vni);
            let mut txn =
                Txn::new().when(Condition::Absent(network_key(&key))).put(network_key(&key), records::encode(&config));
            for subnet in &subnets {
                txn = txn.when(Condition::Absent(subnet_index_key(subnet))).put(subnet_index_key(subnet), key.clone());
            }
            if let Some(revision) = self.change_membership(&key, txn, is_member(req)).await? {
                info!(network = %key, vni, subnets = ?subnets, "network recorded");
                return Ok((config, Outcome::Created, revision));
            }
            // Someone else was quicker. If it is this very network (same VNI), join it next
            // round; if its subnet went to another network, the VNI is not ours to keep.
            if self.read(&key).await?.is_none() {
                self.release_quietly(vni, &owner).await;
            }
        }
        bail!("other hosts kept changing the network's store records; try again")
    }

    /// Undoes `join_local` or `leave`s: this host stops using the network; the last host out
    /// deletes its records, its peers and its VNI.
    pub async fn leave_local(&self, key: &str, host: &str) -> Result<()> {
        for _ in 0..ATTEMPTS {
            let Some((config, revision)) = self.read(key).await? else { return Ok(()) };
            let mut updated = config.clone();
            updated.members.remove(host);
            let txn = Txn::new().when(Condition::Revision(network_key(key), revision));
            let txn = if updated.members.is_empty() {
                let mut txn = txn
                    .delete(network_key(key))
                    .delete_prefix(records::peers_prefix(key))
                    .delete_prefix(records::names_prefix(key));
                for subnet in config.subnets() {
                    txn = txn.delete(subnet_index_key(&subnet));
                }
                txn
            } else {
                txn.put(network_key(key), records::encode(&updated))
            };
            let left = |now: Option<&NetworkConfig>| now.is_none_or(|c| !c.members.contains_key(host));
            if self.change_membership(key, txn, left).await?.is_some() {
                if updated.members.is_empty() {
                    self.release_network_vni(&config).await?;
                    info!(network = %key, vni = config.vni, "last host left the network; records and VNI released");
                }
                return Ok(());
            }
        }
        bail!("other hosts kept changing network {key}'s store record; try again")
    }

    /// Global scope, when this host removes the network (Docker's DeleteNetwork, or this host's
    /// Docker no longer having it): the record, its peers and its VNI go, unless another live
    /// host still publishes endpoints on it. Docker refuses to remove a network with endpoints
    /// anywhere, so such endpoints mean this host's view is not the cluster's: the record stays
    /// for them, and the last of them to remove the network deletes it.
    pub async fn release_global(&self, key: &str, own_host: &str) -> Result<GlobalRelease> {
        let mut users = BTreeSet::new();
        for kv in self.store.list(&records::peers_prefix(key)).await? {
            match records::decode::<PeerRecord>(&kv.key, &kv.value) {
                Ok(peer) if peer.host != own_host => {
                    users.insert(peer.host);
                }
                Ok(_) => {}
                Err(e) => warn!("{e:#}"),
            }
        }
        if !users.is_empty() {
            let live: BTreeSet<String> = self
                .store
                .list(records::HOSTS)
                .await?
                .into_iter()
                .filter_map(|kv| kv.key.strip_prefix(records::HOSTS).map(str::to_string))
                .collect();
            users.retain(|host| live.contains(host));
        }
        if !users.is_empty() {
            return Ok(GlobalRelease::KeptFor(users.into_iter().collect()));
        }
        self.delete_global(key).await?;
        Ok(GlobalRelease::Deleted)
    }

    /// Global scope: removes the network, its peers and its VNI.
    pub async fn delete_global(&self, key: &str) -> Result<()> {
        let Some((config, revision)) = self.read(key).await? else { return Ok(()) };
        let txn = Txn::new()
            .when(Condition::Revision(network_key(key), revision))
            .delete(network_key(key))
            .delete_prefix(records::peers_prefix(key))
            .delete_prefix(records::names_prefix(key));
        if !self.store.txn(txn).await?.committed() {
            bail!("network {} changed in the store while it was being removed; try again", records::short(key));
        }
        self.release_network_vni(&config).await?;
        info!(network = %records::short(key), vni = config.vni, "network removed from the store");
        Ok(())
    }

    /// Local scope, after a store lost its data or a record was removed behind this host's back:
    /// writes the network back as this host knows it. A record under the same key that describes
    /// another network (another VNI or subnet: the key was freed and reused while this host was
    /// away) is not joined, and the VNI must be this network's again before the record is written.
    pub async fn restore_local(&self, config: &NetworkConfig, host: &str, docker_id: &str) -> Result<()> {
        let key = &config.key;
        match self.read(key).await? {
            Some((current, revision)) => {
                check_same_identity(&current, config)?;
                if current.members.get(host).map(String::as_str) == Some(docker_id) {
                    return Ok(());
                }
                let mut updated = current;
                updated.members.insert(host.to_string(), docker_id.to_string());
                let txn = Txn::new()
                    .when(Condition::Revision(network_key(key), revision))
                    .put(network_key(key), records::encode(&updated));
                let joined = |now: Option<&NetworkConfig>| {
                    now.is_some_and(|c| c.members.get(host).map(String::as_str) == Some(docker_id))
                };
                self.change_membership(key, txn, joined).await?;
            }
            None => {
                self.ipam.reserve_vni(config.vni, &vni_owner(key)).await.map_err(|e| {
                    anyhow!("network {key} cannot be written back to the store: its VNI {}: {e}", config.vni)
                })?;
                let mut restored = config.clone();
                restored.members.insert(host.to_string(), docker_id.to_string());
                let mut txn = Txn::new()
                    .when(Condition::Absent(network_key(key)))
                    .put(network_key(key), records::encode(&restored));
                for subnet in config.subnets() {
                    let index = subnet_index_key(&subnet);
                    txn = match self.store.get(&index).await? {
                        // Left behind with the record gone: still this network's.
                        Some(kv) if kv.value == key.as_bytes() => txn.when(Condition::Revision(index, kv.revision)),
                        _ => txn.when(Condition::Absent(index.clone())).put(index, key.clone()),
                    };
                }
                let joined = |now: Option<&NetworkConfig>| {
                    now.is_some_and(|c| c.members.get(host).map(String::as_str) == Some(docker_id))
                };
                if self.change_membership(key, txn, joined).await?.is_some() {
                    warn!(network = %key, "network record was missing from the store; written back");
                } else if self.read(key).await?.is_none() {
                    // Its subnet went to another network meanwhile: the VNI is not ours to keep.
                    self.release_quietly(config.vni, &vni_owner(key)).await;
                    bail!("network {key} cannot be written back to the store: another overlay has its subnet now");
                }
            }
        }
        Ok(())
    }

    /// Sends a transaction that changes a network record's members. When the store does not say
    /// whether it was applied (a timeout), the record is read back and `applied` decides, so that
    /// a retry neither adds a member twice nor leaves a membership nobody knows of (which would
    /// keep the network, and its VNI, alive forever). `None`: not applied (a conflict).
    async fn change_membership<F>(&self, key: &str, txn: Txn, applied: F) -> Result<Option<Revision>>
    where
        F: Fn(Option<&NetworkConfig>) -> bool,
    {
        let error = match self.store.txn(txn).await {
            Ok(TxnOutcome::Committed(revision)) => return Ok(Some(revision)),
            Ok(TxnOutcome::Conflict) => return Ok(None),
            Err(e @ StoreError::Unavailable { .. }) => e,
            Err(e) => return Err(e.into()),
        };
        warn!(network = %key, "store write outcome unknown ({error}); reading the record back");
        let mut pause = Duration::from_millis(100);
        for _ in 0..READ_BACK_ATTEMPTS {
            match self.read(key).await {
                Ok(now) => {
                    let done = applied(now.as_ref().map(|(c, _)| c));
                    info!(network = %key, applied = done, "read back a write whose outcome was unknown");
                    return Ok(done.then(|| now.map(|(_, r)| r).unwrap_or(0)));
                }
                Err(e) => warn!(network = %key, "reading back a write whose outcome is unknown: {e:#}"),
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        Err(anyhow!(error).context(format!("network {key}: the store did not say whether the change was applied")))
    }

    async fn take_vni(&self, wanted: Option<u32>, owner: &str) -> Result<u32> {
        match wanted {
            Some(vni) => match self.ipam.reserve_vni(vni, owner).await {
                Ok(()) => Ok(vni),
                Err(IpamError::InUse(detail)) => {
                    Err(anyhow!("VNI {vni} is already used by another network ({detail})"))
                }
                Err(e) => Err(e.into()),
            },
            None => Ok(self.ipam.allocate_vni(owner).await?),
        }
    }

    /// Frees the VNI of a network whose record is gone: held under the network's key, or (made
    /// without a VNI option, keyed by its subnet) under its subnet. A VNI another owner holds now
    /// is not this network's to free.
    async fn release_network_vni(&self, config: &NetworkConfig) -> Result<()> {
        let by_subnet = config.subnets().first().map(subnet_vni_owner);
        for owner in std::iter::once(vni_owner(&config.key)).chain(by_subnet) {
            match self.ipam.release_vni_of(config.vni, &owner).await {
                Ok(()) => return Ok(()),
                Err(IpamError::NotHolder(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        warn!(network = %records::short(&config.key), vni = config.vni, "the VNI is another network's now; left to it");
        Ok(())
    }

    pub async fn release_quietly(&self, vni: u32, owner: &str) {
        if let Err(e) = self.ipam.release_vni_of(vni, owner).await {
            warn!(vni, "releasing VNI: {e}");
        }
    }
}

/// The VNI owner of a local-scope network made without a VNI option: hosts creating it with the
/// same subnet at the same moment get the same VNI.
fn subnet_vni_owner(subnet: &IpNetwork) -> String {
    format!("overlay:subnet:{}", subnet_key(subnet))
}

/// `req`'s host is a member of the network, for its Docker network.
fn is_member(req: &NetworkRequest) -> impl Fn(Option<&NetworkConfig>) -> bool + '_ {
    move |now| now.is_some_and(|c| c.members.get(&req.host) == Some(&req.docker_id))
}

/// Two records of one network: same VNI, same subnets, both encrypted or both plain.
pub fn same_identity(a: &NetworkConfig, b: &NetworkConfig) -> bool {
    a.vni == b.vni && a.subnets() == b.subnets() && a.encrypted == b.encrypted
}

fn encryption(encrypted: bool) -> &'static str {
    if encrypted {
        "encrypted"
    } else {
        "plain (not encrypted)"
    }
}

/// A record read back from the store must be the network this host has.
fn check_same_identity(current: &NetworkConfig, mine: &NetworkConfig) -> Result<()> {
    if same_identity(current, mine) {
        return Ok(());
    }
    let list = |c: &NetworkConfig| c.subnets().iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
    bail!(
        "the store's record {} is another network now (VNI {}, subnet {}{}), not this host's (VNI {}, subnet {}{}): not \
         joined; remove this host's Docker network and create it again",
        current.key,
        current.vni,
        list(current),
        if current.encrypted { ", encrypted" } else { "" },
        mine.vni,
        list(mine),
        if mine.encrypted { ", encrypted" } else { "" },
    )
}

/// A host joining a local-scope network must describe the same network.
fn check_same_network(config: &NetworkConfig, req: &NetworkRequest) -> Result<()> {
    if config.subnet_v4 != req.subnet_v4 || config.subnet_v6 != req.subnet_v6 {
        let theirs: Vec<String> = config.subnets().iter().map(ToString::to_string).collect();
        let ours: Vec<String> = req.subnets().iter().map(ToString::to_string).collect();
        bail!(
            "VNI {} is already used by the overlay with subnet {}, not {}; give the same --subnet to join it, or another VNI",
            config.vni,
            theirs.join(" "),
            ours.join(" ")
        );
    }
    if config.encrypted != req.encrypted {
        bail!(
            "the overlay with VNI {} is {} on the other hosts, but this request is {}; give the same -o encrypted \
             option as they did",
            config.vni,
            encryption(config.encrypted),
            encryption(req.encrypted)
        );
    }
    if req.mtu_given && req.mtu != config.mtu {
        bail!(
            "the overlay with VNI {} has MTU {} on the other hosts; give the same com.docker.network.driver.mtu (or none)",
            config.vni,
            config.mtu
        );
    }
    Ok(())
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod ownership_tests;

#[cfg(test)]
mod tests {
    use netloom_ipam::IpamConfig;
    use netloom_store::{self as store, DEFAULT_PREFIX};

    use super::*;
    use crate::records::{host_key, peer_key, HostRecord};

    fn peer(host: &str, endpoint: &str) -> Vec<u8> {
        records::encode(&PeerRecord {
            host: host.into(),
            endpoint: endpoint.into(),
            vtep: "10.250.0.2".parse().unwrap(),
            port: 4789,
            mac: "02:42:0a:09:00:02".into(),
            ipv4: None,
            ipv6: None,
        })
    }

    #[tokio::test]
    async fn a_global_record_stays_while_another_live_host_has_endpoints_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(None, dir.path(), DEFAULT_PREFIX).await.unwrap();
        let ipam = Ipam::new(store.clone(), "h1", IpamConfig::default()).await.unwrap();
        let shared = Shared { store: store.clone(), ipam };
        let request = NetworkRequest {
            docker_id: "n1".into(),
            host: "h1".into(),
            vni: None,
            subnet_v4: Some("10.9.0.0/24".parse().unwrap()),
            subnet_v6: None,
            mtu: 1450,
            mtu_given: false,
            internal: false,
            encrypted: false,
        };
        shared.create_global(&request).await.unwrap();
        let live =
            HostRecord { vtep: "10.250.0.2".parse().unwrap(), port: 4789, pid: 1, version: "t".into(), started_at: 0 };
        store.put(&host_key("h2"), records::encode(&live)).await.unwrap();
        store.put(&peer_key("n1", "own"), peer("h1", "own")).await.unwrap();
        store.put(&peer_key("n1", "e2"), peer("h2", "e2")).await.unwrap();
        // h3's lease expired: its endpoint does not keep the record.
        store.put(&peer_key("n1", "e3"), peer("h3", "e3")).await.unwrap();

        assert_eq!(shared.release_global("n1", "h1").await.unwrap(), GlobalRelease::KeptFor(vec!["h2".into()]));
        assert!(shared.network("n1").await.unwrap().is_some());

        store.delete(&peer_key("n1", "e2")).await.unwrap();
        assert_eq!(shared.release_global("n1", "h1").await.unwrap(), GlobalRelease::Deleted);
        assert!(shared.network("n1").await.unwrap().is_none());
        assert!(store.list(&records::peers_prefix("n1")).await.unwrap().is_empty(), "peers go with the record");
        // Again: nothing left to do.
        assert_eq!(shared.release_global("n1", "h1").await.unwrap(), GlobalRelease::Deleted);
    }
}
