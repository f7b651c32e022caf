//! What `loomctl` shows of loom-host: its firewall backend, and for one network its record, each
//! endpoint's host veth with the routes the kernel has to it, the network's routing rules (an
//! internal network's table) and which endpoints have firewall rules.

use netloom_plugin_api::{PluginError, PluginResult};
use serde_json::{json, Value};

use crate::driver::{HostDriver, DRIVER};
use crate::state::TABLES;

impl HostDriver {
    /// The firewall backend, and how many endpoints the host routes to (joined) of all it holds.
    pub(crate) fn status_details(&self) -> Value {
        let maps = self.registry.maps();
        let joined = maps.endpoints.values().filter(|e| e.joined).count();
        json!({ "firewall": self.firewall.kind().to_string(), "routed_endpoints": joined })
    }

    pub(crate) async fn inspect(&self, network_id: &str) -> PluginResult<Value> {
        let routes = self.netlink.connected_routes().await.map_err(PluginError::from)?;
        // Read only: the network with its endpoints.
        let Some((net, endpoints)) = self.registry.network_to_delete(network_id) else {
            return Err(PluginError::unknown_network(DRIVER, network_id));
        };
        let policies = self.firewall.owned_networks().await.unwrap_or_default();
        let mut described = Vec::new();
        for endpoint in &endpoints {
            let veth = self.netlink.link(&endpoint.host_veth).await.map_err(PluginError::from)?;
            let routed: Vec<String> = match &veth {
                Some(link) => {
                    routes.iter().filter(|r| r.ifindex == link.index).map(|r| r.destination.to_string()).collect()
                }
                None => Vec::new(),
            };
            described.push(json!({
                "record": endpoint,
                "host_veth": veth.map(|l| json!({ "name": l.name, "up": l.up, "mtu": l.mtu })),
                "routes": routed,
                "firewall_rules": policies.contains(&crate::policy::id(endpoint)),
            }));
        }
        let rules = match net.table {
            Some(table) => {
                let rules =
                    self.netlink.iif_rules(|t| t == table && TABLES.contains(&t)).await.map_err(PluginError::from)?;
                rules.iter().map(|r| format!("iif {} lookup {}", r.interface, r.table)).collect()
            }
            None => Vec::new(),
        };
        Ok(json!({
            "record": net,
            "endpoints": described,
            "routing_rules": rules,
            "firewall": { "backend": self.firewall.kind().to_string() },
        }))
    }
}
