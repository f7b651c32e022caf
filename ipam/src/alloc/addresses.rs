//! RequestAddress / ReleaseAddress.
//!
//! An address is taken by one transaction that sets its bit in the pool's bitmap chunk (on the
//! condition that the chunk is unchanged) and writes its owner record; release does the reverse.
//! The gateway is a property of the pool: the first gateway request sets it, every later one (from
//! any host) gets the same address, and it stays taken until the pool itself is deleted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use tracing::{debug, warn};

use super::bitspace::{BitSpace, Slot};
use super::cidr::{ip_to_u128, parse_ip, u128_to_ip, Family, Subnet};
use super::keys;
use super::poolid::PoolId;
use super::pools::{dynamic_bounds, parse_pool_id};
use super::records::{self, decode_opt, Kind, OwnerRecord, PoolRecord};
use crate::error::{IpamError, IpamResult};
use crate::ipam::{backoff, Ipam, GATEWAY_ADDRESS_TYPE, MAC_ADDRESS_OPTION, OWNER_OPTION, REQUEST_ADDRESS_TYPE};
use netloom_store::{Condition, Revision, Txn};

/// An assigned address with its pool's prefix length; displays as `10.1.2.3/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressGrant {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for AddressGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInfo {
    pub ip: IpAddr,
    pub owner: OwnerRecord,
}

struct LoadedPool {
    key: String,
    record: PoolRecord,
    revision: Revision,
}

impl Ipam {
    /// `address` empty means "any free one" (from the pool id's range if it has one). Options:
    /// `RequestAddressType=com.docker.network.gateway` asks for the pool's gateway; `netloom.owner`
    /// or Docker's MAC option name the owner recorded with the address.
    pub async fn request_address(
        &self,
        pool_id: &str,
        address: &str,
        options: &BTreeMap<String, String>,
    ) -> IpamResult<AddressGrant> {
        let id = parse_pool_id(pool_id)?;
        let requested = match address.trim() {
            "" => None,
            text => Some(check_address(&id.subnet, text)?),
        };
        let owner = options.get(OWNER_OPTION).or_else(|| options.get(MAC_ADDRESS_OPTION)).cloned().unwrap_or_default();
        let gateway = options.get(REQUEST_ADDRESS_TYPE).is_some_and(|t| t == GATEWAY_ADDRESS_TYPE);
        let ip = if gateway {
            self.claim_gateway(&id, requested).await?
        } else if let Some(ip) = requested {
            self.claim_specific(&id, ip, &owner).await?
        } else {
            self.claim_next(&id, &owner).await?
        };
        let grant = AddressGrant { ip, prefix: id.subnet.prefix() };
        debug!(pool = %id, address = %grant, gateway, owner = %owner, "address assigned");
        Ok(grant)
    }

    /// Frees an address this host holds. The gateway stays until the pool is deleted (other hosts
    /// use it), and an address that isn't taken is already released: both succeed without changing
    /// anything. An address another host holds is refused: only its holder may free it.
    pub async fn release_address(&self, pool_id: &str, address: &str) -> IpamResult<()> {
        self.release_address_of(pool_id, address, None).await
    }

    /// [`release_address`](Self::release_address), also refused when `owner` (the endpoint id or
    /// MAC the address was requested with) is given and the address was recorded for another one.
    pub async fn release_address_of(&self, pool_id: &str, address: &str, owner: Option<&str>) -> IpamResult<()> {
        let id = parse_pool_id(pool_id)?;
        let ip = check_address(&id.subnet, address)?;
        let host = self.host.clone();
        self.free_address(&id, ip, &host, owner).await
    }

    /// Frees `ip` if `host` (and `owner`, when given) holds it; reclaiming a dead host's addresses
    /// passes that host.
    pub(crate) async fn free_address(
        &self,
        id: &PoolId,
        ip: IpAddr,
        host: &str,
        owner: Option<&str>,
    ) -> IpamResult<()> {
        let pool = self.load_pool(id).await?;
        if pool.record.gateway.as_deref() == Some(ip.to_string().as_str()) {
            debug!(pool = %id, %ip, "gateway release: kept until the pool is released");
            return Ok(());
        }
        let bits = self.address_bits(id);
        let owner_key = keys::addr_owner(&id.space, &id.subnet, ip);
        for attempt in 0..self.config.max_attempts {
            let slot = bits.slot(ip_to_u128(ip)).await?;
            if !slot.is_taken() {
                debug!(pool = %id, %ip, "release of an address that is not assigned; nothing to do");
                return Ok(());
            }
            let holder = decode_opt::<OwnerRecord>(self.store.get(&owner_key).await?)?.0;
            if let Some(holder) = &holder {
                check_holder(id, ip, holder, host, owner)?;
            }
            let claim = holder.map(|h| h.claim).unwrap_or_default();
            let txn = bits.free(&slot, Txn::new()).delete(&owner_key);
            let what = format!("releasing {ip} in pool {id}");
            let outcome = self.commit(&what, txn, || self.claim_gone(&owner_key, &claim)).await?;
            bits.after_free(&slot, outcome);
            if outcome.committed() {
                debug!(pool = %id, %ip, "address released");
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("releasing {ip} in pool {id}")))
    }

