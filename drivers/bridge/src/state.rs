//! What loom-bridge persists: one record per network and per endpoint, written before a request
//! is answered, so that a restarted driver can rebuild the kernel's side from them.

use ipnetwork::IpNetwork;
use netloom_plugin_api::host_ports::PublishedPort;
use serde::{Deserialize, Serialize};

use crate::options::BridgeOptions;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub bridge: String,
    pub options: BridgeOptions,
    pub subnet_v4: Option<IpNetwork>,
    /// With the pool's prefix length, as it goes on the bridge.
    pub gateway_v4: Option<IpNetwork>,
    pub subnet_v6: Option<IpNetwork>,
    pub gateway_v6: Option<IpNetwork>,
    pub internal: bool,
}

impl NetworkRecord {
    pub fn subnets(&self) -> Vec<IpNetwork> {
        self.subnet_v4.into_iter().chain(self.subnet_v6).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network_id: String,
    pub id: String,
    pub host_veth: String,
    pub peer_veth: String,
    pub address_v4: Option<IpNetwork>,
    pub address_v6: Option<IpNetwork>,
    pub mac: String,
    /// Published ports as programmed (after ProgramExternalConnectivity).
    pub ports: Vec<PublishedPort>,
}

/// Prefix of every owner tag (link alias) of this driver.
pub const OWNER_PREFIX: &str = "netloom:bridge:";

netloom_driver_kit::driver_records!(network NetworkRecord, endpoint EndpointRecord, owner OWNER_PREFIX, with ports);
