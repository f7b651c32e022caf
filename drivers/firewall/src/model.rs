//! The request types shared by both backends, and their validation.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;

use crate::error::FirewallError;

/// Which backend [`crate::open`] builds; parses from and prints as `iptables` / `nftables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Iptables,
    Nftables,
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iptables" => Ok(BackendKind::Iptables),
            "nftables" | "nft" => Ok(BackendKind::Nftables),
            other => Err(format!("unknown firewall backend {other:?} (expected iptables or nftables)")),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Iptables => "iptables",
            BackendKind::Nftables => "nftables",
        })
    }
}

impl BackendKind {
    /// The backend a switch away from this one leaves behind.
    pub fn other(self) -> BackendKind {
        match self {
            BackendKind::Iptables => BackendKind::Nftables,
            BackendKind::Nftables => BackendKind::Iptables,
        }
    }
}

/// The owner id [`crate::sweep_other_backend`] asks about for the VXLAN guard, which carries no
/// network id: loom-overlay's, named like the ids drivers give their own policies
/// (`<driver>.<name>`).
pub const VXLAN_GUARD_OWNER: &str = "loom-overlay.vxlan-guard";

/// What [`crate::sweep_other_backend`] found in the backend not in use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Owners whose rules were removed.
    pub removed: Vec<String>,
    /// Owners whose rules stay: another netloom driver's, still in use.
    pub kept: Vec<String>,
    /// The shared skeleton (loopback guard, netloom's chains, the `inet netloom` table) went too,
    /// since no owner was left in that backend.
    pub skeleton: bool,
}

/// What a driver's `--firewall` flag says: `auto` (the default: nftables where the kernel has
/// it, see [`BackendKind::detect`]), `iptables` or `nftables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    #[default]
    Auto,
    Fixed(BackendKind),
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            other => other
                .parse::<BackendKind>()
                .map(BackendChoice::Fixed)
                .map_err(|_| format!("unknown firewall backend {other:?} (expected auto, iptables or nftables)")),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendChoice::Auto => f.write_str("auto"),
            BackendChoice::Fixed(kind) => kind.fmt(f),
        }
    }
}

/// The firewall policy of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Full Docker network id; the backends derive a short owner tag from it ([`crate::owner_tag`]).
    pub network_id: String,
    /// The Linux bridge (or other interface) of the network.
    pub bridge: String,
    /// IPv4 and/or IPv6 subnets of the network.
    pub subnets: Vec<IpNetwork>,
    /// Masquerade traffic from the subnets leaving through another interface.
    pub masquerade: bool,
    /// SNAT to this address instead of MASQUERADE (for subnets of its family).
    pub snat_source: Option<IpAddr>,
    /// Inter-container communication on the bridge.
    pub icc: bool,
    /// Nothing in or out of the bridge except among its own ports.
    pub internal: bool,
    /// No forwarding between this and other netloom or Docker networks, except published ports
    /// (DNATed) and replies.
    pub isolate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Proto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            other => Err(format!("unknown protocol {other:?}")),
        }
    }
}

/// One published port: `host_ip:host_port/proto` → `container_ip:container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortMapping {
    pub proto: Proto,
    /// `None` publishes on every local address of the container address's family.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
}

impl PortMapping {
    pub fn is_ipv6(&self) -> bool {
        self.container_ip.is_ipv6()
    }

    /// `[host_ip]:host_port/proto`, for messages.
    pub fn host_side(&self) -> String {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => format!("[{ip}]:{}/{}", self.host_port, self.proto),
            Some(IpAddr::V4(ip)) => format!("{ip}:{}/{}", self.host_port, self.proto),
            None => format!("*:{}/{}", self.host_port, self.proto),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), FirewallError> {
        if self.host_port == 0 || self.container_port == 0 {
            return Err(FirewallError::Invalid(format!("port 0 in mapping {self}")));
        }
        if let Some(host_ip) = self.host_ip {
            if host_ip.is_ipv4() != self.container_ip.is_ipv4() {
                return Err(FirewallError::Invalid(format!(
                    "mapping {self} mixes an {} host address with an {} container address",
                    family_name(&host_ip),
                    family_name(&self.container_ip)
                )));
            }
            if host_ip.is_unspecified() {
                return Err(FirewallError::Invalid(format!(
                    "mapping {self}: publish on all addresses with host_ip None, not {host_ip}"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let container = match self.container_ip {
            IpAddr::V6(ip) => format!("[{ip}]:{}", self.container_port),
            IpAddr::V4(ip) => format!("{ip}:{}", self.container_port),
        };
        write!(f, "{} -> {container}", self.host_side())
    }
}

/// One NAT rule of a network (see [`NetworkPolicy::nat_rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nat {
    /// Traffic from `subnet` leaving through another interface: masqueraded, or SNATed to `to`.
    Egress { subnet: IpNetwork, to: Option<IpAddr> },
    /// Traffic from `subnet` DNATed back into the bridge is masqueraded, so a container can use
    /// its own network's published ports through a host address.
    Hairpin { subnet: IpNetwork },
    /// The host's 127.0.0.0/8 reaching a published port (needs `route_localnet` on the bridge;
    /// IPv6 has no equivalent).
    Localhost,
}

impl Nat {
    pub(crate) fn is_ipv6(&self) -> bool {
        match self {
            Nat::Egress { subnet, .. } | Nat::Hairpin { subnet } => subnet.is_ipv6(),
            Nat::Localhost => false,
        }
    }
}

/// The host's IPv4 loopback network.
pub(crate) const LOOPBACK_V4: &str = "127.0.0.0/8";

pub(crate) fn loopback_v4() -> IpNetwork {
    LOOPBACK_V4.parse().expect("loopback network")
}

/// Interface names go verbatim into iptables arguments and nftables keys: 1–15 bytes, no `/`,
/// whitespace, quotes or the `+` wildcard.
pub(crate) fn check_ifname(name: &str) -> Result<(), FirewallError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(FirewallError::Invalid(format!("unusable interface name {name:?}")))
    }
}

/// Ids go into comments: printable, no whitespace or quotes.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), FirewallError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(FirewallError::Invalid(format!("unusable {what} id {id:?}")))
    }
}

