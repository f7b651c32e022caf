//! What `loomctl` shows of loom-bridge: its firewall backend, and for one network its record,
//! its bridge and veth links as the kernel has them, and whether its firewall rules are there.

use netloom_dataplane::Link;
use netloom_plugin_api::{PluginError, PluginResult};
use serde_json::{json, Value};

use crate::driver::{owns, BridgeDriver, DRIVER};

impl BridgeDriver {
    pub(crate) fn status_details(&self) -> Value {
        json!({ "firewall": self.firewall.kind().to_string() })
    }

    pub(crate) async fn inspect(&self, network_id: &str) -> PluginResult<Value> {
        // Only reads the records: the network with its endpoints.
        let (net, endpoints) = self
            .registry
            .network_to_delete(network_id)
            .ok_or_else(|| PluginError::unknown_network(DRIVER, network_id))?;
        let bridge = self.netlink.link(&net.bridge).await.map_err(PluginError::from)?;
        let mut described = Vec::new();
        for endpoint in &endpoints {
            let host_end = self.netlink.link(&endpoint.host_veth).await.map_err(PluginError::from)?;
            let on_bridge = match (&host_end, &bridge) {
                (Some(port), Some(bridge)) => port.controller == Some(bridge.index),
                _ => false,
            };
            described.push(json!({
                "record": endpoint,
                "host_link": link(host_end.as_ref()),
                "on_bridge": on_bridge,
            }));
        }
        let rules = match self.firewall.owned_networks().await {
            Ok(owned) => json!(owned.iter().any(|id| owns(id) && id == network_id)),
            Err(e) => json!(format!("cannot list the firewall's networks: {e:#}")),
        };
        Ok(json!({
            "record": net,
            "bridge": link(bridge.as_ref()),
            "endpoints": described,
            "firewall": { "backend": self.firewall.kind().to_string(), "rules_installed": rules },
            "fast_path": self.describe_fast_path(&net).await,
        }))
    }
}

/// A link as the kernel has it; `null` when it is missing.
fn link(link: Option<&Link>) -> Value {
    match link {
        Some(l) => json!({ "name": l.name, "index": l.index, "up": l.up, "mtu": l.mtu, "alias": l.alias }),
        None => Value::Null,
    }
}
