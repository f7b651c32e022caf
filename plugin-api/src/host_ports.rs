//! Host port allocation for published ports, shared by the drivers that publish them: Docker
//! sends `-p` as bindings whose host port may be 0 (`-P`: pick one) or a range; the driver picks
//! concrete ports and refuses conflicts.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::ids::short_id as short;
use crate::port_holder;
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
    /// The family the port is published on: its host address's, or its container's when it is
    /// published on every host address.
    fn is_ipv6(&self) -> bool {
        self.host_ip.map(|ip| ip.is_ipv6()).unwrap_or(self.container_ip.is_ipv6())
    }

    fn overlaps(&self, proto: Protocol, host_ip: Option<IpAddr>, ipv6: bool, port: u16) -> bool {
        if self.proto != proto || self.host_port != port || self.is_ipv6() != ipv6 {
            return false;
        }
        match (self.host_ip, host_ip) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    pub fn describe(&self) -> String {
        let host = host_side(self.host_ip, self.container_ip, &self.host_port.to_string());
        format!("{host}->{}/{}", self.container_port, self.proto)
    }
}

/// `address:port` as Docker prints a host binding; no host address means every address of the
/// container address's family (`0.0.0.0`, `[::]`).
fn host_side(host_ip: Option<IpAddr>, container_ip: IpAddr, port: &str) -> String {
    match host_ip {
        Some(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Some(ip) => format!("{ip}:{port}"),
        None if container_ip.is_ipv6() => format!("[::]:{port}"),
        None => format!("0.0.0.0:{port}"),
    }
}

/// Who holds a host port a binding asked for.
#[derive(Debug)]
enum Holder {
    /// Another endpoint of this driver (its short id).
    Endpoint(String),
    /// A process on the host, named when /proc tells.
    Process(Option<port_holder::Holder>),
}

/// The first host port found taken while resolving a binding, and by whom.
#[derive(Debug)]
struct Conflict {
    /// `address:port`.
    at: String,
    holder: Holder,
}

/// Why `binding` cannot be published on `hosts` (`address:port-or-range` each) and what to do,
/// starting the way Docker says it ("Bind for 0.0.0.0:8080 failed: port is already allocated").
fn refusal(binding: &PortBinding, hosts: &[String], range: bool, conflict: Option<Conflict>) -> String {
    let what = format!("cannot publish port {}/{} on {}", binding.port, binding.proto, hosts.join(" and "));
    let retry = format!(
        "choose another host port (-p HOST_PORT:{port}) or leave it out (-p {port}) to get a free one",
        port = binding.port
    );
    let Some(Conflict { at, holder }) = conflict else {
        return format!("{what}: no port in the range is free; {retry}");
    };
    let (reason, bind_error, advice) = match holder {
        Holder::Endpoint(endpoint) => (
            format!("it is already published for endpoint {endpoint}"),
            "port is already allocated",
            format!("{retry}, or remove the container of endpoint {endpoint}"),
        ),
        Holder::Process(Some(process)) => (
            format!("process {} (pid {}) on the host is listening on it", process.name, process.pid),
            "address already in use",
            format!("stop that process, or {retry}"),
        ),
        Holder::Process(None) => (
            "a process on the host is listening on it".to_string(),
            "address already in use",
            format!("stop that process, or {retry}"),
        ),
    };
    if range {
        format!("{what}: no port in the range is free ({at}: {reason}); {advice}")
    } else {
        format!("{what}: {reason} (Bind for {at} failed: {bind_error}); {advice}")
    }
}

/// Every host port this driver has published, across all its networks (host ports are host-wide).
#[derive(Debug, Default, Clone)]
pub struct PortTable {
    /// endpoint id → its ports
    by_endpoint: BTreeMap<String, Vec<PublishedPort>>,
}

/// Where one Docker binding publishes: (host address, container address) pairs, one per family.
type Targets = Vec<(Option<IpAddr>, IpAddr)>;

/// Reads a binding's host address into the pairs it publishes on.
///
/// Docker 20.10 and 26 send `-p 8080:80` as HostIP "" (both families, like their docker-proxy on
/// `[::]`); `-p 0.0.0.0:…` and `-p [::]:…` ask for one family each, so a daemon that splits a
/// binding into the two is served the same way. A host address of one family maps to the
/// container address of that family.
fn targets(
    binding: &PortBinding,
    container_v4: Option<IpAddr>,
    container_v6: Option<IpAddr>,
    default_host_ipv4: Option<Ipv4Addr>,
) -> Result<Targets> {
    let text = binding.host_ip.trim();
    let host_ip = match text {
        "" => None,
        text => match text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => Some(ip.to_canonical()),
            Err(_) => bail!("host address {text:?} of port {} is not an IP address", binding.port),
        },
    };
    let pairs = match host_ip {
        None => match default_host_ipv4 {
            // The network's host_binding_ipv4 stands in for "every address", IPv4 only, as
            // with Docker's bridge.
            Some(default) => container_v4.map(|c| (Some(IpAddr::V4(default)), c)).into_iter().collect(),
            None => [container_v4, container_v6].into_iter().flatten().map(|c| (None, c)).collect(),
        },
        Some(IpAddr::V4(ip)) if ip.is_unspecified() => container_v4.map(|c| (None, c)).into_iter().collect(),
        Some(IpAddr::V6(ip)) if ip.is_unspecified() => container_v6.map(|c| (None, c)).into_iter().collect(),
        Some(IpAddr::V6(ip)) if ip.is_loopback() => bail!(
            "cannot publish port {}/{} on [::1]: the kernel never routes IPv6 loopback traffic to another \
             interface (IPv6 has no route_localnet), so nothing could answer there; publish on 127.0.0.1 \
             (-p 127.0.0.1:{}:{}) or on a host IPv6 address",
            binding.port,
            binding.proto,
            binding.host_port,
            binding.port
        ),
        Some(ip @ IpAddr::V6(_)) => match container_v6 {
            Some(c) => vec![(Some(ip), c)],
            None => bail!(
                "cannot publish port {}/{} on [{ip}]: the container has no IPv6 address on this network; \
                 create the network with --ipv6 or publish on an IPv4 address",
                binding.port,
                binding.proto
            ),
        },
        Some(ip @ IpAddr::V4(_)) => match container_v4 {
            Some(c) => vec![(Some(ip), c)],
            None => bail!(
                "cannot publish port {}/{} on {ip}: the container has no IPv4 address on this network; \
                 publish on an IPv6 address instead",
                binding.port,
                binding.proto
            ),
        },
    };
    Ok(pairs)
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

    fn owner_of(&self, proto: Protocol, host_ip: Option<IpAddr>, ipv6: bool, port: u16, except: &str) -> Option<&str> {
        self.by_endpoint
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .find(|(_, ports)| ports.iter().any(|p| p.overlaps(proto, host_ip, ipv6, port)))
            .map(|(id, _)| id.as_str())
    }

    /// Resolves Docker's bindings for `endpoint_id` (whose container addresses are given) into
    /// concrete ports, without recording them. `is_free` tells whether a host process holds a port.
    /// A binding published on both families gets the same host port on both.
    pub fn resolve(
        &self,
        endpoint_id: &str,
        bindings: &[PortBinding],
        container_v4: Option<IpAddr>,
        container_v6: Option<IpAddr>,
        default_host_ipv4: Option<Ipv4Addr>,
        is_free: &dyn Fn(Protocol, Option<IpAddr>, bool, u16) -> bool,
    ) -> Result<Vec<PublishedPort>> {
        let mut resolved: Vec<PublishedPort> = Vec::new();
        for binding in bindings {
            let (first, last) = match (binding.host_port, binding.host_port_end) {
                (0, _) => EPHEMERAL,
                (start, end) if end < start => (start, start),
                (start, end) => (start, end),
            };
            // A daemon that sends one `-p` as several bindings ("" and "::") must not get it twice.
            let already = |(host_ip, container_ip): &(Option<IpAddr>, IpAddr)| {
                resolved.iter().any(|p| {
                    p.proto == binding.proto
                        && p.host_ip == *host_ip
                        && p.container_ip == *container_ip
                        && p.container_port == binding.port
                        && (first..=last).contains(&p.host_port)
                })
            };
            let targets: Targets = targets(binding, container_v4, container_v6, default_host_ipv4)?
                .into_iter()
                .filter(|t| !already(t))
                .collect();
            if targets.is_empty() {
                // e.g. `[::]:8080:80` for a container without IPv6: nothing to publish on that family.
                continue;
            }
            let mut conflict = None;
            let chosen = (first..=last).find(|&port| {
                targets.iter().all(|&(host_ip, container_ip)| {
                    let ipv6 = host_ip.map(|ip| ip.is_ipv6()).unwrap_or(container_ip.is_ipv6());
                    if resolved.iter().any(|p| p.overlaps(binding.proto, host_ip, ipv6, port)) {
                        return false;
                    }
                    let at = || host_side(host_ip, container_ip, &port.to_string());
                    if let Some(owner) = self.owner_of(binding.proto, host_ip, ipv6, port, endpoint_id) {
                        conflict.get_or_insert_with(|| Conflict {
                            at: at(),
                            holder: Holder::Endpoint(short(owner).into()),
                        });
                        return false;
                    }
                    if !is_free(binding.proto, host_ip, ipv6, port) {
                        conflict.get_or_insert_with(|| Conflict {
                            at: at(),
                            holder: Holder::Process(port_holder::process_holding(binding.proto, port)),
                        });
                        return false;
                    }
                    true
                })
            });
            let Some(host_port) = chosen else {
                let range = if first == last { format!("{first}") } else { format!("{first}-{last}") };
                let hosts: Vec<String> = targets.iter().map(|&(host_ip, c)| host_side(host_ip, c, &range)).collect();
                bail!("{}", refusal(binding, &hosts, first != last, conflict));
            };
            for (host_ip, container_ip) in targets {
                resolved.push(PublishedPort {
                    proto: binding.proto,
                    host_ip,
                    host_port,
                    container_ip,
                    container_port: binding.port,
                });
            }
        }
        Ok(resolved)
    }
}

