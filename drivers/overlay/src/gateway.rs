//! Egress and published ports, Docker style: through `docker_gwbridge`.
//!
//! `Join` returns no gateway, so Docker gives every overlay container a second leg on its
//! `docker_gwbridge` (a bridge network it creates on first use: masquerade on, icc off) for the
//! default route, and publishes `-p` ports on that leg. Docker programs the NAT for it only when
//! dockerd runs its own iptables; with `--iptables=false` the containers would have neither
//! egress nor published ports. So loom-overlay programs docker_gwbridge itself, through
//! netloom's firewall module, whatever dockerd does:
//!
//! - masquerade for the bridge's subnet, forwarding out of it, isolation from other bridges
//!   (firewall policy `loom-overlay.docker_gwbridge`);
//! - no traffic between its ports: each port is an isolated bridge port (the firewall's icc drop
//!   only sees bridged traffic when br_netfilter is loaded);
//! - published ports: DNAT from the host's addresses to the container's docker_gwbridge address,
//!   for `-p` with a fixed host port (`-P` and port ranges are left to Docker).
//!
//! When dockerd does run its iptables these rules duplicate its own, which is harmless.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Result;
use ipnetwork::IpNetwork;
use netloom_dataplane::{Netlink, Netns};
use netloom_driver_kit::guard::firewall_call;
use netloom_driver_kit::ports::proto;
use netloom_firewall::{BackendKind, Firewall, NetworkPolicy, PortMapping};
use netloom_plugin_api::wire::ports::PortBinding;
use tracing::{debug, info, warn};

pub const GWBRIDGE: &str = "docker_gwbridge";
/// The firewall id of loom-overlay's rules for docker_gwbridge.
pub const POLICY_ID: &str = "loom-overlay.docker_gwbridge";

pub struct Gateway {
    firewall: Arc<dyn Firewall>,
}

impl Gateway {
    /// The backend's rules for docker_gwbridge (the other backend's, left from before a switch,
    /// go in [`crate::start`]'s sweep).
    pub async fn open(kind: BackendKind) -> Result<Gateway> {
        Ok(Gateway { firewall: netloom_firewall::open(kind).await? })
    }

    /// docker_gwbridge's policy, or None while there is no such bridge.
    pub async fn policy(netlink: &Netlink) -> Result<Option<NetworkPolicy>> {
        let Some(bridge) = netlink.link(GWBRIDGE).await? else { return Ok(None) };
        let subnets: Vec<IpNetwork> = netlink
            .addresses(&bridge)
            .await?
            .into_iter()
            .filter(|a| a.is_ipv4())
            .filter_map(|a| IpNetwork::new(a.network(), a.prefix()).ok())
            .collect();
        if subnets.is_empty() {
            return Ok(None);
        }
        Ok(Some(NetworkPolicy {
            network_id: POLICY_ID.to_string(),
            bridge: GWBRIDGE.to_string(),
            subnets,
            masquerade: true,
            snat_source: None,
            icc: false,
            internal: false,
            isolate: true,
        }))
    }

    /// Brings docker_gwbridge's rules and port flags in line; removes the rules when the bridge
    /// is gone. Returns the policy in force.
    pub async fn ensure(&self, netlink: &Netlink) -> Result<Option<NetworkPolicy>> {
        let Some(policy) = Gateway::policy(netlink).await? else {
            let owned = self.call("listing its rules", self.firewall.owned_networks()).await?;
            if owned.iter().any(|id| id == POLICY_ID) {
                info!("docker_gwbridge is gone; removing its rules");
                self.call("removing docker_gwbridge's rules", self.firewall.remove_network_by_id(POLICY_ID)).await?;
            }
            return Ok(None);
        };
        self.call("programming docker_gwbridge", self.firewall.add_network(&policy)).await?;
        let bridge = netlink.link(GWBRIDGE).await?;
        if let Some(bridge) = bridge {
            for port in netlink.links().await?.into_iter().filter(|l| l.controller == Some(bridge.index)) {
                if let Err(e) = netlink.set_port_isolated(&port, true).await {
                    debug!("{e:#}");
                }
            }
        }
        Ok(Some(policy))
    }

