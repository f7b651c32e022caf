//! One bridge-port flag on its own: `isolated`, leaving the port's other flags (hairpin,
//! learning, …) as they are — for ports of a bridge someone else manages.

use anyhow::{Context, Result};
use rtnetlink::LinkBridgePort;

use crate::{Link, Netlink};

impl Netlink {
    /// Sets or clears the `isolated` flag of bridge port `port`: isolated ports can't exchange
    /// frames with each other, only with non-isolated ports and the bridge itself (routed
    /// traffic still flows).
    pub async fn set_port_isolated(&self, port: &Link, isolated: bool) -> Result<()> {
        let msg = LinkBridgePort::new(port.index).isolated(isolated).build();
        self.handle()
            .link()
            .set_port(msg)
            .execute()
            .await
            .with_context(|| format!("setting isolated={isolated} on bridge port {}", port.name))
    }
}
