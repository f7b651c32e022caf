//! What `loomctl` shows of loom-macvlan: each network's parent and mode, and for one network its
//! record, its endpoints and whether its parent is up.

use netloom_plugin_api::{PluginError, PluginResult};
use serde_json::{json, Value};

use crate::driver::{MacvlanDriver, DRIVER};

impl MacvlanDriver {
    pub(crate) fn status_details(&self) -> Value {
        let maps = self.registry.maps();
        let networks: Vec<Value> = maps
            .networks
            .values()
            .map(|n| {
                let subnets: Vec<String> = n.pools_v4.iter().chain(&n.pools_v6).map(|p| p.subnet.to_string()).collect();
                let local_name = format!("parent {}", n.parent.name());
                json!({ "id": n.id, "local_name": local_name, "parent": n.parent.name(), "mode": n.mode, "subnets": subnets })
            })
            .collect();
        json!({ "networks": networks })
    }

    pub(crate) async fn inspect(&self, network_id: &str) -> PluginResult<Value> {
        // Only reads the records: the network with its endpoints.
        let (net, endpoints) = self
            .registry
            .network_to_delete(network_id)
            .ok_or_else(|| PluginError::unknown_network(DRIVER, network_id))?;
        let parent = match self.netlink.link(net.parent.name()).await.map_err(PluginError::from)? {
            Some(l) => json!({ "name": l.name, "present": true, "up": l.up, "mtu": l.mtu }),
            None => json!({ "name": net.parent.name(), "present": false }),
        };
        // A joined endpoint's macvlan link is in its container's namespace: the records say what it is.
        Ok(json!({ "record": net, "parent": parent, "endpoints": endpoints }))
    }
}
