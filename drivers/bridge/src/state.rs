//! What loom-bridge persists: one record per network and per endpoint, written before a request
//! is answered, so that a restarted driver can rebuild the kernel's side from them.

use ipnetwork::IpNetwork;
use netloom_driver_kit::{Endpoint, Network};
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

    /// The tag on every link and rule of this network.
    pub fn owner(&self) -> String {
        format!("{OWNER_PREFIX}{}", self.id)
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

impl EndpointRecord {
    pub fn owner(&self) -> String {
        format!("{OWNER_PREFIX}{}:{}", self.network_id, self.id)
    }
}

/// Prefix of every owner tag (link alias) of this driver.
pub const OWNER_PREFIX: &str = "netloom:bridge:";

impl netloom_ipam::store::NetworkRecord for NetworkRecord {
    fn network_id(&self) -> &str {
        &self.id
    }
}

impl netloom_ipam::store::EndpointRecord for EndpointRecord {
    fn network_id(&self) -> &str {
        &self.network_id
    }
    fn endpoint_id(&self) -> &str {
        &self.id
    }
}

impl Network for NetworkRecord {
    fn internal(&self) -> bool {
        self.internal
    }
}

impl Endpoint for EndpointRecord {
    fn address_v4(&self) -> Option<IpNetwork> {
        self.address_v4
    }
    fn address_v6(&self) -> Option<IpNetwork> {
        self.address_v6
    }
    fn ports(&self) -> &[PublishedPort] {
        &self.ports
    }
    fn set_ports(&mut self, ports: Vec<PublishedPort>) {
        self.ports = ports;
    }
}
