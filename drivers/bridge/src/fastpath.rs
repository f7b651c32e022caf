//! The bridge bypass for endpoints of one network (netloom_dataplane's `FastPath`): frames from
//! one endpoint to another go from port to port, skipping the bridge and br_netfilter's hooks.
//! Only for networks with icc and without `-o fast_path=false` (which keeps everything on the
//! bridge, where the host's FORWARD rules see it): an icc=false network's ports are isolated on the bridge and must
//! stay where the bridge enforces it. A fast path that cannot be set up is logged and the
//! endpoint served through the bridge: it is a shortcut, never what makes traffic flow.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use netloom_dataplane::{fastpath_block_of, fastpath_mac, mac};
use netloom_plugin_api::addressing::short_id as short;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::driver::BridgeDriver;
use crate::state::{EndpointRecord, NetworkRecord};

/// Whether a network's endpoints bypass the bridge between each other.
pub(crate) fn wanted(net: &NetworkRecord) -> bool {
    net.options.icc && net.options.fast_path
}

impl BridgeDriver {
    /// The network's filter block, from its bridge; None when the bridge is missing.
    async fn block(&self, net: &NetworkRecord) -> Result<Option<u32>> {
        Ok(self.netlink.link(&net.bridge).await?.map(|bridge| fastpath_block_of(&bridge)))
    }

    /// Puts one endpoint on the fast path of its network, if the network has one, right after
    /// the request that made it is answered: the endpoint works through the bridge from the
    /// start, and the two qdisc and filter changes stay out of Docker's wait.
    pub(crate) fn spawn_fast_path(&self, net: &NetworkRecord, ep: &EndpointRecord) {
        if !wanted(net) {
            return;
        }
        let (netlink, fastpath) = (self.netlink.clone(), Arc::clone(&self.fastpath));
        let (bridge, port, mac, id) = (net.bridge.clone(), ep.host_veth.clone(), ep.mac.clone(), ep.id.clone());
        tokio::spawn(async move {
            let added = async {
                let bridge = netlink.link(&bridge).await?.ok_or_else(|| anyhow!("bridge {bridge} is missing"))?;
                // Gone already: the endpoint was deleted before this ran.
                let Some(host) = netlink.link(&port).await? else { return Ok(()) };
                let block = fastpath_block_of(&bridge);
                fastpath.attach_port(block, &host).await?;
                fastpath.add(block, &fastpath_mac(&mac)?, &host).await
            };
            if let Err(e) = added.await {
                warn!(endpoint = %short(&id), "endpoint served through the bridge only, no fast path: {e:#}");
            }
        });
    }

    /// Takes an endpoint off its network's fast path (before its port goes).
    pub(crate) async fn remove_fast_path(&self, net: &NetworkRecord, ep: &EndpointRecord) -> Result<()> {
        if !wanted(net) {
            return Ok(());
        }
        let Some(block) = self.block(net).await? else { return Ok(()) };
        self.fastpath.remove(block, &fastpath_mac(&ep.mac)?).await
    }

    /// Forgets a network's block once its ports are gone (the kernel drops the block with its
    /// last port).
    pub(crate) async fn forget_fast_path(&self, net: &NetworkRecord) {
        if let Ok(Some(block)) = self.block(net).await {
            self.fastpath.forget(block).await;
        }
    }

    /// After a restart: every port of a network with icc bound to the network's block and the
    /// block holding exactly its endpoints' redirects; no binding left on an icc=false network's
    /// ports.
    pub(crate) async fn restore_fast_paths(&self, net: &NetworkRecord, endpoints: &[&EndpointRecord]) -> Result<()> {
        let bound = self.fastpath.port_blocks().await?;
        let mut ports = Vec::new();
        for ep in endpoints {
            if let Some(host) = self.netlink.link(&ep.host_veth).await? {
                ports.push((*ep, host));
            }
        }
        if !wanted(net) {
            for (_, host) in ports.iter().filter(|(_, host)| bound.contains_key(&host.index)) {
                self.fastpath.detach_port(host).await?;
            }
            return Ok(());
        }
        let Some(block) = self.block(net).await? else { return Ok(()) };
        let mut want = HashMap::new();
        for (ep, host) in ports {
            if bound.get(&host.index) != Some(&block) {
                self.fastpath.attach_port(block, &host).await?;
            }
            want.insert(fastpath_mac(&ep.mac)?, host);
        }
        let (removed, added) = self.fastpath.sync(block, &want).await?;
        if removed + added > 0 {
            info!(network = %short(&net.id), removed, added, "fast path brought in line with the endpoints");
        }
        Ok(())
    }

    /// What `loomctl inspect` shows of a network's fast path: its block and redirects as the
    /// kernel holds them.
    pub(crate) async fn describe_fast_path(&self, net: &NetworkRecord) -> Value {
        if !wanted(net) {
            let why = if net.options.icc {
                "fast_path=false: everything goes through the bridge"
            } else {
                "icc=false: the ports stay isolated on the bridge"
            };
            return json!({ "enabled": false, "why": why });
        }
        let block = match self.block(net).await {
            Ok(Some(block)) => block,
            Ok(None) => return json!({ "enabled": true, "block": null }),
            Err(e) => return json!({ "enabled": true, "error": format!("{e:#}") }),
        };
        match self.fastpath.list(block).await {
            Ok(entries) => {
                let redirects: Vec<Value> =
                    entries.iter().map(|e| json!({ "mac": mac::format(&e.mac), "port_index": e.port })).collect();
                json!({ "enabled": true, "block": block, "redirects": redirects })
            }
            Err(e) => json!({ "enabled": true, "block": block, "error": format!("{e:#}") }),
        }
    }
}