    /// Whether the record of the claim `claim` at `key` is gone (released, or taken again since).
    pub(crate) async fn claim_gone(&self, key: &str, claim: &str) -> IpamResult<bool> {
        let now = decode_opt::<OwnerRecord>(self.store.get(key).await?)?.0;
        Ok(now.is_none_or(|r| r.claim != claim))
    }

    /// Whether the record at `key` is the one written with `claim`.
    pub(crate) async fn claim_present(&self, key: &str, claim: &str) -> IpamResult<bool> {
        let now = decode_opt::<OwnerRecord>(self.store.get(key).await?)?.0;
        Ok(now.is_some_and(|r| r.claim == claim))
    }

    /// Every assigned address of a pool (the range part of the id is ignored), lowest first.
    pub async fn addresses(&self, pool_id: &str) -> IpamResult<Vec<AddressInfo>> {
        let id = parse_pool_id(pool_id)?;
        let prefix = keys::addr_owners(&id.space, &id.subnet);
        let mut out = Vec::new();
        for kv in self.store.list(&prefix).await? {
            let ip = kv.key[prefix.len()..]
                .parse::<IpAddr>()
                .map_err(|_| IpamError::Corrupt { key: kv.key.clone(), detail: "not an address key".into() })?;
            out.push(AddressInfo { ip, owner: records::decode(&kv)? });
        }
        out.sort_by_key(|a| ip_to_u128(a.ip));
        Ok(out)
    }