    pub async fn publish(&self, policy: &NetworkPolicy, endpoint: &str, mappings: &[PortMapping]) -> Result<()> {
        if mappings.is_empty() {
            return Ok(());
        }
        self.call("publishing ports on docker_gwbridge", self.firewall.add_ports(policy, endpoint, mappings)).await
    }

    pub async fn withdraw(&self, policy: &NetworkPolicy, endpoint: &str, mappings: &[PortMapping]) -> Result<()> {
        if mappings.is_empty() {
            return Ok(());
        }
        self.call("withdrawing ports from docker_gwbridge", self.firewall.remove_ports(policy, endpoint, mappings))
            .await
    }

    /// One firewall call, failing instead of hanging (the caller may hold a network's turn).
    async fn call<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        firewall_call(&*self.firewall, what.to_string(), call).await
    }

    /// Drops published ports of endpoints that are gone.
    pub async fn retain(&self, policy: &NetworkPolicy, live: &[String]) {
        match self.call("checking published ports", self.firewall.retain_endpoints(policy, live)).await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "published ports of endpoints that are gone removed"),
            Err(e) => warn!("checking published ports: {e:#}"),
        }
    }
}

/// The `-p` bindings loom-overlay publishes itself, towards `container_ip` (the container's
/// docker_gwbridge address): fixed host ports of the container's family.
pub fn mappings(bindings: &[PortBinding], container_ip: IpAddr) -> Vec<PortMapping> {
    bindings
        .iter()
        .filter(|b| b.host_port != 0 && (b.host_port_end == 0 || b.host_port_end == b.host_port))
        .filter_map(|b| {
            let host_ip = match b.host_ip.as_str() {
                "" => None,
                text => Some(text.parse::<IpAddr>().ok()?),
            };
            let host_ip = host_ip.filter(|ip| !ip.is_unspecified());
            if host_ip.is_some_and(|ip| ip.is_ipv4() != container_ip.is_ipv4()) {
                return None;
            }
            Some(PortMapping {
                proto: proto(b.proto),
                host_ip,
                host_port: b.host_port,
                container_ip,
                container_port: b.port,
            })
        })
        .collect()
}

/// The container's address on docker_gwbridge, read inside its sandbox: the address of one of
/// its interfaces that lies in one of `subnets`.
pub async fn address_in_sandbox(sandbox: &str, subnets: &[IpNetwork]) -> Result<Option<IpAddr>> {
    let Some(ns) = Netns::open(sandbox)? else { return Ok(None) };
    let netlink = Netlink::connect_in(&ns)?;
    for link in netlink.links().await? {
        for address in netlink.addresses(&link).await? {
            if subnets.iter().any(|s| s.contains(address.ip())) {
                return Ok(Some(address.ip()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use netloom_plugin_api::wire::ports::Protocol;

    use super::*;

    fn binding(proto: Protocol, host_ip: &str, host_port: u16, end: u16, port: u16) -> PortBinding {
        PortBinding { proto, ip: String::new(), port, host_ip: host_ip.into(), host_port, host_port_end: end }
    }

    #[test]
    fn fixed_host_ports_of_the_family() {
        let ip: IpAddr = "172.18.0.3".parse().unwrap();
        let got = mappings(
            &[
                binding(Protocol::Tcp, "", 8080, 8080, 80),
                binding(Protocol::Udp, "10.250.0.1", 5353, 0, 53),
                binding(Protocol::Tcp, "0.0.0.0", 8443, 8443, 443),
                binding(Protocol::Tcp, "", 0, 0, 81), // -P: Docker picks the port
                binding(Protocol::Tcp, "", 9000, 9010, 82), // a range: Docker picks one
                binding(Protocol::Tcp, "::1", 8081, 8081, 83), // another family
            ],
            ip,
        );
        let text: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec!["*:8080/tcp -> 172.18.0.3:80", "10.250.0.1:5353/udp -> 172.18.0.3:53", "*:8443/tcp -> 172.18.0.3:443"]
        );
    }
}
