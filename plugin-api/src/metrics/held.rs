//! Gauges of what the plugin holds, asked at scrape time from the same calls reconciliation uses:
//! a driver that does not say what it holds reports none of them.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::engine::reconcile::HeldAllocation;
use crate::server::Plugin;

/// What one scrape found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// Docker's network id and the endpoints held on it.
    networks: Option<Vec<(String, usize)>>,
    ipam: Option<IpamHeld>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpamHeld {
    pools: usize,
    addresses: usize,
}

impl Held {
    pub(crate) async fn of(plugin: &Plugin) -> Held {
        let networks = match &plugin.network {
            Some(driver) => driver.held_networks().await,
            None => None,
        };
        let allocations = match &plugin.ipam {
            Some(driver) => driver.held_allocations().await,
            None => None,
        };
        Held {
            networks: networks.map(|held| held.into_iter().map(|n| (n.id, n.endpoints.len())).collect()),
            ipam: allocations.as_deref().map(IpamHeld::count),
        }
    }
}

impl IpamHeld {
    /// A pool is listed once per reference held, and a gateway is an address too.
    fn count(held: &[HeldAllocation]) -> IpamHeld {
        let mut pools = HashSet::new();
        let mut addresses = HashSet::new();
        for allocation in held {
            match allocation {
                HeldAllocation::Pool { pool_id, .. } => _ = pools.insert(pool_id),
                HeldAllocation::Address { pool_id, address, .. } | HeldAllocation::Gateway { pool_id, address, .. } => {
                    _ = addresses.insert((pool_id, address))
                }
            }
        }
        IpamHeld { pools: pools.len(), addresses: addresses.len() }
    }
}

/// Encodes the last scrape's [`Held`]; set right before encoding, under the registry's lock.
#[derive(Debug, Default)]
pub(crate) struct HeldCollector {
    last: Mutex<Held>,
}

impl HeldCollector {
    pub(crate) fn set(&self, held: Held) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = held;
    }
}

impl Collector for HeldCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let held = self.last.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(networks) = &held.networks {
            gauge(&mut encoder, "netloom_networks", "Networks this driver holds on this host.", networks.len())?;
            let mut family = encoder.encode_descriptor(
                "netloom_endpoints",
                "Endpoints this driver holds on this host, by Docker's network id.",
                None,
                MetricType::Gauge,
            )?;
            for (network, endpoints) in networks {
                let labels = [("network", network.as_str())];
                ConstGauge::new(*endpoints as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(ipam) = held.ipam {
            gauge(&mut encoder, "netloom_ipam_pools", "Address pools held for this host.", ipam.pools)?;
            gauge(
                &mut encoder,
                "netloom_ipam_addresses",
                "Addresses (gateways included) held for this host.",
                ipam.addresses,
            )?;
        }
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: usize) -> std::fmt::Result {
    let gauge = ConstGauge::new(value as i64);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}
