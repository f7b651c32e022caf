//! [`Ipam`]: the API the loom-ipam binary and the drivers call. The operations live in
//! `alloc/{pools,addresses,vni,reclaim}.rs`; this file holds the shared state and configuration.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::alloc::bitspace::ChunkCache;
use crate::alloc::defaults::{self, DefaultPool};
use crate::alloc::poolid::validate_space;
use crate::alloc::{keys, records};
use crate::error::{IpamError, IpamResult};
use netloom_store::Store;

/// RequestAddress option naming the kind of request; Docker sets it for the gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS_TYPE: &str = "com.docker.network.gateway";
/// Docker passes the endpoint's MAC here when the driver asks for it; recorded as the owner.
pub const MAC_ADDRESS_OPTION: &str = "com.docker.network.endpoint.macaddress";
/// Drivers calling the library directly name the owner (endpoint id) with this option.
pub const OWNER_OPTION: &str = "netloom.owner";

pub const LOCAL_DEFAULT_SPACE: &str = "LocalDefault";
pub const GLOBAL_DEFAULT_SPACE: &str = "GlobalDefault";

/// The largest VXLAN network identifier (24 bits).
pub const VNI_MAX: u32 = (1 << 24) - 1;

#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub local_space: String,
    pub global_space: String,
    /// Address space → where its default pools are carved from. Spaces not listed need `--subnet`.
    pub default_pools: BTreeMap<String, Vec<DefaultPool>>,
    /// Automatically allocated VNIs come from here; any VNI can be reserved explicitly.
    pub vni_first: u32,
    pub vni_last: u32,
    /// Conflicting concurrent writers make an operation retry; this bounds the retries.
    pub max_attempts: u32,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            local_space: LOCAL_DEFAULT_SPACE.to_string(),
            global_space: GLOBAL_DEFAULT_SPACE.to_string(),
            default_pools: BTreeMap::from([
                (LOCAL_DEFAULT_SPACE.to_string(), defaults::docker_local()),
                (GLOBAL_DEFAULT_SPACE.to_string(), defaults::docker_global()),
            ]),
            vni_first: 4096,
            vni_last: VNI_MAX,
            max_attempts: 200,
        }
    }
}

impl IpamConfig {
    pub fn validate(&self) -> IpamResult<()> {
        validate_space(&self.local_space).map_err(IpamError::Invalid)?;
        validate_space(&self.global_space).map_err(IpamError::Invalid)?;
        for space in self.default_pools.keys() {
            validate_space(space).map_err(IpamError::Invalid)?;
        }
        if self.vni_first == 0 || self.vni_first > self.vni_last || self.vni_last > VNI_MAX {
            return Err(IpamError::Invalid(format!(
                "VNI range {}-{} is not valid: it must lie within 1-{VNI_MAX}",
                self.vni_first, self.vni_last
            )));
        }
        if self.max_attempts == 0 {
            return Err(IpamError::Invalid("max_attempts must be at least 1".into()));
        }
        Ok(())
    }
}

pub struct Ipam {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) host: String,
    pub(crate) config: IpamConfig,
    /// Per pool id: where the next dynamic allocation starts looking. The lock also serialises this
    /// process's dynamic allocations in one pool, so they don't fight each other over one chunk.
    cursors: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<u128>>>>,
    /// Bitmap chunks this process wrote last, so allocating again in one needs no read.
    pub(crate) chunks: ChunkCache,
}

impl Ipam {
    /// Registers `host_id` in the store under the host lease. A store that can't be reached now is
    /// not fatal: the registration is retried in the background and requests fail with a clear
    /// error until the store answers.
    pub async fn new(store: Arc<dyn Store>, host_id: &str, config: IpamConfig) -> IpamResult<Self> {
        validate_host_id(host_id)?;
        config.validate()?;
        let ipam = Self {
            store,
            host: host_id.to_string(),
            config,
            cursors: Default::default(),
            chunks: ChunkCache::default(),
        };
        let record = records::HostRecord {
            started_at: records::now(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        match ipam.store.put_leased(&keys::host(host_id), records::encode(&record)).await {
            Ok(()) => info!(host = host_id, store = %ipam.store.describe(), "IPAM ready"),
            Err(e) => warn!(host = host_id, "registering the host: {e}; retrying in the background"),
        }
        Ok(ipam)
    }

    pub fn host_id(&self) -> &str {
        &self.host
    }

    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn cursor(&self, pool: &str) -> Arc<tokio::sync::Mutex<u128>> {
        let mut map = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(pool.to_string()).or_default().clone()
    }

    pub(crate) fn contention(&self, what: &str) -> IpamError {
        IpamError::Contention(format!(
            "{what}: gave up after {} attempts because other hosts kept changing the same data; try again",
            self.config.max_attempts
        ))
    }
}

/// Host ids become key segments.
pub fn validate_host_id(host: &str) -> IpamResult<()> {
    let ok = !host.is_empty()
        && host.len() <= 128
        && host != "."
        && host != ".."
        && host.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IpamError::Invalid(format!(
            "host id {host:?} is not valid: use 1 to 128 letters, digits, '.', '_' or '-' (e.g. the hostname)"
        )))
    }
}

/// A short pause before retrying after a conflict; the first retries are immediate because the
/// usual cause is one other host that has just finished.
pub(crate) async fn backoff(attempt: u32) {
    if attempt < 3 {
        return;
    }
    let ceiling_us = 200u64 << attempt.min(7);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    tokio::time::sleep(Duration::from_micros(ceiling_us / 2 + u64::from(nanos) % (ceiling_us / 2))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids() {
        assert!(validate_host_id("node-1.example").is_ok());
        for bad in ["", ".", "a/b", "a b", &"h".repeat(129)] {
            assert!(validate_host_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_validation() {
        assert!(IpamConfig::default().validate().is_ok());
        let bad_range = IpamConfig { vni_first: 10, vni_last: 5, ..IpamConfig::default() };
        assert!(bad_range.validate().unwrap_err().to_string().contains("VNI range"));
        let too_big = IpamConfig { vni_last: VNI_MAX + 1, ..IpamConfig::default() };
        assert!(too_big.validate().is_err());
        let mut bad_space = IpamConfig::default();
        bad_space.default_pools.insert("a/b".into(), vec![]);
        assert!(bad_space.validate().is_err());
    }
}
