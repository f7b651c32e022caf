//! Host port allocation for published ports, shared by the drivers that publish them: Docker
//! sends `-p` as bindings whose host port may be 0 (`-P`: pick one) or a range; the driver picks
//! concrete ports and refuses conflicts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::addressing::short_id as short;
use crate::wire::ports::{PortBinding, Protocol};

/// Docker's default range for `-P` and `-p 0:…`.
pub const EPHEMERAL: (u16, u16) = (49153, 65535);

/// One published port with its host side resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublishedPort {
    pub proto: Protocol,
    /// None: every host address of the container address's family.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
}

impl PublishedPort {
    fn overlaps(&self, proto: Protocol, host_ip: Option<IpAddr>, port: u16) -> bool {
        if self.proto != proto || self.host_port != port {
            return false;
        }
        match (self.host_ip, host_ip) {
            (None, None) => true,
            (Some(a), Some(b)) => a == b,
            (Some(a), None) | (None, Some(a)) => a.is_ipv4() == self.container_ip.is_ipv4(),
        }
    }

    pub fn describe(&self) -> String {
        let host = self.host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into());
        format!("{host}:{}->{}/{}", self.host_port, self.container_port, self.proto)
    }
}

/// Every host port this driver has published, across all its networks (host ports are host-wide).
#[derive(Debug, Default)]
pub struct PortTable {
    /// endpoint id → its ports
    by_endpoint: BTreeMap<String, Vec<PublishedPort>>,
}

impl PortTable {
    pub fn insert(&mut self, endpoint_id: &str, ports: Vec<PublishedPort>) {
        if ports.is_empty() {
            self.by_endpoint.remove(endpoint_id);
        } else {
            self.by_endpoint.insert(endpoint_id.to_string(), ports);
        }
    }

    pub fn remove(&mut self, endpoint_id: &str) -> Vec<PublishedPort> {
        self.by_endpoint.remove(endpoint_id).unwrap_or_default()
    }

    fn owner_of(&self, proto: Protocol, host_ip: Option<IpAddr>, port: u16, except: &str) -> Option<&str> {
        self.by_endpoint
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .find(|(_, ports)| ports.iter().any(|p| p.overlaps(proto, host_ip, port)))
            .map(|(id, _)| id.as_str())
    }

    /// Resolves Docker's bindings for `endpoint_id` (whose container addresses are given) into
    /// concrete ports, without recording them. `is_free` tells whether a host process holds a port.
    pub fn resolve(
        &self,
        endpoint_id: &str,
        bindings: &[PortBinding],
        container_v4: Option<IpAddr>,
        container_v6: Option<IpAddr>,
        default_host_ipv4: Option<Ipv4Addr>,
        is_free: &dyn Fn(Protocol, Option<IpAddr>, u16) -> bool,
    ) -> Result<Vec<PublishedPort>> {
        let mut resolved: Vec<PublishedPort> = Vec::new();
        for binding in bindings {
            let host_ip = match binding.host_ip.trim() {
                "" => default_host_ipv4.map(IpAddr::V4),
                text => match text.parse::<IpAddr>() {
                    Ok(ip) if ip.is_unspecified() => None,
                    Ok(ip) => Some(ip),
                    Err(_) => bail!("host address {text:?} of port {} is not an IP address", binding.port),
                },
            };
            let wants_v6 = match binding.host_ip.trim().parse::<IpAddr>() {
                Ok(ip) => ip.is_ipv6(),
                Err(_) => false,
            };
            let container_ip = if wants_v6 { container_v6 } else { container_v4 };
            let Some(container_ip) = container_ip else {
                // e.g. `[::]:8080:80` for a container without IPv6: nothing to publish on that family.
                continue;
            };
            let (first, last) = match (binding.host_port, binding.host_port_end) {
                (0, _) => EPHEMERAL,
                (start, end) if end < start => (start, start),
                (start, end) => (start, end),
            };
            let taken_here = |port: u16| resolved.iter().any(|p| p.overlaps(binding.proto, host_ip, port));
            let mut conflict = None;
            let chosen = (first..=last).find(|&port| {
                if taken_here(port) {
                    return false;
                }
                if let Some(owner) = self.owner_of(binding.proto, host_ip, port, endpoint_id) {
                    conflict.get_or_insert(format!("it is already published for endpoint {}", short(owner)));
                    return false;
                }
                if !is_free(binding.proto, host_ip, port) {
                    conflict.get_or_insert("a process on the host is listening on it".to_string());
                    return false;
                }
                true
            });
            let Some(host_port) = chosen else {
                let host = host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into());
                let range = if first == last { format!("{first}") } else { format!("{first}-{last}") };
                bail!(
                    "cannot publish port {}/{} on {host}:{range}: {}; choose another host port",
                    binding.port,
                    binding.proto,
                    conflict.unwrap_or_else(|| "no free port in the range".into())
                );
            };
            resolved.push(PublishedPort { proto: binding.proto, host_ip, host_port, container_ip, container_port: binding.port });
        }
        Ok(resolved)
    }
}

