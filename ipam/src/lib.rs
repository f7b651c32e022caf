//! netloom's IPAM: address pools, addresses and VXLAN network identifiers, allocated atomically in a
//! store shared by every host (embedded redb for one host, etcd v3 or Consul for a cluster).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//! use netloom_ipam::{store, Ipam, IpamConfig};
//!
//! let store = store::open(Some("etcd://127.0.0.1:2379"), "/var/lib/netloom/loom-ipam".as_ref(), store::DEFAULT_PREFIX).await?;
//! let ipam = Ipam::new(store, "host-a", IpamConfig::default()).await?;
//! let pool = ipam.request_pool("LocalDefault", "10.1.0.0/16", "", &BTreeMap::new(), false).await?;
//! let addr = ipam.request_address(&pool.pool_id, "", &BTreeMap::new()).await?; // 10.1.0.1/16
//! # Ok(()) }
//! ```
//!
//! The key layout is described in KEYS.md.

pub mod alloc;
pub mod driver;
pub mod error;
mod ipam;
mod status;

pub use alloc::defaults::DefaultPool;
pub use alloc::{AddressGrant, AddressInfo, Leftover, PoolGrant, PoolInfo, Reclaimed, VniInfo};
pub use error::{IpamError, IpamResult};
pub use ipam::{
    validate_host_id, Ipam, IpamConfig, GATEWAY_ADDRESS_TYPE, GLOBAL_DEFAULT_SPACE, LOCAL_DEFAULT_SPACE,
    MAC_ADDRESS_OPTION, OWNER_OPTION, REQUEST_ADDRESS_TYPE, VNI_MAX,
};
/// The store the IPAM allocates in: its own crate, re-exported for callers that name it here.
pub use netloom_store as store;
pub use netloom_store::{Store, StoreError, StoreOptions};