/// Tries to bind the port the way a host service would; a failure means someone else holds it.
/// `ipv6` picks the wildcard address when `host_ip` is None.
pub fn host_port_is_free(proto: Protocol, host_ip: Option<IpAddr>, ipv6: bool, port: u16) -> bool {
    let wildcard = if ipv6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let ip = host_ip.unwrap_or(wildcard);
    let bound = match proto {
        Protocol::Tcp => std::net::TcpListener::bind((ip, port)).map(drop),
        Protocol::Udp => std::net::UdpSocket::bind((ip, port)).map(drop),
        // No SCTP socket in std; rely on the driver's own table.
        Protocol::Sctp => Ok(()),
    };
    match bound {
        Ok(()) => true,
        // Not (yet) an address of this host: no process can hold the port there either.
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => true,
        Err(_) => false,
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
    fn all_free(_: Protocol, _: Option<IpAddr>, _: bool, _: u16) -> bool {
        true
    }

    /// `table.resolve` with every host port free and no default host address.
    fn resolve(
        table: &PortTable,
        endpoint_id: &str,
        bindings: &[PortBinding],
        container_v4: Option<IpAddr>,
        container_v6: Option<IpAddr>,
    ) -> Result<Vec<PublishedPort>> {
        table.resolve(endpoint_id, bindings, container_v4, container_v6, None, &all_free)
    }
    const C6: &str = "fd00:9::2";

    #[test]
    fn single_port_and_range() {
        let table = PortTable::default();
        let ports = resolve(
            &table,
            "e1",
            &[binding(Protocol::Tcp, "", 8080, 8080, 80), binding(Protocol::Udp, "127.0.0.1", 5000, 5002, 53)],
            v4(C1),
            None,
        )
        .unwrap();
        assert_eq!(ports[0].describe(), "0.0.0.0:8080->80/tcp");
        assert_eq!(ports[1].host_ip, v4("127.0.0.1"));
        assert_eq!(ports[1].host_port, 5000);
    }

    #[test]
    fn conflicts_are_refused_with_the_owner() {
        let mut table = PortTable::default();
        let first = resolve(&table, "e1", &[binding(Protocol::Tcp, "", 8080, 8080, 80)], v4(C1), None).unwrap();
        table.insert("e1", first);
        let err = resolve(&table, "e2", &[binding(Protocol::Tcp, "127.0.0.1", 8080, 8080, 80)], v4("172.20.0.3"), None)
            .unwrap_err();
        assert!(err.to_string().contains("already published for endpoint e1"), "{err}");
        // udp on the same number is fine, and so is the same endpoint asking again (idempotent).
        resolve(&table, "e2", &[binding(Protocol::Udp, "", 8080, 8080, 80)], v4(C1), None).unwrap();
        resolve(&table, "e1", &[binding(Protocol::Tcp, "", 8080, 8080, 80)], v4(C1), None).unwrap();
        // a range skips the taken port
        let ports = resolve(&table, "e3", &[binding(Protocol::Tcp, "", 8080, 8081, 80)], v4(C1), None).unwrap();
        assert_eq!(ports[0].host_port, 8081);
    }

    #[test]
    fn ephemeral_and_busy_host_ports() {
        let table = PortTable::default();
        let busy = |_: Protocol, _: Option<IpAddr>, _: bool, port: u16| port != EPHEMERAL.0;
        let ports = table.resolve("e1", &[binding(Protocol::Tcp, "", 0, 0, 80)], v4(C1), None, None, &busy).unwrap();
        assert_eq!(ports[0].host_port, EPHEMERAL.0 + 1);
        let err = table
            .resolve("e1", &[binding(Protocol::Tcp, "", 9000, 9000, 80)], v4(C1), None, None, &|_, _, _, _| false)
            .unwrap_err();
        assert!(err.to_string().contains("on the host is listening on it"), "{err}");
    }

    #[test]
    fn v6_bindings_need_a_v6_container_and_default_host_ip_applies() {
        let table = PortTable::default();
        let ports = table
            .resolve(
                "e1",
                &[binding(Protocol::Tcp, "::", 8080, 8080, 80), binding(Protocol::Tcp, "", 8080, 8080, 80)],
                v4(C1),
                None,
                Some(Ipv4Addr::LOCALHOST),
                &all_free,
            )
            .unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].host_ip, v4("127.0.0.1"));
        let err = resolve(&table, "e1", &[binding(Protocol::Tcp, "nonsense", 1, 1, 80)], v4(C1), None).unwrap_err();
        assert!(err.to_string().contains("not an IP address"));
    }

    fn described(ports: &[PublishedPort]) -> Vec<String> {
        ports.iter().map(|p| format!("{}={}", p.describe(), p.container_ip)).collect()
    }

    #[test]
    fn unspecified_host_address_publishes_on_both_families_with_one_port() {
        let table = PortTable::default();
        let ports = resolve(&table, "e1", &[binding(Protocol::Tcp, "", 8088, 8088, 80)], v4(C1), v4(C6)).unwrap();
        assert_eq!(described(&ports), ["0.0.0.0:8088->80/tcp=172.20.0.2", "[::]:8088->80/tcp=fd00:9::2"]);
        // -P: the same ephemeral port on both families, even when the first is taken on IPv6 only.
        let busy_v6 = |_: Protocol, _: Option<IpAddr>, v6: bool, port: u16| !(v6 && port == EPHEMERAL.0);
        let ports =
            table.resolve("e1", &[binding(Protocol::Udp, "", 0, 0, 53)], v4(C1), v4(C6), None, &busy_v6).unwrap();
        assert_eq!(described(&ports), ["0.0.0.0:49154->53/udp=172.20.0.2", "[::]:49154->53/udp=fd00:9::2"]);
    }

    #[test]
    fn a_binding_split_by_the_daemon_is_published_once() {
        let table = PortTable::default();
        for pair in [["0.0.0.0", "::"], ["", "::"], ["::", ""], ["", "0.0.0.0"]] {
            for (first, last) in [(8088, 8088), (0, 0), (8088, 8090)] {
                let bindings: Vec<PortBinding> =
                    pair.iter().map(|h| binding(Protocol::Tcp, h, first, last, 80)).collect();
                let ports = resolve(&table, "e1", &bindings, v4(C1), v4(C6)).unwrap();
                assert_eq!(ports.len(), 2, "{pair:?} {first}-{last}: {:?}", described(&ports));
                assert_eq!(ports[0].host_port, ports[1].host_port, "{pair:?}");
                assert_ne!(ports[0].container_ip.is_ipv6(), ports[1].container_ip.is_ipv6(), "{pair:?}");
            }
        }
        // Two ports asked for separately stay two.
        let ports = resolve(
            &table,
            "e1",
            &[binding(Protocol::Tcp, "", 8088, 8088, 80), binding(Protocol::Tcp, "", 8089, 8089, 80)],
            v4(C1),
            None,
        )
        .unwrap();
        assert_eq!(ports.len(), 2);
    }

    #[test]
    fn host_addresses_pick_the_container_family() {
        let table = PortTable::default();
        let ports = resolve(
            &table,
            "e1",
            &[
                binding(Protocol::Tcp, "2001:db8::7", 8088, 8088, 80),
                binding(Protocol::Tcp, "[2001:db8::8]", 8088, 8088, 80),
                binding(Protocol::Tcp, "192.0.2.7", 8088, 8088, 80),
            ],
            v4(C1),
            v4(C6),
        )
        .unwrap();
        assert_eq!(
            described(&ports),
            [
                "[2001:db8::7]:8088->80/tcp=fd00:9::2",
                "[2001:db8::8]:8088->80/tcp=fd00:9::2",
                "192.0.2.7:8088->80/tcp=172.20.0.2"
            ]
        );
        // An IPv4-mapped IPv6 address is the IPv4 address.
        let ports =
            resolve(&table, "e1", &[binding(Protocol::Tcp, "::ffff:192.0.2.7", 8088, 8088, 80)], v4(C1), v4(C6))
                .unwrap();
        assert_eq!(described(&ports), ["192.0.2.7:8088->80/tcp=172.20.0.2"]);
        let err =
            resolve(&table, "e1", &[binding(Protocol::Tcp, "2001:db8::7", 8088, 8088, 80)], v4(C1), None).unwrap_err();
        assert!(err.to_string().contains("no IPv6 address on this network; create the network with --ipv6"), "{err}");
        let err =
            resolve(&table, "e1", &[binding(Protocol::Tcp, "192.0.2.7", 8088, 8088, 80)], None, v4(C6)).unwrap_err();
        assert!(err.to_string().contains("no IPv4 address"), "{err}");
    }

    #[test]
    fn ipv6_loopback_is_refused_with_the_reason() {
        let table = PortTable::default();
        for host in ["::1", "[::1]"] {
            let err =
                resolve(&table, "e1", &[binding(Protocol::Tcp, host, 8089, 8089, 80)], v4(C1), v4(C6)).unwrap_err();
            let err = err.to_string();
            assert!(
                err.contains("on [::1]") && err.contains("route_localnet") && err.contains("-p 127.0.0.1:8089:80"),
                "{err}"
            );
        }
    }

    #[test]
    fn conflicts_are_per_family() {
        let mut table = PortTable::default();
        let v6_only = resolve(&table, "e1", &[binding(Protocol::Tcp, "::", 8080, 8080, 80)], v4(C1), v4(C6)).unwrap();
        assert_eq!(described(&v6_only), ["[::]:8080->80/tcp=fd00:9::2"]);
        table.insert("e1", v6_only);
        // IPv4 on the same port is free; IPv6 (wildcard or one address) is not; "" needs both.
        resolve(&table, "e2", &[binding(Protocol::Tcp, "0.0.0.0", 8080, 8080, 80)], v4("172.20.0.3"), v4("fd00:9::3"))
            .unwrap();
        resolve(
            &table,
            "e2",
            &[binding(Protocol::Tcp, "127.0.0.1", 8080, 8080, 80)],
            v4("172.20.0.3"),
            v4("fd00:9::3"),
        )
        .unwrap();
        for host in ["::", "2001:db8::1", ""] {
            let err = resolve(
                &table,
                "e2",
                &[binding(Protocol::Tcp, host, 8080, 8080, 80)],
                v4("172.20.0.3"),
                v4("fd00:9::3"),
            )
            .unwrap_err();
            assert!(err.to_string().contains("already published for endpoint e1"), "{host}: {err}");
        }
        // A v4-only container asking for "" only needs IPv4.
        resolve(&table, "e3", &[binding(Protocol::Tcp, "", 8080, 8080, 80)], v4("172.20.0.4"), None).unwrap();
    }

    #[test]
    fn a_port_of_another_endpoint_is_refused_saying_who_and_what_to_do() {
        let mut table = PortTable::default();
        table.insert("e1", resolve(&table, "e1", &[binding(Protocol::Tcp, "", 8080, 8081, 80)], v4(C1), None).unwrap());
        table.insert("e2", resolve(&table, "e2", &[binding(Protocol::Tcp, "", 8080, 8081, 80)], v4(C1), None).unwrap());
        let err = resolve(&table, "e3", &[binding(Protocol::Tcp, "", 8080, 8080, 80)], v4(C1), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot publish port 80/tcp on 0.0.0.0:8080: it is already published for endpoint e1 \
             (Bind for 0.0.0.0:8080 failed: port is already allocated); choose another host port \
             (-p HOST_PORT:80) or leave it out (-p 80) to get a free one, or remove the container of endpoint e1"
        );
        let err = resolve(&table, "e3", &[binding(Protocol::Tcp, "", 8080, 8081, 80)], v4(C1), v4(C6)).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "cannot publish port 80/tcp on 0.0.0.0:8080-8081 and [::]:8080-8081: no port in the range is free \
                 (0.0.0.0:8080: it is already published for endpoint e1); choose another host port"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_port_a_process_holds_is_refused_naming_the_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = PortTable::default()
            .resolve(
                "e1",
                &[binding(Protocol::Tcp, "127.0.0.1", port, port, 80)],
                v4(C1),
                None,
                None,
                &host_port_is_free,
            )
            .unwrap_err()
            .to_string();
        let pid = std::process::id();
        assert!(err.starts_with(&format!("cannot publish port 80/tcp on 127.0.0.1:{port}: process ")), "{err}");
        assert!(
            err.contains(&format!(
                "(pid {pid}) on the host is listening on it (Bind for 127.0.0.1:{port} failed: address already in use); \
                 stop that process, or choose another host port (-p HOST_PORT:80)"
            )),
            "{err}"
        );
    }
}