    fn address_bits(&self, id: &PoolId) -> BitSpace<'_> {
        BitSpace::new(self.store.as_ref(), keys::addr_bits(&id.space, &id.subnet), id.subnet.first())
            .with_cache(&self.chunks)
    }

    async fn load_pool(&self, id: &PoolId) -> IpamResult<LoadedPool> {
        let key = keys::pool(&id.space, &id.subnet);
        match decode_opt::<PoolRecord>(self.store.get(&key).await?)? {
            (Some(record), Some(revision)) => Ok(LoadedPool { key, record, revision }),
            _ => Err(IpamError::NotFound(format!(
                "unknown pool id {id}: no such pool (never requested, or already released)"
            ))),
        }
    }

    fn owner_record(&self, owner: &str, kind: Kind, claim: &str) -> Vec<u8> {
        records::encode(&OwnerRecord {
            host: self.host.clone(),
            owner: owner.to_string(),
            kind,
            at: records::now(),
            claim: claim.to_string(),
        })
    }

    async fn claim_specific(&self, id: &PoolId, ip: IpAddr, owner: &str) -> IpamResult<IpAddr> {
        let mut pool = self.load_pool(id).await?;
        let bits = self.address_bits(id);
        let owner_key = keys::addr_owner(&id.space, &id.subnet, ip);
        for attempt in 0..self.config.max_attempts {
            let slot = bits.slot(ip_to_u128(ip)).await?;
            if slot.is_taken() {
                return self.already_taken(id, ip, owner, &pool.record).await;
            }
            let claim = records::claim_id();
            let txn = Txn::new()
                .when(Condition::Exists(pool.key.clone()))
                .put(&owner_key, self.owner_record(owner, Kind::Endpoint, &claim));
            let what = format!("assigning {ip} in pool {id}");
            let outcome = self.commit(&what, bits.take(&slot, txn), || self.claim_present(&owner_key, &claim)).await?;
            bits.after_take(&slot, outcome);
            if outcome.committed() {
                return Ok(ip);
            }
            pool = self.load_pool(id).await?;
            backoff(attempt).await;
        }
        Err(self.contention(&format!("assigning {ip} in pool {id}")))
    }

    /// A specific address that is taken: fine if the same owner on this host asks again (a replayed
    /// request), else an error saying who has it.
    async fn already_taken(&self, id: &PoolId, ip: IpAddr, owner: &str, pool: &PoolRecord) -> IpamResult<IpAddr> {
        if pool.gateway.as_deref() == Some(ip.to_string().as_str()) {
            return Err(IpamError::InUse(format!("address {ip} is the gateway of pool {}", id.subnet)));
        }
        let key = keys::addr_owner(&id.space, &id.subnet, ip);
        let holder = decode_opt::<OwnerRecord>(self.store.get(&key).await?)?.0;
        match holder {
            Some(h) if !owner.is_empty() && h.owner == owner && h.host == self.host => {
                debug!(pool = %id, %ip, owner, "address already held by the same owner; request replayed");
                Ok(ip)
            }
            Some(h) => Err(IpamError::InUse(format!(
                "address {ip} is already in use in pool {} ({}on host {})",
                id.subnet,
                if h.owner.is_empty() { String::new() } else { format!("by {} ", h.owner) },
                h.host
            ))),
            None => Err(IpamError::InUse(format!("address {ip} is already in use in pool {}", id.subnet))),
        }
    }

    /// One transaction per address in the usual case: the pool is not read (its existence is a
    /// condition of the transaction) and the chunk comes from the cache when this process wrote it
    /// last. A conflict costs a read of the chunk, and of the pool only when the chunk is unchanged.
    async fn claim_next(&self, id: &PoolId, owner: &str) -> IpamResult<IpAddr> {
        let family = id.subnet.family();
        let Some((lo, hi)) = dynamic_bounds(&id.subnet, id.range.as_ref()) else {
            self.load_pool(id).await?;
            return Err(exhausted(id));
        };
        let pool_key = keys::pool(&id.space, &id.subnet);
        let bits = self.address_bits(id);
        let cursor = self.cursor(&id.to_string());
        let mut cursor = cursor.lock().await;
        // The slot of the last transaction that failed.
        let mut failed: Option<Slot> = None;
        for attempt in 0..self.config.max_attempts {
            let Some(slot) = bits.find_free(lo, hi, (*cursor).max(lo)).await? else {
                self.load_pool(id).await?;
                return Err(exhausted(id));
            };
            // A transaction fails when the chunk changed (another host allocated in it: the read
            // above has the new state) or when the pool is gone. The chunk as the failed attempt
            // expected it means the pool: say so instead of retrying. Every 8th attempt checks
            // anyway, in case the retries keep moving to other chunks.
            if failed.as_ref().is_some_and(|f| f.same_chunk_state(&slot)) || (attempt > 0 && attempt % 8 == 0) {
                self.load_pool(id).await?;
            }
            let ip = u128_to_ip(family, slot.value);
            let owner_key = keys::addr_owner(&id.space, &id.subnet, ip);
            let claim = records::claim_id();
            let txn = Txn::new()
                .when(Condition::Exists(pool_key.clone()))
                .put(&owner_key, self.owner_record(owner, Kind::Endpoint, &claim));
            let what = format!("assigning {ip} in pool {id}");
            let outcome = self.commit(&what, bits.take(&slot, txn), || self.claim_present(&owner_key, &claim)).await?;
            bits.after_take(&slot, outcome);
            if outcome.committed() {
                *cursor = if slot.value >= hi { lo } else { slot.value + 1 };
                return Ok(ip);
            }
            failed = Some(slot);
            backoff(attempt).await;
        }
        Err(self.contention(&format!("assigning an address in pool {id}")))
    }

    async fn claim_gateway(&self, id: &PoolId, requested: Option<IpAddr>) -> IpamResult<IpAddr> {
        let bits = self.address_bits(id);
        for attempt in 0..self.config.max_attempts {
            let mut pool = self.load_pool(id).await?;
            if let Some(current) = &pool.record.gateway {
                let current =
                    parse_ip(current).map_err(|detail| IpamError::Corrupt { key: pool.key.clone(), detail })?;
                return match requested {
                    Some(r) if r != current => Err(IpamError::InUse(format!(
                        "pool {} already has gateway {current} (every host shares it); requested gateway {r} differs",
                        id.subnet
                    ))),
                    _ => Ok(current),
                };
            }
            let slot = self.gateway_slot(id, &bits, requested).await?;
            let ip = u128_to_ip(id.subnet.family(), slot.value);
            pool.record.gateway = Some(ip.to_string());
            let (owner_key, claim) = (keys::addr_owner(&id.space, &id.subnet, ip), records::claim_id());
            let txn = Txn::new()
                .when(Condition::Revision(pool.key.clone(), pool.revision))
                .put(pool.key.clone(), records::encode(&pool.record))
                .put(&owner_key, self.owner_record("", Kind::Gateway, &claim));
            let what = format!("assigning the gateway of pool {id}");
            let outcome = self.commit(&what, bits.take(&slot, txn), || self.claim_present(&owner_key, &claim)).await?;
            bits.after_take(&slot, outcome);
            if outcome.committed() {
                return Ok(ip);
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("assigning the gateway of pool {id}")))
    }

    /// The requested gateway, else the pool's first usable address, else (taken) the next free one.
    async fn gateway_slot(&self, id: &PoolId, bits: &BitSpace<'_>, requested: Option<IpAddr>) -> IpamResult<Slot> {
        let (lo, hi) = id.subnet.usable();
        let want = requested.map(ip_to_u128).unwrap_or(lo);
        let slot = bits.slot(want).await?;
        if !slot.is_taken() {
            return Ok(slot);
        }
        if requested.is_some() {
            return Err(IpamError::InUse(format!(
                "address {} is already in use in pool {} and can't become its gateway",
                u128_to_ip(id.subnet.family(), want),
                id.subnet
            )));
        }
        warn!(pool = %id, "the first address is taken; using the next free one as the gateway");
        bits.find_free(lo, hi, lo).await?.ok_or_else(|| exhausted(id))
    }
}

