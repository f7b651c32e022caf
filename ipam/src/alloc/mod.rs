//! The allocators. Pure logic (bitmaps, subnet math, default-pool carving, ids, key layout) is kept
//! apart from the modules that talk to the store (pools, addresses, VNIs, reclaim).

pub mod bitmap;
pub mod cidr;
pub mod defaults;
pub mod keys;
pub mod poolid;
pub mod records;

mod addresses;
mod audit;
pub(crate) mod bitspace;
mod held;
mod outcome;
mod pools;
mod reclaim;
mod vni;

pub use addresses::{AddressGrant, AddressInfo};
pub use pools::{PoolGrant, PoolInfo};
pub use reclaim::{by_host, Leftover, Reclaimed};
pub use vni::VniInfo;
