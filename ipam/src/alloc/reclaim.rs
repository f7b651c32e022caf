//! For reconcilers: what hosts without a live lease left behind, and freeing it on request.
//!
//! Nothing is freed automatically: a host whose lease expired may only be partitioned, and its
//! containers may still use their addresses. A reconciler (or an operator) decides, then calls
//! [`Ipam::reclaim_host`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tracing::info;

use super::cidr::Subnet;
use super::keys;
use super::records::{self, Kind, OwnerRecord, PoolRecord};
use crate::error::{IpamError, IpamResult};
use crate::ipam::Ipam;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// `count` RequestPool references of `host` to the pool `pool_id` (`<space>/<subnet>`).
    PoolReference {
        pool_id: String,
        host: String,
        count: u32,
    },
    Address {
        pool_id: String,
        ip: IpAddr,
        owner: OwnerRecord,
    },
    Vni {
        vni: u32,
        owner: OwnerRecord,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub addresses: usize,
    pub pool_references: u32,
}

impl Ipam {
    /// Hosts whose lease is held (the embedded store keeps every host that ever ran).
    pub async fn live_hosts(&self) -> IpamResult<BTreeSet<String>> {
        Ok(self.store.list(keys::HOSTS).await?.into_iter().map(|kv| kv.key[keys::HOSTS.len()..].to_string()).collect())
    }

    /// Pool references, endpoint addresses and VNIs recorded for hosts that are not live.
    pub async fn leftovers(&self) -> IpamResult<Vec<Leftover>> {
        let live = self.live_hosts().await?;
        let mut out = Vec::new();
        for pool in self.pools().await? {
            for (host, count) in &pool.hosts {
                if !live.contains(host) {
                    out.push(Leftover::PoolReference {
                        pool_id: pool.pool_id.clone(),
                        host: host.clone(),
                        count: *count,
                    });
                }
            }
            for addr in self.addresses(&pool.pool_id).await? {
                if addr.owner.kind == Kind::Endpoint && !live.contains(&addr.owner.host) {
                    out.push(Leftover::Address { pool_id: pool.pool_id.clone(), ip: addr.ip, owner: addr.owner });
                }
            }
        }
        for v in self.vnis().await? {
            if !live.contains(&v.owner.host) {
                out.push(Leftover::Vni { vni: v.vni, owner: v.owner });
            }
        }
        Ok(out)
    }

    /// Frees the endpoint addresses `host` took and drops its pool references (deleting pools no
    /// other host holds). VNIs are network-wide and stay. Refused while the host is live.
    pub async fn reclaim_host(&self, host: &str) -> IpamResult<Reclaimed> {
        if self.live_hosts().await?.contains(host) {
            return Err(IpamError::InUse(format!(
                "host {host} is live (its lease is held); stop it before reclaiming"
            )));
        }
        let mut done = Reclaimed::default();
        let pools: Vec<(String, PoolRecord)> = {
            let mut v = Vec::new();
            for kv in self.store.list(keys::POOLS).await? {
                v.push((kv.key.clone(), records::decode::<PoolRecord>(&kv)?));
            }
            v
        };
        for (key, rec) in pools {
            let subnet = Subnet::parse(&rec.subnet).map_err(|detail| IpamError::Corrupt { key, detail })?;
            let pool_id = format!("{}/{subnet}", rec.space);
            for addr in self.addresses(&pool_id).await? {
                if addr.owner.kind == Kind::Endpoint && addr.owner.host == host {
                    let id = super::pools::parse_pool_id(&pool_id)?;
                    self.free_address(&id, addr.ip, host, None).await?;
                    done.addresses += 1;
                }
            }
            done.pool_references += self.drop_references(&rec.space, &subnet, host, None).await?;
        }
        info!(host, addresses = done.addresses, pool_references = done.pool_references, "dead host reclaimed");
        Ok(done)
    }
}

/// Groups leftovers by host, for reports.
pub fn by_host(leftovers: &[Leftover]) -> BTreeMap<String, Vec<&Leftover>> {
    let mut map: BTreeMap<String, Vec<&Leftover>> = BTreeMap::new();
    for l in leftovers {
        let host = match l {
            Leftover::PoolReference { host, .. } => host,
            Leftover::Address { owner, .. } | Leftover::Vni { owner, .. } => &owner.host,
        };
        map.entry(host.clone()).or_default().push(l);
    }
    map
}