/// Refuses the release of an address that `host` (and `owner`, when given) does not hold. A record
/// without a host predates host ids: any host may release it.
fn check_holder(id: &PoolId, ip: IpAddr, holder: &OwnerRecord, host: &str, owner: Option<&str>) -> IpamResult<()> {
    if !holder.host.is_empty() && holder.host != host {
        return Err(IpamError::NotHolder(format!(
            "address {ip} in pool {} is held by host {}{}, not by host {host}: only the host that holds an address can release it",
            id.subnet,
            holder.host,
            if holder.owner.is_empty() { String::new() } else { format!(" (endpoint {})", holder.owner) },
        )));
    }
    match owner {
        Some(owner) if !owner.is_empty() && !holder.owner.is_empty() && holder.owner != owner => {
            Err(IpamError::NotHolder(format!(
                "address {ip} in pool {} is held by endpoint {}, not by {owner}: only its holder can release it",
                id.subnet, holder.owner
            )))
        }
        _ => Ok(()),
    }
}

/// Parses an address that must be assignable in `subnet`.
fn check_address(subnet: &Subnet, text: &str) -> IpamResult<IpAddr> {
    let ip = parse_ip(text).map_err(|e| IpamError::Invalid(format!("address {e}")))?;
    if Family::of(ip) != subnet.family() {
        return Err(IpamError::Invalid(format!(
            "address {ip} is {} but pool {subnet} is {}",
            Family::of(ip).name(),
            subnet.family().name()
        )));
    }
    if !subnet.contains_ip(ip) {
        return Err(IpamError::Invalid(format!("address {ip} is outside pool {subnet}")));
    }
    if let Some(reason) = subnet.reserved_reason(ip) {
        return Err(IpamError::Invalid(format!("address {ip} is {reason} of pool {subnet} and can't be assigned")));
    }
    Ok(ip)
}

fn exhausted(id: &PoolId) -> IpamError {
    match &id.range {
        Some(range) => IpamError::Exhausted(format!("IP range {range} of pool {} is exhausted", id.subnet)),
        None => IpamError::Exhausted(format!("pool {} is exhausted", id.subnet)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Subnet {
        Subnet::parse(t).unwrap()
    }

    #[test]
    fn address_checks() {
        let net = s("10.1.2.0/24");
        assert_eq!(check_address(&net, "10.1.2.7").unwrap().to_string(), "10.1.2.7");
        let err = |t: &str| check_address(&net, t).unwrap_err().to_string();
        assert!(err("10.1.3.1").contains("outside pool 10.1.2.0/24"));
        assert!(err("fd00::1").contains("IPv6 but pool 10.1.2.0/24 is IPv4"));
        assert!(err("10.1.2.0").contains("network address"));
        assert!(err("10.1.2.255").contains("broadcast address"));
        assert!(err("10.1.2.1/24").contains("without a prefix"));
        assert!(err("banana").contains("not an IP address"));
    }

    #[test]
    fn grants_display_with_the_pool_prefix() {
        let g = AddressGrant { ip: "10.1.2.3".parse().unwrap(), prefix: 16 };
        assert_eq!(g.to_string(), "10.1.2.3/16");
    }

    #[test]
    fn exhaustion_messages() {
        let id = PoolId::parse("LocalDefault/10.1.2.0/29").unwrap();
        assert_eq!(exhausted(&id).to_string(), "pool 10.1.2.0/29 is exhausted");
        let id = PoolId::parse("LocalDefault/10.1.0.0/16/10.1.2.0/30").unwrap();
        assert_eq!(exhausted(&id).to_string(), "IP range 10.1.2.0/30 of pool 10.1.0.0/16 is exhausted");
    }
}
