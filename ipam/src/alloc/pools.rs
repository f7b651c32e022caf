//! RequestPool / ReleasePool: pools are cluster-wide and reference-counted per host.
//!
//! Creating or deleting a pool rewrites its address space's index on the condition that the index
//! is unchanged, so two hosts can never create overlapping pools. Requesting a subnet that already
//! exists joins it: the same pool (same id) on every host.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use tracing::{debug, info, warn};

use super::cidr::{Family, Subnet};
use super::defaults;
use super::keys;
use super::poolid::{validate_space, PoolId};
use super::records::{self, decode_opt, PoolRecord, SpaceIndex};
use crate::error::{IpamError, IpamResult};
use crate::ipam::{backoff, Ipam};
use netloom_store::{Condition, KeyValue, Revision, Txn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGrant {
    /// Stable across restarts and identical on every host for the same subnet and range.
    pub pool_id: String,
    pub subnet: IpNetwork,
    /// RequestPool's `Data`; empty (Docker then asks for the gateway with RequestAddress).
    pub data: BTreeMap<String, String>,
}

/// A pool as stored, for listings and reconcilers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// `<space>/<subnet>`, without any range.
    pub pool_id: String,
    pub subnet: IpNetwork,
    pub hosts: BTreeMap<String, u32>,
    pub gateway: Option<String>,
}

impl Ipam {
    /// `pool` and `sub_pool` are CIDRs or empty; with `pool` empty a default pool of the space is
    /// carved out. `options` (`--ipam-opt`) are accepted and ignored.
    pub async fn request_pool(
        &self,
        space: &str,
        pool: &str,
        sub_pool: &str,
        options: &BTreeMap<String, String>,
        v6: bool,
    ) -> IpamResult<PoolGrant> {
        validate_space(space).map_err(IpamError::Invalid)?;
        let family = if v6 { Family::V6 } else { Family::V4 };
        let explicit = non_empty(pool).map(|p| Subnet::parse(p).map_err(|e| invalid_subnet("pool", e))).transpose()?;
        let range =
            non_empty(sub_pool).map(|r| Subnet::parse(r).map_err(|e| invalid_subnet("IP range", e))).transpose()?;
        if let Some(subnet) = &explicit {
            check_family(subnet, family, "pool")?;
        }
        if let Some(range) = &range {
            let Some(subnet) = &explicit else {
                return Err(IpamError::Invalid(format!(
                    "IP range {range} needs a subnet: pass --subnet along with --ip-range"
                )));
            };
            check_range(subnet, range)?;
        }
        for key in options.keys() {
            debug!(option = %key, "ignoring IPAM option");
        }
        let subnet = match explicit {
            Some(subnet) => self.join_or_create(space, subnet).await?,
            None => self.create_default(space, family).await?,
        };
        let id = PoolId { space: space.to_string(), subnet, range };
        info!(pool = %id, host = %self.host, "pool requested");
        Ok(PoolGrant { pool_id: id.to_string(), subnet: subnet.to_ipnetwork(), data: BTreeMap::new() })
    }

    /// Drops one of this host's references; the pool and its addresses go with the last
    /// reference of the last host. Releasing an unknown or unheld pool changes nothing.
    pub async fn release_pool(&self, pool_id: &str) -> IpamResult<()> {
        let id = parse_pool_id(pool_id)?;
        match self.drop_references(&id.space, &id.subnet, &self.host, Some(1)).await? {
            0 => warn!(pool = %id, host = %self.host, "release of a pool this host does not hold; nothing to do"),
            _ => info!(pool = %id, host = %self.host, "pool released"),
        }
        Ok(())
    }

    /// Every pool of every address space.
    pub async fn pools(&self) -> IpamResult<Vec<PoolInfo>> {
        let mut out = Vec::new();
        for kv in self.store.list(keys::POOLS).await? {
            let rec: PoolRecord = records::decode(&kv)?;
            let subnet =
                Subnet::parse(&rec.subnet).map_err(|detail| IpamError::Corrupt { key: kv.key.clone(), detail })?;
            out.push(PoolInfo {
                pool_id: format!("{}/{subnet}", rec.space),
                subnet: subnet.to_ipnetwork(),
                hosts: rec.hosts,
                gateway: rec.gateway,
            });
        }
        Ok(out)
    }

    async fn read_index(&self, space: &str) -> IpamResult<(SpaceIndex, Option<Revision>)> {
        let (index, rev) = decode_opt::<SpaceIndex>(self.store.get(&keys::space_index(space)).await?)?;
        Ok((index.unwrap_or_default(), rev))
    }

