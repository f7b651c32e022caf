//! The interface both backends implement.

use std::net::IpAddr;

use anyhow::Result;
use async_trait::async_trait;

use crate::model::{BackendKind, NetworkPolicy, PortMapping};

#[async_trait]
pub trait Firewall: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Installs the network's policy (and the shared skeleton on first use). Idempotent: calling
    /// it again with the same policy changes nothing; with a changed policy it replaces the
    /// network's rules (published ports stay).
    async fn add_network(&self, net: &NetworkPolicy) -> Result<()>;

    /// [`Firewall::add_network`] for many networks at once (a driver restoring its state at
    /// start-up): a backend whose per-call cost grows with the ruleset does it in one pass.
    /// All-or-nothing is not promised: on an error, some of the policies may be installed.
    async fn add_networks(&self, nets: &[NetworkPolicy]) -> Result<()> {
        for net in nets {
            self.add_network(net).await?;
        }
        Ok(())
    }

    /// Removes everything the network owns, published ports included. Idempotent.
    async fn remove_network(&self, net: &NetworkPolicy) -> Result<()> {
        self.remove_network_by_id(&net.network_id).await
    }

    /// Same as [`Firewall::remove_network`] from the network id alone (for leftovers found by
    /// [`Firewall::owned_networks`] whose policy is no longer known).
    async fn remove_network_by_id(&self, network_id: &str) -> Result<()>;

    /// Publishes ports of one endpoint (on `net`, which must have been added for the ports to
    /// be reachable). Idempotent; all-or-nothing per call (nftables: one transaction; iptables:
    /// rules added by a failing call are deleted again). A host address/port published to
    /// another destination fails with [`crate::FirewallError::PortInUse`].
    async fn add_ports(&self, net: &NetworkPolicy, endpoint_id: &str, ports: &[PortMapping]) -> Result<()>;

    /// Withdraws ports of one endpoint. Idempotent (absent mappings are fine).
    async fn remove_ports(&self, net: &NetworkPolicy, endpoint_id: &str, ports: &[PortMapping]) -> Result<()>;

    /// Withdraws the published ports of `net` whose endpoint is not in `live_endpoint_ids`
    /// (ports left by endpoints that vanished while the driver was down); returns how many.
    async fn retain_endpoints(&self, net: &NetworkPolicy, live_endpoint_ids: &[String]) -> Result<usize>;

    /// Full ids of the networks that have rules installed, read from the kernel.
    async fn owned_networks(&self) -> Result<Vec<String>>;

    /// Accepts VXLAN (UDP `port`, addressed to this host) only from `peers` (the member hosts'
    /// tunnel endpoints, IPv4 and IPv6); drops it from anyone else, and drops forwarded
    /// (container-originated) traffic to UDP `port` so no container can borrow its host's VTEP.
    /// Replaces the previous peer set atomically (nftables: one batch; no window where a member
    /// is dropped). Idempotent.
    async fn set_vxlan_guard(&self, port: u16, peers: &[IpAddr]) -> Result<()>;

    /// Removes the VXLAN guard entirely. Idempotent.
    async fn remove_vxlan_guard(&self) -> Result<()>;

    /// Removes everything netloom installed in this network namespace.
    async fn remove_all(&self) -> Result<()>;
}
