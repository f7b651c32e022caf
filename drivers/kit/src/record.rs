//! What the kit needs to know about a driver's network and endpoint records, beyond how they are
//! stored, and the macro that says it for records laid out the way every netloom driver's are.

pub use ipnetwork::IpNetwork;
pub use netloom_plugin_api::host_ports::PublishedPort;

/// A driver's record of one network.
pub trait Network: netloom_store::NetworkRecord + Clone + Send + Sync + 'static {
    /// `--internal`: no gateway, nothing routed off the network, no published ports.
    fn internal(&self) -> bool;

    /// The tag (link alias) on what the driver makes for this network.
    fn owner(&self) -> String;
}

/// A driver's record of one endpoint.
pub trait Endpoint: netloom_store::EndpointRecord + Clone + Send + Sync + 'static {
    fn address_v4(&self) -> Option<IpNetwork>;
    fn address_v6(&self) -> Option<IpNetwork>;

    /// The tag (link alias) on what the driver makes for this endpoint.
    fn owner(&self) -> String;

    /// Published ports as programmed; a driver that publishes none keeps none.
    fn ports(&self) -> &[PublishedPort] {
        &[]
    }

    fn set_ports(&mut self, _ports: Vec<PublishedPort>) {}
}

/// Implements the store's and the kit's record traits for a driver's network and endpoint
/// records with the fields every netloom driver names alike (`id` and `internal`; `network_id`,
/// `id`, `address_v4`, `address_v6`, and `ports` after `with ports`). Owner tags are
/// `<prefix><network>` and `<prefix><network>:<endpoint>`.
#[macro_export]
macro_rules! driver_records {
    (network $network:ty, endpoint $endpoint:ty, owner $prefix:expr) => {
        $crate::driver_records!(@impl $network, $endpoint, $prefix, {});
    };
    (network $network:ty, endpoint $endpoint:ty, owner $prefix:expr, with ports) => {
        $crate::driver_records!(@impl $network, $endpoint, $prefix, {
            fn ports(&self) -> &[$crate::record::PublishedPort] {
                &self.ports
            }
            fn set_ports(&mut self, ports: Vec<$crate::record::PublishedPort>) {
                self.ports = ports;
            }
        });
    };
    (@impl $network:ty, $endpoint:ty, $prefix:expr, { $($ports:tt)* }) => {
        impl $crate::record::StoredNetwork for $network {
            fn network_id(&self) -> &str {
                &self.id
            }
        }
        impl $crate::record::StoredEndpoint for $endpoint {
            fn network_id(&self) -> &str {
                &self.network_id
            }
            fn endpoint_id(&self) -> &str {
                &self.id
            }
        }
        impl $crate::Network for $network {
            fn internal(&self) -> bool {
                self.internal
            }
            fn owner(&self) -> String {
                format!("{}{}", $prefix, self.id)
            }
        }
        impl $crate::Endpoint for $endpoint {
            fn address_v4(&self) -> Option<$crate::record::IpNetwork> {
                self.address_v4
            }
            fn address_v6(&self) -> Option<$crate::record::IpNetwork> {
                self.address_v6
            }
            fn owner(&self) -> String {
                format!("{}{}:{}", $prefix, self.network_id, self.id)
            }
            $($ports)*
        }
    };
}

#[doc(hidden)]
pub use netloom_store::{EndpointRecord as StoredEndpoint, NetworkRecord as StoredNetwork};