    async fn join_or_create(&self, space: &str, subnet: Subnet) -> IpamResult<Subnet> {
        let pool_key = keys::pool(space, &subnet);
        let turn = self.space_turn(space);
        let _turn = turn.lock().await;
        for attempt in 0..self.config.max_attempts {
            let (index, index_rev) = self.read_index(space).await?;
            let committed = if index.pools.contains(&subnet.to_string()) {
                let (rec, rev) = decode_opt::<PoolRecord>(self.store.get(&pool_key).await?)?;
                match rec {
                    Some(mut rec) => {
                        let held = rec.hosts.get(&self.host).copied().unwrap_or(0);
                        rec.hosts.insert(self.host.clone(), held + 1);
                        let txn =
                            Txn::new().when(Condition::unchanged(&pool_key, rev)).put(&pool_key, records::encode(&rec));
                        let what = format!("joining pool {space}/{subnet}");
                        let applied = || self.references_are(space, &subnet, &self.host, held + 1);
                        self.commit(&what, txn, applied).await?.committed()
                    }
                    // Listed but without a record: not written by this code; recreate the record.
                    None => self.create(space, subnet, index, index_rev).await?,
                }
            } else {
                let in_use = parse_index(space, &index)?;
                if let Some(other) = in_use.iter().find(|p| p.overlaps(&subnet)) {
                    return Err(IpamError::InUse(format!(
                        "pool {subnet} overlaps pool {other}, already in use in address space {space}; choose another subnet"
                    )));
                }
                self.create(space, subnet, index, index_rev).await?
            };
            if committed {
                return Ok(subnet);
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("requesting pool {subnet}")))
    }

    async fn create_default(&self, space: &str, family: Family) -> IpamResult<Subnet> {
        let candidates: Vec<_> = self
            .config
            .default_pools
            .get(space)
            .map(|pools| pools.iter().filter(|p| p.base.family() == family).copied().collect())
            .unwrap_or_default();
        if candidates.is_empty() {
            return Err(IpamError::Invalid(format!(
                "address space {space} has no default {} pools configured; pass a subnet (--subnet)",
                family.name()
            )));
        }
        let turn = self.space_turn(space);
        let _turn = turn.lock().await;
        for attempt in 0..self.config.max_attempts {
            let (index, index_rev) = self.read_index(space).await?;
            let in_use = parse_index(space, &index)?;
            let Some(subnet) = defaults::pick(&candidates, family, &in_use) else {
                let bases: Vec<String> = candidates.iter().map(|p| p.to_string()).collect();
                return Err(IpamError::Exhausted(format!(
                    "no free default {} pool left in address space {space} (carved from {}); pass a subnet (--subnet) or remove unused networks",
                    family.name(),
                    bases.join("; ")
                )));
            };
            if self.create(space, subnet, index, index_rev).await? {
                return Ok(subnet);
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("carving a default pool in address space {space}")))
    }

    /// Creates the pool with this host's first reference, if the index is still as read. The
    /// caller holds the space's turn.
    async fn create(
        &self,
        space: &str,
        subnet: Subnet,
        mut index: SpaceIndex,
        index_rev: Option<Revision>,
    ) -> IpamResult<bool> {
        let index_key = keys::space_index(space);
        let pool_key = keys::pool(space, &subnet);
        index.pools.insert(subnet.to_string());
        let rec = PoolRecord {
            space: space.to_string(),
            subnet: subnet.to_string(),
            hosts: BTreeMap::from([(self.host.clone(), 1)]),
            gateway: None,
            created_by: self.host.clone(),
            created_at: records::now(),
        };
        let txn = Txn::new()
            .when(Condition::unchanged(&index_key, index_rev))
            .when(Condition::Absent(pool_key.clone()))
            .put(index_key, records::encode(&index))
            .put(pool_key, records::encode(&rec));
        let applied = || self.references_are(space, &subnet, &self.host, 1);
        Ok(self.commit(&format!("creating pool {space}/{subnet}"), txn, applied).await?.committed())
    }

    /// Whether `host` holds exactly `count` references to the pool (0: the pool or the host's entry
    /// is gone). Only this process changes this host's count, and only in its space's turn, so
    /// after a write whose outcome is unknown the count tells whether it was applied.
    async fn references_are(&self, space: &str, subnet: &Subnet, host: &str, count: u32) -> IpamResult<bool> {
        let rec = decode_opt::<PoolRecord>(self.store.get(&keys::pool(space, subnet)).await?)?.0;
        Ok(rec.and_then(|r| r.hosts.get(host).copied()).unwrap_or(0) == count)
    }

