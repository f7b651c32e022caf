//! This host's endpoints on docker_gwbridge: the bridge's rules and the published ports of its
//! containers. The firewall is called without the state lock, so a slow firewall holds up only
//! the request (and network) it works for, never the peer sync or other networks.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netloom_firewall::NetworkPolicy;
use netloom_plugin_api::wire::ports::PortBinding;
use tracing::{debug, info, warn};

use crate::gateway::{self, Gateway};
use crate::overlay::Overlay;
use crate::records::short;

impl Overlay {
    /// Withdraws an endpoint's published ports from docker_gwbridge (at Leave and DeleteEndpoint;
    /// again harmless). The caller holds the endpoint's network turn.
    pub async fn withdraw_ports(&self, endpoint: &str) {
        let Some(gateway) = &self.gateway else { return };
        let _serial = self.gateway_lock.lock().await;
        let (policy, ep) = {
            let state = self.state();
            (state.gateway_policy.clone(), state.endpoints.get(endpoint).cloned())
        };
        let (Some(policy), Some(mut ep)) = (policy, ep) else { return };
        let Some(address) = ep.gateway_ip else { return };
        if let Err(e) = gateway.withdraw(&policy, &ep.id, &gateway::mappings(&ep.ports, address)).await {
            warn!(endpoint = %short(&ep.id), "withdrawing published ports: {e:#}");
            return;
        }
        ep.gateway_ip = None;
        let _ = self.put_endpoint(&ep).await;
        self.state().endpoints.insert(ep.id.clone(), ep);
    }

    /// docker_gwbridge's rules and port flags, and the published ports of this host's endpoints:
    /// re-applied (rules someone flushed come back), leftovers of endpoints that are gone removed.
    pub async fn sync_gateway(&self) {
        let Some(gateway) = &self.gateway else { return };
        let _serial = self.gateway_lock.lock().await;
        let Some(policy) = self.program_gateway(gateway).await else { return };
        let published: Vec<(String, Vec<PortBinding>, IpAddr)> = self
            .state()
            .endpoints
            .values()
            .filter_map(|ep| Some((ep.id.clone(), ep.ports.clone(), ep.gateway_ip?)))
            .collect();
        let mut live = Vec::new();
        for (id, ports, address) in published {
            if let Err(e) = gateway.publish(&policy, &id, &gateway::mappings(&ports, address)).await {
                warn!(endpoint = %short(&id), "re-publishing ports: {e:#}");
            }
            live.push(id);
        }
        gateway.retain(&policy, &live).await;
    }

    /// docker_gwbridge's rules and port flags brought in line, and the policy in force recorded;
    /// None while there is no such bridge, or when programming it failed (logged).
    async fn program_gateway(&self, gateway: &Gateway) -> Option<NetworkPolicy> {
        match gateway.ensure(self.fabric.netlink()).await {
            Ok(policy) => {
                self.state().gateway_policy = policy.clone();
                policy
            }
            Err(e) => {
                warn!("programming docker_gwbridge: {e:#}");
                None
            }
        }
    }
}

/// After Join, Docker gives the container its docker_gwbridge leg: once it is there, the container
/// may ask for names (its DNS queries come from that address), and loom-overlay programs the
/// bridge (first container on the host) and the container's published ports.
pub async fn after_join(ov: Arc<Overlay>, network: String, endpoint: String, sandbox: String) {
    let Some(address) = gateway_leg(&ov, &endpoint, &sandbox).await else { return };
    ov.learn_asker(&endpoint, address);
    attach_gateway(ov, network, endpoint, address).await;
}

/// The container's docker_gwbridge address, once it has one (None after 10 s, or on an error).
async fn gateway_leg(ov: &Overlay, endpoint: &str, sandbox: &str) -> Option<IpAddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = match Gateway::policy(ov.fabric.netlink()).await {
            Ok(Some(policy)) => gateway::address_in_sandbox(sandbox, &policy.subnets).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match found {
            Ok(Some(address)) => return Some(address),
            Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(None) => {
                debug!(endpoint = %short(endpoint), "no docker_gwbridge leg appeared");
                return None;
            }
            Err(e) => {
                debug!(endpoint = %short(endpoint), "looking for the docker_gwbridge leg: {e:#}");
                return None;
            }
        }
    }
}

/// Programs docker_gwbridge and publishes the endpoint's ports on the container's `address` there.
async fn attach_gateway(ov: Arc<Overlay>, network: String, endpoint: String, address: IpAddr) {
    let Some(gateway) = &ov.gateway else { return };
    // The endpoint's network turn: a Leave or DeleteEndpoint meanwhile waits, then withdraws.
    let _turn = match ov.turn(&network, format!("publishing the ports of {}", short(&endpoint))).await {
        Ok(turn) => turn,
        Err(e) => {
            warn!(endpoint = %short(&endpoint), "publishing ports on docker_gwbridge: {e}");
            return;
        }
    };
    let _serial = ov.gateway_lock.lock().await;
    let Some(policy) = ov.program_gateway(gateway).await else { return };
    // Gone: deleted before its ports were published.
    let Some(mut ep) = ov.state().endpoints.get(&endpoint).cloned() else { return };
    if ep.ports.is_empty() {
        return;
    }
    let mappings = gateway::mappings(&ep.ports, address);
    if let Err(e) = gateway.publish(&policy, &ep.id, &mappings).await {
        warn!(endpoint = %short(&ep.id), "publishing ports on docker_gwbridge: {e:#}");
        return;
    }
    info!(endpoint = %short(&ep.id), ports = ?mappings.iter().map(ToString::to_string).collect::<Vec<_>>(),
          "ports published on docker_gwbridge");
    ep.gateway_ip = Some(address);
    if let Err(e) = ov.put_endpoint(&ep).await {
        warn!("{e}");
    }
    ov.state().endpoints.insert(ep.id.clone(), ep);
}
