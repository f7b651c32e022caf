//! What the kit needs to know about a driver's network and endpoint records, beyond how they are
//! stored.

use ipnetwork::IpNetwork;
use netloom_plugin_api::host_ports::PublishedPort;

/// A driver's record of one network.
pub trait Network: netloom_ipam::store::NetworkRecord + Clone + Send + Sync + 'static {
    /// `--internal`: no gateway, nothing routed off the network, no published ports.
    fn internal(&self) -> bool;
}

/// A driver's record of one endpoint.
pub trait Endpoint: netloom_ipam::store::EndpointRecord + Clone + Send + Sync + 'static {
    fn address_v4(&self) -> Option<IpNetwork>;
    fn address_v6(&self) -> Option<IpNetwork>;

    /// Published ports as programmed; a driver that publishes none keeps none.
    fn ports(&self) -> &[PublishedPort] {
        &[]
    }

    fn set_ports(&mut self, _ports: Vec<PublishedPort>) {}
}
