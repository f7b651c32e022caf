//! What this host holds, for reconciliation against Docker: its pool references, the endpoint
//! addresses it took and the gateways of pools only it still holds. Whatever Docker no longer has
//! is released through ReleaseAddress and ReleasePool, as if Docker had asked.
//!
//! An allocation recorded without a host is nobody's to release. A pool reference whose release
//! would delete the pool while another host still holds addresses in it is not listed either: the
//! network lives on elsewhere (a Docker 20.10 global network is created, and its pool requested,
//! by one host only), and deleting the pool would take the other host's addresses with it.

use netloom_plugin_api::engine::HeldAllocation;
use tracing::debug;

use super::records::Kind;
use crate::error::IpamResult;
use crate::ipam::Ipam;

impl Ipam {
    /// Addresses first, then gateways, then one `Pool` entry per RequestPool reference this host
    /// holds (releasing a pool drops one reference).
    pub async fn held_by_this_host(&self) -> IpamResult<Vec<HeldAllocation>> {
        let (mut addresses, mut gateways, mut pools) = (Vec::new(), Vec::new(), Vec::new());
        for pool in self.pools().await? {
            let assigned = self.addresses(&pool.pool_id).await?;
            let endpoint_of = |host_is_mine: bool| {
                assigned
                    .iter()
                    .filter(move |a| a.owner.kind == Kind::Endpoint && (a.owner.host == self.host) == host_is_mine)
            };
            for a in endpoint_of(true) {
                addresses.push(HeldAllocation::Address {
                    pool_id: pool.pool_id.clone(),
                    subnet: pool.subnet,
                    address: a.ip,
                });
            }
            let references = pool.hosts.get(&self.host).copied().unwrap_or(0);
            let last_holder = pool.hosts.keys().all(|h| *h == self.host);
            if references == 0 {
                continue;
            }
            if last_holder && endpoint_of(false).next().is_some() {
                debug!(pool = %pool.pool_id, "pool kept: other hosts hold addresses in it");
                continue;
            }
            if last_holder {
                if let Some(gateway) = assigned.iter().find(|a| a.owner.kind == Kind::Gateway) {
                    gateways.push(HeldAllocation::Gateway {
                        pool_id: pool.pool_id.clone(),
                        subnet: pool.subnet,
                        address: gateway.ip,
                    });
                }
            }
            pools.extend(
                (0..references).map(|_| HeldAllocation::Pool { pool_id: pool.pool_id.clone(), subnet: pool.subnet }),
            );
        }
        addresses.append(&mut gateways);
        addresses.append(&mut pools);
        Ok(addresses)
    }
}
