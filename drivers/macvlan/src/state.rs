//! What loom-macvlan persists under `macvlan/<host-id>/` in the store: one record per network and
//! per endpoint, written before a request is answered, so that a restarted driver can rebuild the
//! kernel's side and tell its own leftovers apart.

use ipnetwork::IpNetwork;
use netloom_plugin_api::addressing::Pool;
use serde::{Deserialize, Serialize};

use crate::options::Mode;

/// Prefix of every owner tag (link alias) of this driver.
pub const OWNER_PREFIX: &str = "netloom:macvlan:";

/// Where a network's macvlan links sit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Parent {
    /// An interface the driver did not make: it is never changed or removed.
    Existing { name: String },
    /// An 802.1q sub-interface made by loom-macvlan; shared by every network naming it, removed
    /// with the last of them.
    Vlan { name: String, base: String, id: u16 },
    /// No `parent=`: a veth pair of the network's own with nothing behind it, so its containers
    /// reach only each other.
    Isolated { name: String, peer: String },
}

impl Parent {
    pub fn name(&self) -> &str {
        match self {
            Parent::Existing { name } | Parent::Vlan { name, .. } | Parent::Isolated { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub parent: Parent,
    pub mode: Mode,
    pub mtu: Option<u32>,
    pub pools_v4: Vec<Pool>,
    pub pools_v6: Vec<Pool>,
    pub internal: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub id: String,
    /// The macvlan's name in the host namespace (Docker renames it inside the container).
    pub link: String,
    pub address_v4: Option<IpNetwork>,
    pub address_v6: Option<IpNetwork>,
    pub mac: String,
}

netloom_driver_kit::driver_records!(network NetworkRecord, endpoint EndpointRecord, owner OWNER_PREFIX);