    /// Serialises this process's changes to pool references in one address space.
    fn space_turn(&self, space: &str) -> std::sync::Arc<tokio::sync::Mutex<u128>> {
        self.cursor(&format!("\0space {space}"))
    }

    /// Removes `count` (or all, with `None`) of `host`'s references to a pool; deletes the pool and
    /// everything under it when no host holds it any more. Returns how many references were dropped.
    pub(crate) async fn drop_references(
        &self,
        space: &str,
        subnet: &Subnet,
        host: &str,
        count: Option<u32>,
    ) -> IpamResult<u32> {
        let pool_key = keys::pool(space, subnet);
        let turn = self.space_turn(space);
        let _turn = turn.lock().await;
        for attempt in 0..self.config.max_attempts {
            let Some(kv) = self.store.get(&pool_key).await? else { return Ok(0) };
            let mut rec: PoolRecord = records::decode(&kv)?;
            let Some(held) = rec.hosts.get(host).copied() else { return Ok(0) };
            let dropped = count.unwrap_or(held).min(held);
            if dropped == held {
                rec.hosts.remove(host);
            } else {
                rec.hosts.insert(host.to_string(), held - dropped);
            }
            let txn = if rec.hosts.is_empty() {
                self.delete_pool_txn(space, subnet, &kv).await?
            } else {
                Txn::new()
                    .when(Condition::Revision(pool_key.clone(), kv.revision))
                    .put(&pool_key, records::encode(&rec))
            };
            let what = format!("releasing pool {space}/{subnet} for host {host}");
            let applied = || async { Ok(!self.references_are(space, subnet, host, held).await?) };
            if self.commit(&what, txn, applied).await?.committed() {
                if rec.hosts.is_empty() {
                    info!(space, %subnet, "last reference gone; pool and its addresses deleted");
                }
                return Ok(dropped);
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("releasing pool {space}/{subnet}")))
    }

    async fn delete_pool_txn(&self, space: &str, subnet: &Subnet, pool: &KeyValue) -> IpamResult<Txn> {
        let index_key = keys::space_index(space);
        let (mut index, index_rev) = self.read_index(space).await?;
        index.pools.remove(&subnet.to_string());
        let txn = Txn::new()
            .when(Condition::Revision(pool.key.clone(), pool.revision))
            .when(Condition::unchanged(&index_key, index_rev))
            .delete(pool.key.clone())
            .delete_prefix(keys::addr_root(space, subnet));
        Ok(if index.pools.is_empty() { txn.delete(index_key) } else { txn.put(index_key, records::encode(&index)) })
    }
}

pub(crate) fn parse_pool_id(pool_id: &str) -> IpamResult<PoolId> {
    PoolId::parse(pool_id.trim()).map_err(IpamError::Invalid)
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

fn invalid_subnet(what: &str, e: String) -> IpamError {
    IpamError::Invalid(format!("{what}: {e}"))
}

fn check_family(subnet: &Subnet, family: Family, what: &str) -> IpamResult<()> {
    if subnet.family() == family {
        return Ok(());
    }
    Err(IpamError::Invalid(format!(
        "{what} {subnet} is {} but an {} pool was requested (V6={})",
        subnet.family().name(),
        family.name(),
        family == Family::V6
    )))
}

fn check_range(subnet: &Subnet, range: &Subnet) -> IpamResult<()> {
    if range.family() != subnet.family() || !subnet.contains(range) {
        return Err(IpamError::Invalid(format!("IP range {range} is not inside pool {subnet}")));
    }
    if dynamic_bounds(subnet, Some(range)).is_none() {
        return Err(IpamError::Invalid(format!("IP range {range} holds no assignable address of pool {subnet}")));
    }
    Ok(())
}

/// Where dynamic addresses come from: the pool's usable addresses, within the range if any.
pub(crate) fn dynamic_bounds(subnet: &Subnet, range: Option<&Subnet>) -> Option<(u128, u128)> {
    let (mut lo, mut hi) = subnet.usable();
    if let Some(r) = range {
        lo = lo.max(r.first());
        hi = hi.min(r.last());
    }
    (lo <= hi).then_some((lo, hi))
}

fn parse_index(space: &str, index: &SpaceIndex) -> IpamResult<Vec<Subnet>> {
    index
        .pools
        .iter()
        .map(|p| Subnet::parse(p).map_err(|detail| IpamError::Corrupt { key: keys::space_index(space), detail }))
        .collect()
}
