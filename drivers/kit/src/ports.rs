//! Published ports: ProgramExternalConnectivity and RevokeExternalConnectivity for a driver whose
//! endpoints publish through the shared firewall, and the one conversion of Docker's protocols to
//! the firewall's.

use std::net::Ipv4Addr;

use anyhow::Result;
use netloom_firewall::{Firewall, FirewallError, NetworkPolicy, PortMapping, Proto};
use netloom_plugin_api::addressing::short_id;
use netloom_plugin_api::host_ports::PublishedPort;
use netloom_plugin_api::wire::network::{EndpointRef, ProgramExternalConnectivityRequest};
use netloom_plugin_api::wire::ports::{port_bindings, Protocol};
use netloom_plugin_api::{PluginError, PluginResult};
use tracing::{debug, info};

use crate::guard::firewall_call;
use crate::record::{Endpoint, Network};
use crate::registry::Registry;

pub fn proto(protocol: Protocol) -> Proto {
    match protocol {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Sctp => Proto::Sctp,
    }
}

/// The firewall's form of published ports.
pub fn mappings(ports: &[PublishedPort]) -> Vec<PortMapping> {
    ports
        .iter()
        .map(|p| PortMapping {
            proto: proto(p.proto),
            host_ip: p.host_ip,
            host_port: p.host_port,
            container_ip: p.container_ip,
            container_port: p.container_port,
        })
        .collect()
}

/// Withdraws an endpoint's published ports (bounded).
pub async fn withdraw(
    firewall: &dyn Firewall,
    policy: &NetworkPolicy,
    endpoint_id: &str,
    ports: &[PublishedPort],
) -> Result<()> {
    let what = format!("withdrawing ports of endpoint {}", short_id(endpoint_id));
    firewall_call(firewall, what, firewall.remove_ports(policy, endpoint_id, &mappings(ports))).await
}

/// ProgramExternalConnectivity: resolves and reserves the host ports, withdraws the endpoint's
/// ports that are no longer asked for, publishes the new ones and records them; on an error the
/// reservation goes back to what was published before.
pub async fn publish<N: Network, E: Endpoint>(
    registry: &Registry<N, E>,
    firewall: &dyn Firewall,
    req: &ProgramExternalConnectivityRequest,
    default_host_ipv4: impl Fn(&N) -> Option<Ipv4Addr>,
    policy: impl Fn(&N, &E) -> NetworkPolicy,
) -> PluginResult<()> {
    let bindings = port_bindings(&req.options).map_err(PluginError::new)?;
    let endpoint_id = req.endpoint_id.as_str();
    debug!(endpoint = %short_id(endpoint_id), ?bindings, "port bindings from Docker");
    let doing = format!("ProgramExternalConnectivity of {}", short_id(endpoint_id));
    let _turn = registry.turn(&req.network_id, doing).await?;
    let (net, mut ep, ports) = registry.reserve_ports(endpoint_id, &bindings, default_host_ipv4)?;
    let policy = policy(&net, &ep);
    let stale: Vec<PublishedPort> = ep.ports().iter().filter(|p| !ports.contains(p)).cloned().collect();
    let previous = ep.ports().to_vec();
    let applied = async {
        if !stale.is_empty() {
            withdraw(firewall, &policy, endpoint_id, &stale).await?;
        }
        if !ports.is_empty() {
            let what = format!("publishing ports of endpoint {}", short_id(endpoint_id));
            firewall_call(firewall, what, firewall.add_ports(&policy, endpoint_id, &mappings(&ports))).await?;
        }
        ep.set_ports(ports.clone());
        registry.put_endpoint(ep).await
    };
    if let Err(e) = applied.await {
        registry.maps().ports.insert(endpoint_id, previous);
        return Err(port_error(e));
    }
    if !ports.is_empty() {
        info!(endpoint = %short_id(endpoint_id), ports = ?ports.iter().map(PublishedPort::describe).collect::<Vec<_>>(), "ports published");
    }
    Ok(())
}

/// A host port the firewall already forwards elsewhere (another driver, or rules left by an
/// older run) said in the user's terms.
fn port_error(e: anyhow::Error) -> PluginError {
    match e.downcast_ref::<FirewallError>() {
        Some(FirewallError::PortInUse(ports)) => PluginError::new(format!(
            "cannot publish {ports}: the host's firewall already forwards it to another container; \
             choose another host port (-p HOST_PORT:PORT) or remove the container holding it"
        )),
        _ => e.into(),
    }
}

/// RevokeExternalConnectivity: withdraws the endpoint's published ports and records that.
pub async fn revoke<N: Network, E: Endpoint>(
    registry: &Registry<N, E>,
    firewall: &dyn Firewall,
    req: &EndpointRef,
    policy: impl Fn(&N, &E) -> NetworkPolicy,
) -> PluginResult<()> {
    let doing = format!("RevokeExternalConnectivity of {}", short_id(&req.endpoint_id));
    let _turn = registry.turn(&req.network_id, doing).await?;
    let Some((net, mut ep)) = registry.endpoint_with_network(&req.endpoint_id) else {
        return Ok(());
    };
    if ep.ports().is_empty() {
        return Ok(());
    }
    if let Some(net) = net {
        withdraw(firewall, &policy(&net, &ep), &req.endpoint_id, ep.ports()).await?;
    }
    ep.set_ports(Vec::new());
    registry.put_endpoint(ep).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_maps() {
        for (protocol, expected) in
            [(Protocol::Tcp, Proto::Tcp), (Protocol::Udp, Proto::Udp), (Protocol::Sctp, Proto::Sctp)]
        {
            assert_eq!(proto(protocol), expected);
            assert_eq!(u8::from(protocol), expected.number());
        }
    }

    #[test]
    fn a_port_in_use_is_said_plainly() {
        let err = port_error(FirewallError::PortInUse("0.0.0.0:8080/tcp".into()).into());
        assert!(err.message().starts_with("cannot publish 0.0.0.0:8080/tcp: "), "{}", err.message());
        assert!(err.message().contains("choose another host port"), "{}", err.message());
    }
}