/// Tries to bind the port the way a host service would; a failure means someone else holds it.
pub fn host_port_is_free(proto: Protocol, host_ip: Option<IpAddr>, port: u16) -> bool {
    let ip = host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match proto {
        Protocol::Tcp => std::net::TcpListener::bind((ip, port)).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind((ip, port)).is_ok(),
        // No SCTP socket in std; rely on the driver's own table.
        Protocol::Sctp => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(proto: Protocol, host_ip: &str, host_port: u16, host_port_end: u16, port: u16) -> PortBinding {
        PortBinding { proto, ip: String::new(), port, host_ip: host_ip.into(), host_port, host_port_end }
    }

    const C1: &str = "172.20.0.2";
    fn v4(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }
    fn all_free(_: Protocol, _: Option<IpAddr>, _: u16) -> bool {
        true
    }

    #[test]
    fn single_port_and_range() {
        let table = PortTable::default();
        let ports = table
            .resolve("e1", &[binding(Protocol::Tcp, "", 8080, 8080, 80), binding(Protocol::Udp, "127.0.0.1", 5000, 5002, 53)], v4(C1), None, None, &all_free)
            .unwrap();
        assert_eq!(ports[0].describe(), "0.0.0.0:8080->80/tcp");
        assert_eq!(ports[1].host_ip, v4("127.0.0.1"));
        assert_eq!(ports[1].host_port, 5000);
    }

    #[test]
    fn conflicts_are_refused_with_the_owner() {
        let mut table = PortTable::default();
        let first = table.resolve("e1", &[binding(Protocol::Tcp, "", 8080, 8080, 80)], v4(C1), None, None, &all_free).unwrap();
        table.insert("e1", first);
        let err = table.resolve("e2", &[binding(Protocol::Tcp, "127.0.0.1", 8080, 8080, 80)], v4("172.20.0.3"), None, None, &all_free).unwrap_err();
        assert!(err.to_string().contains("already published for endpoint e1"), "{err}");
        // udp on the same number is fine, and so is the same endpoint asking again (idempotent).
        table.resolve("e2", &[binding(Protocol::Udp, "", 8080, 8080, 80)], v4(C1), None, None, &all_free).unwrap();
        table.resolve("e1", &[binding(Protocol::Tcp, "", 8080, 8080, 80)], v4(C1), None, None, &all_free).unwrap();
        // a range skips the taken port
        let ports = table.resolve("e3", &[binding(Protocol::Tcp, "", 8080, 8081, 80)], v4(C1), None, None, &all_free).unwrap();
        assert_eq!(ports[0].host_port, 8081);
    }

    #[test]
    fn ephemeral_and_busy_host_ports() {
        let table = PortTable::default();
        let busy = |_: Protocol, _: Option<IpAddr>, port: u16| port != EPHEMERAL.0;
        let ports = table.resolve("e1", &[binding(Protocol::Tcp, "", 0, 0, 80)], v4(C1), None, None, &busy).unwrap();
        assert_eq!(ports[0].host_port, EPHEMERAL.0 + 1);
        let err = table.resolve("e1", &[binding(Protocol::Tcp, "", 9000, 9000, 80)], v4(C1), None, None, &|_, _, _| false).unwrap_err();
        assert!(err.to_string().contains("a process on the host is listening"), "{err}");
    }

    #[test]
    fn v6_bindings_need_a_v6_container_and_default_host_ip_applies() {
        let table = PortTable::default();
        let ports = table
            .resolve("e1", &[binding(Protocol::Tcp, "::", 8080, 8080, 80), binding(Protocol::Tcp, "", 8080, 8080, 80)], v4(C1), None, Some(Ipv4Addr::LOCALHOST), &all_free)
            .unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].host_ip, v4("127.0.0.1"));
        let err = table.resolve("e1", &[binding(Protocol::Tcp, "nonsense", 1, 1, 80)], v4(C1), None, None, &all_free).unwrap_err();
        assert!(err.to_string().contains("not an IP address"));
    }
}