/// A request to publish `ports` of one endpoint of `net`.
pub(crate) fn check_ports(net: &NetworkPolicy, endpoint_id: &str, ports: &[PortMapping]) -> Result<(), FirewallError> {
    net.validate()?;
    check_id("endpoint", endpoint_id)?;
    ports.iter().try_for_each(PortMapping::validate)
}

pub(crate) fn check_vxlan_port(port: u16) -> Result<(), FirewallError> {
    if port == 0 {
        return Err(FirewallError::Invalid("VXLAN port 0".into()));
    }
    Ok(())
}

impl NetworkPolicy {
    pub(crate) fn validate(&self) -> Result<(), FirewallError> {
        check_id("network", &self.network_id)?;
        check_ifname(&self.bridge)?;
        Ok(())
    }

    /// The subnets in canonical form (host bits cleared).
    pub(crate) fn canonical_subnets(&self) -> Vec<IpNetwork> {
        self.subnets
            .iter()
            .map(|s| IpNetwork::new(s.network(), s.prefix()).expect("prefix of a valid network"))
            .collect()
    }

    /// The network's NAT, whichever backend renders it: per subnet its egress (with
    /// `masquerade`) and hairpin, then localhost; nothing for an internal network.
    pub(crate) fn nat_rules(&self) -> Vec<Nat> {
        if self.internal {
            return Vec::new();
        }
        let mut rules = Vec::new();
        for subnet in self.canonical_subnets() {
            if self.masquerade {
                let to = self.snat_source.filter(|ip| ip.is_ipv6() == subnet.is_ipv6());
                rules.push(Nat::Egress { subnet, to });
            }
            rules.push(Nat::Hairpin { subnet });
        }
        rules.push(Nat::Localhost);
        rules
    }

    pub(crate) fn has_v4(&self) -> bool {
        self.subnets.iter().any(|s| s.is_ipv4())
    }

    pub(crate) fn has_v6(&self) -> bool {
        self.subnets.iter().any(|s| s.is_ipv6())
    }
}

/// The address family of `ip` as iptables/nftables name it, for messages.
pub(crate) fn family_name(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kind_round_trips() {
        for kind in [BackendKind::Iptables, BackendKind::Nftables] {
            assert_eq!(kind.to_string().parse::<BackendKind>().unwrap(), kind);
        }
        assert!("ipfw".parse::<BackendKind>().is_err());
        assert_eq!("auto".parse::<BackendChoice>().unwrap(), BackendChoice::Auto);
        assert_eq!("nftables".parse::<BackendChoice>().unwrap(), BackendChoice::Fixed(BackendKind::Nftables));
        assert_eq!(BackendChoice::default().to_string(), "auto");
        assert!("none".parse::<BackendChoice>().unwrap_err().contains("auto, iptables or nftables"));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("br-0123456789ab").is_ok());
        assert!(check_ifname("docker0").is_ok());
        assert!(check_ifname("br-0123456789abc").is_err()); // 16 bytes
        assert!(check_ifname("br+").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("").is_err());
    }

    #[test]
    fn mappings_are_checked() {
        let m = PortMapping {
            proto: Proto::Tcp,
            host_ip: Some("192.0.2.1".parse().unwrap()),
            host_port: 8080,
            container_ip: "2001:db8::2".parse().unwrap(),
            container_port: 80,
        };
        assert!(m.validate().is_err());
        let m = PortMapping { container_ip: "198.51.100.2".parse().unwrap(), ..m };
        assert!(m.validate().is_ok());
        assert_eq!(m.to_string(), "192.0.2.1:8080/tcp -> 198.51.100.2:80");
        assert!(PortMapping { host_port: 0, ..m }.validate().is_err());
    }
}
