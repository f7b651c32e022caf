//! The `inet netloom` table: names, sets and maps, the rules of the skeleton and of a network in a
//! small intermediate form (rendered in `nft` syntax for logs and golden tests, compiled to
//! netlink expressions in [`super::expr`]), and the byte layout of map keys and data.
//!
//! ```text
//! table inet netloom {
//!   set bridges     { type ifname }                          # every netloom bridge
//!   map fwd_in      { type ifname : verdict }                # bridge → jump net-<tag>-fwd-in
//!   map fwd_out     { type ifname : verdict }                # bridge → jump net-<tag>-fwd-out
//!   map nat_in      { type ifname : verdict }                # bridge → jump net-<tag>-nat-in
//!   map nat_out     { type ifname : verdict }                # bridge → jump net-<tag>-nat-out
//!   map ports4      { type inet_proto . inet_service : ipv4_addr . inet_service }
//!   map ports4_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!   map ports6      { type inet_proto . inet_service : ipv6_addr . inet_service }
//!   map ports6_addr { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service }
//!
//!   chain forward     { type filter hook forward priority filter; policy accept;
//!     iifname vmap @fwd_out                       # source network's egress policy (drop or return)
//!     oifname vmap @fwd_in                        # destination network's ingress policy (final)
//!     iifname @bridges <mark-accept> }            # egress to non-netloom interfaces
//!   chain prerouting  { type nat hook prerouting priority dstnat;  fib daddr type local jump ports }
//!   chain output      { type nat hook output priority dstnat;      fib daddr type local jump ports }
//!   chain ports       { dnat through ports4_addr, ports4, ports6_addr, ports6 (host address first) }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     iifname vmap @nat_out; oifname vmap @nat_in }
//!   chain loopback    { type filter hook prerouting priority raw;      # before conntrack and DNAT
//!     iifname != "lo" ip daddr 127.0.0.0/8 drop; iifname != "lo" ip6 daddr ::1 drop }
//!   chain net-<tag>-{fwd-in,fwd-out,nat-in,nat-out}   # one network's policy, comment = network id
//!
//!   # the VXLAN guard, while loom-overlay has networks (port P):
//!   set vxlan_peers4 { type ipv4_addr }; set vxlan_peers6 { type ipv6_addr }   # member VTEPs
//!   chain vxlan-in    { type filter hook prerouting priority raw;
//!     udp dport P fib daddr type local ip saddr != @vxlan_peers4 drop
//!     udp dport P fib daddr type local ip6 saddr != @vxlan_peers6 drop }
//!   chain vxlan-fwd   { type filter hook forward priority -5; udp dport P drop }
//! }
//!
//! The prerouting chain returns early for `ip daddr 127.0.0.0/8`: a port published on 127.0.0.1
//! is DNATed only in output (the host's own traffic).
//! ```
//!
//! `<mark-accept>` is `meta mark set meta mark | FORWARD_MARK accept` (see the crate doc).

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::model::{loopback_v4, Nat, NetworkPolicy, PortMapping, Proto};
use crate::tag::owner_tag;

pub(crate) const TABLE: &str = "netloom";

pub(crate) const SET_BRIDGES: &str = "bridges";
pub(crate) const MAP_FWD_IN: &str = "fwd_in";
pub(crate) const MAP_FWD_OUT: &str = "fwd_out";
pub(crate) const MAP_NAT_IN: &str = "nat_in";
pub(crate) const MAP_NAT_OUT: &str = "nat_out";
pub(crate) const VMAPS: [&str; 4] = [MAP_FWD_IN, MAP_FWD_OUT, MAP_NAT_IN, MAP_NAT_OUT];

pub(crate) const CHAIN_FORWARD: &str = "forward";
pub(crate) const CHAIN_PREROUTING: &str = "prerouting";
pub(crate) const CHAIN_OUTPUT: &str = "output";
pub(crate) const CHAIN_POSTROUTING: &str = "postrouting";
pub(crate) const CHAIN_PORTS: &str = "ports";
pub(crate) const CHAIN_LOOPBACK: &str = "loopback";
pub(crate) const CHAIN_VXLAN_IN: &str = "vxlan-in";
pub(crate) const CHAIN_VXLAN_FWD: &str = "vxlan-fwd";
pub(crate) const SET_VXLAN4: &str = "vxlan_peers4";
pub(crate) const SET_VXLAN6: &str = "vxlan_peers6";
/// nftables' `raw` priority: before conntrack (-200) and DNAT (-100).
const PRIORITY_RAW: i32 = -300;

/// nftables datatype ids (nftables' `enum datatypes`), for sets `nft` can print.
mod dtype {
    pub const IPV4_ADDR: u32 = 7;
    pub const IPV6_ADDR: u32 = 8;
    pub const INET_PROTO: u32 = 12;
    pub const INET_SERVICE: u32 = 13;
    pub const IFNAME: u32 = 41;
    /// A concatenation's type: the members' ids, 6 bits each.
    pub const fn concat(types: &[u32]) -> u32 {
        let mut t = 0;
        let mut i = 0;
        while i < types.len() {
            t = (t << 6) | types[i];
            i += 1;
        }
        t
    }
}

pub(crate) const IFNAMSIZ: usize = 16;
pub(crate) const IFNAME_TYPE: u32 = dtype::IFNAME;

/// What a map maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetData {
    None,
    Verdict,
    /// Value bytes with this nftables datatype id.
    Value {
        dtype: u32,
        len: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetSpec {
    pub name: &'static str,
    pub key_type: u32,
    pub key_len: u32,
    pub data: SetData,
}

/// Which published-port map a mapping lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortMap {
    pub name: &'static str,
    pub v6: bool,
    pub by_addr: bool,
}

pub(crate) const PORT_MAPS: [PortMap; 4] = [
    PortMap { name: "ports4_addr", v6: false, by_addr: true },
    PortMap { name: "ports4", v6: false, by_addr: false },
    PortMap { name: "ports6_addr", v6: true, by_addr: true },
    PortMap { name: "ports6", v6: true, by_addr: false },
];

impl PortMap {
    pub fn of(m: &PortMapping) -> PortMap {
        let i = match (m.is_ipv6(), m.host_ip.is_some()) {
            (false, true) => 0,
            (false, false) => 1,
            (true, true) => 2,
            (true, false) => 3,
        };
        PORT_MAPS[i]
    }

    fn addr_len(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }

    pub fn key_len(&self) -> usize {
        8 + if self.by_addr { self.addr_len() } else { 0 }
    }

    pub fn data_len(&self) -> usize {
        self.addr_len() + 4
    }

    pub fn spec(&self) -> SetSpec {
        let addr = if self.v6 { dtype::IPV6_ADDR } else { dtype::IPV4_ADDR };
        let key_type = if self.by_addr {
            dtype::concat(&[addr, dtype::INET_PROTO, dtype::INET_SERVICE])
        } else {
            dtype::concat(&[dtype::INET_PROTO, dtype::INET_SERVICE])
        };
        SetSpec {
            name: self.name,
            key_type,
            key_len: self.key_len() as u32,
            data: SetData::Value { dtype: dtype::concat(&[addr, dtype::INET_SERVICE]), len: self.data_len() as u32 },
        }
    }
}

/// Every set and map of the table.
pub(crate) fn sets() -> Vec<SetSpec> {
    let ifname = |name, data| SetSpec { name, key_type: dtype::IFNAME, key_len: IFNAMSIZ as u32, data };
    let mut out = vec![ifname(SET_BRIDGES, SetData::None)];
    out.extend(VMAPS.iter().map(|m| ifname(m, SetData::Verdict)));
    out.extend(PORT_MAPS.iter().map(PortMap::spec));
    out
}

/// The VXLAN guard's peer sets.
pub(crate) fn vxlan_sets() -> [SetSpec; 2] {
    [
        SetSpec { name: SET_VXLAN4, key_type: dtype::IPV4_ADDR, key_len: 4, data: SetData::None },
        SetSpec { name: SET_VXLAN6, key_type: dtype::IPV6_ADDR, key_len: 16, data: SetData::None },
    ]
}

/// The peer set of an address, and the address as its key.
pub(crate) fn vxlan_elem(ip: IpAddr) -> (&'static str, Vec<u8>) {
    (if ip.is_ipv6() { SET_VXLAN6 } else { SET_VXLAN4 }, ip_bytes(ip))
}

/// The address a peer-set key holds.
pub(crate) fn vxlan_peer_from_key(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(key).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(key).ok()?)),
        _ => None,
    }
}

/// The VXLAN guard's chains for `port`: the UDP port is compared first, so other traffic pays
/// for one compare.
pub(crate) fn vxlan_chains(port: u16) -> Vec<BaseChain> {
    use nftnl::Hook;
    let unknown_sender = |v6: bool| {
        let set = if v6 { SET_VXLAN6 } else { SET_VXLAN4 };
        rule(vec![Cond::UdpDport(port), Cond::FibDaddrLocal, Cond::SaddrNotIn { set, v6 }], Action::Drop)
    };
    vec![
        BaseChain {
            name: CHAIN_VXLAN_IN,
            hook: Some((Hook::PreRouting, PRIORITY_RAW, false)),
            rules: vec![unknown_sender(false), unknown_sender(true)],
        },
        BaseChain {
            name: CHAIN_VXLAN_FWD,
            hook: Some((Hook::Forward, -5, false)),
            rules: vec![rule(vec![Cond::UdpDport(port)], Action::Drop)],
        },
    ]
}

/// An interface name as a key: NUL-padded to IFNAMSIZ.
pub(crate) fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = name.as_bytes().to_vec();
    k.resize(IFNAMSIZ, 0);
    k
}

pub(crate) fn ifname_from_key(key: &[u8]) -> String {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

/// Key and data of a published port, each member padded to 32-bit registers.
pub(crate) fn port_elem(m: &PortMapping) -> (Vec<u8>, Vec<u8>) {
    let mut key = Vec::new();
    if let Some(ip) = m.host_ip {
        key.extend(ip_bytes(ip));
    }
    key.extend([m.proto.number(), 0, 0, 0]);
    key.extend(m.host_port.to_be_bytes());
    key.extend([0, 0]);
    let mut data = ip_bytes(m.container_ip);
    data.extend(m.container_port.to_be_bytes());
    data.extend([0, 0]);
    (key, data)
}

/// The mapping a port-map element encodes.
pub(crate) fn port_from_elem(map: &PortMap, key: &[u8], data: &[u8]) -> Option<PortMapping> {
    if key.len() != map.key_len() || data.len() != map.data_len() {
        return None;
    }
    let alen = map.addr_len();
    let ip = |b: &[u8]| -> IpAddr {
        if map.v6 {
            IpAddr::from(<[u8; 16]>::try_from(b).expect("16 bytes"))
        } else {
            IpAddr::from(<[u8; 4]>::try_from(b).expect("4 bytes"))
        }
    };
    let (host_ip, rest) = if map.by_addr { (Some(ip(&key[..alen])), &key[alen..]) } else { (None, key) };
    Some(PortMapping {
        proto: Proto::from_number(rest[0])?,
        host_ip,
        host_port: u16::from_be_bytes([rest[4], rest[5]]),
        container_ip: ip(&data[..alen]),
        container_port: u16::from_be_bytes([data[alen], data[alen + 1]]),
    })
}

/// An element as `nft` prints it, for logs and tests.
pub(crate) fn render_port_elem(m: &PortMapping) -> String {
    let host = m.host_ip.map(|ip| format!("{ip} . ")).unwrap_or_default();
    format!("{host}{} . {} : {} . {}", m.proto, m.host_port, m.container_ip, m.container_port)
}

/// The chains of one network, named by its tag.
pub(crate) struct NetChains {
    pub fwd_in: String,
    pub fwd_out: String,
    pub nat_in: String,
    pub nat_out: String,
}

impl NetChains {
    pub fn of(network_id: &str) -> Self {
        Self::of_tag(&owner_tag(network_id))
    }

    pub fn of_tag(tag: &str) -> Self {
        Self {
            fwd_in: format!("net-{tag}-fwd-in"),
            fwd_out: format!("net-{tag}-fwd-out"),
            nat_in: format!("net-{tag}-nat-in"),
            nat_out: format!("net-{tag}-nat-out"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.fwd_in, &self.fwd_out, &self.nat_in, &self.nat_out]
    }

    /// (map, chain) pairs: the verdict-map elements that lead to these chains.
    pub fn vmap_targets(&self) -> [(&'static str, &str); 4] {
        [
            (MAP_FWD_IN, &self.fwd_in),
            (MAP_FWD_OUT, &self.fwd_out),
            (MAP_NAT_IN, &self.nat_in),
            (MAP_NAT_OUT, &self.nat_out),
        ]
    }
}

/// The tag in a network chain's name.
pub(crate) fn tag_of_chain(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("net-")?;
    let (tag, kind) = rest.split_once('-')?;
    matches!(kind, "fwd-in" | "fwd-out" | "nat-in" | "nat-out").then_some(tag)
}

/// A match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cond {
    Iif(String),
    Oif(String),
    OifNot(String),
    /// `oifname "<prefix>*"`.
    OifPrefix(&'static str),
    IifIn(&'static str),
    OifIn(&'static str),
    /// `ct state established,related`.
    CtReply,
    /// `ct status dnat`.
    CtDnat,
    Saddr(IpNetwork),
    Daddr(IpNetwork),
    IifNot(String),
    /// `udp dport <port>` (with its `meta l4proto udp` dependency).
    UdpDport(u16),
    /// `ip saddr != @set` / `ip6 saddr != @set`.
    SaddrNotIn {
        set: &'static str,
        v6: bool,
    },
    FibDaddrLocal,
}

/// A verdict or statement ending a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Accept, and set [`crate::compat::FORWARD_MARK`] for iptables' FORWARD.
    MarkAccept,
    Drop,
    Return,
    Jump(&'static str),
    IifVmap(&'static str),
    OifVmap(&'static str),
    Masquerade,
    Snat(IpAddr),
    Dnat(PortMap),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NftRule {
    pub conds: Vec<Cond>,
    pub action: Action,
}

fn rule(conds: Vec<Cond>, action: Action) -> NftRule {
    NftRule { conds, action }
}

/// Base chain of the skeleton.
pub(crate) struct BaseChain {
    pub name: &'static str,
    /// (hook, priority, nat type?) for base chains; `None` for a regular chain.
    pub hook: Option<(nftnl::Hook, i32, bool)>,
    pub rules: Vec<NftRule>,
}

pub(crate) fn skeleton() -> Vec<BaseChain> {
    use nftnl::Hook;
    let ports = rule(vec![Cond::FibDaddrLocal], Action::Jump(CHAIN_PORTS));
    let loopback4 = loopback_v4();
    let loopback6: IpNetwork = "::1/128".parse().expect("loopback address");
    vec![
        BaseChain {
            name: CHAIN_FORWARD,
            hook: Some((Hook::Forward, 0, false)),
            rules: vec![
                rule(vec![], Action::IifVmap(MAP_FWD_OUT)),
                rule(vec![], Action::OifVmap(MAP_FWD_IN)),
                rule(vec![Cond::IifIn(SET_BRIDGES)], Action::MarkAccept),
            ],
        },
        BaseChain {
            name: CHAIN_PORTS,
            hook: None,
            rules: PORT_MAPS.iter().map(|m| rule(vec![], Action::Dnat(*m))).collect(),
        },
        BaseChain {
            name: CHAIN_PREROUTING,
            hook: Some((Hook::PreRouting, -100, true)),
            rules: vec![rule(vec![Cond::Daddr(loopback4)], Action::Return), ports.clone()],
        },
        BaseChain { name: CHAIN_OUTPUT, hook: Some((Hook::Out, -100, true)), rules: vec![ports] },
        BaseChain {
            name: CHAIN_POSTROUTING,
            hook: Some((Hook::PostRouting, 100, true)),
            rules: vec![rule(vec![], Action::IifVmap(MAP_NAT_OUT)), rule(vec![], Action::OifVmap(MAP_NAT_IN))],
        },
        BaseChain {
            name: CHAIN_LOOPBACK,
            hook: Some((Hook::PreRouting, PRIORITY_RAW, false)),
            rules: vec![
                rule(vec![Cond::IifNot("lo".into()), Cond::Daddr(loopback4)], Action::Drop),
                rule(vec![Cond::IifNot("lo".into()), Cond::Daddr(loopback6)], Action::Drop),
            ],
        },
    ]
}

/// The rules of each chain of a network: (fwd_in, fwd_out, nat_in, nat_out).
pub(crate) struct NetRules {
    /// Packets going into the bridge (oif = bridge): final verdict for netloom destinations.
    pub fwd_in: Vec<NftRule>,
    /// Packets coming out of the bridge (iif = bridge): drop or fall through.
    pub fwd_out: Vec<NftRule>,
    /// NAT of packets going into the bridge: hairpin and localhost masquerade.
    pub nat_in: Vec<NftRule>,
    /// NAT of packets coming out of the bridge: masquerade/SNAT.
    pub nat_out: Vec<NftRule>,
}

pub(crate) fn network_rules(net: &NetworkPolicy) -> NetRules {
    let b = net.bridge.clone();
    let icc = rule(vec![Cond::Iif(b.clone())], if net.icc { Action::MarkAccept } else { Action::Drop });
    let mut fwd_in = Vec::new();
    let mut fwd_out = vec![rule(vec![Cond::Oif(b.clone())], Action::Return)];
    let mut nat_in = Vec::new();
    let mut nat_out = Vec::new();
    if net.internal {
        fwd_in.push(icc);
        fwd_in.push(rule(vec![], Action::Drop));
        fwd_out.push(rule(vec![], Action::Drop));
    } else {
        // Replies and published ports first: hairpin traffic (iif = oif = bridge, DNATed) passes
        // even without icc.
        fwd_in.push(rule(vec![Cond::CtReply], Action::MarkAccept));
        fwd_in.push(rule(vec![Cond::CtDnat], Action::MarkAccept));
        fwd_in.push(icc);
        fwd_in.push(rule(vec![], if net.isolate { Action::Drop } else { Action::MarkAccept }));
        if net.isolate {
            fwd_out.push(rule(vec![Cond::CtReply], Action::Return));
            fwd_out.push(rule(vec![Cond::CtDnat], Action::Return));
            fwd_out.push(rule(vec![Cond::OifIn(SET_BRIDGES)], Action::Drop));
            fwd_out.push(rule(vec![Cond::Oif("docker0".into())], Action::Drop));
            fwd_out.push(rule(vec![Cond::OifPrefix("br-")], Action::Drop));
        }
    }
    for nat in net.nat_rules() {
        match nat {
            Nat::Egress { subnet, to } => {
                let action = to.map_or(Action::Masquerade, Action::Snat);
                nat_out.push(rule(vec![Cond::OifNot(b.clone()), Cond::Saddr(subnet)], action));
            }
            Nat::Hairpin { subnet } => nat_in.push(rule(vec![Cond::CtDnat, Cond::Saddr(subnet)], Action::Masquerade)),
            Nat::Localhost => nat_in.push(rule(vec![Cond::Saddr(loopback_v4())], Action::Masquerade)),
        }
    }
    NetRules { fwd_in, fwd_out, nat_in, nat_out }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cond::Iif(n) => write!(f, "iifname \"{n}\""),
            Cond::Oif(n) => write!(f, "oifname \"{n}\""),
            Cond::OifNot(n) => write!(f, "oifname != \"{n}\""),
            Cond::OifPrefix(p) => write!(f, "oifname \"{p}*\""),
            Cond::IifIn(s) => write!(f, "iifname @{s}"),
            Cond::OifIn(s) => write!(f, "oifname @{s}"),
            Cond::CtReply => f.write_str("ct state established,related"),
            Cond::CtDnat => f.write_str("ct status dnat"),
            Cond::Saddr(IpNetwork::V4(n)) => write!(f, "ip saddr {n}"),
            Cond::Saddr(IpNetwork::V6(n)) => write!(f, "ip6 saddr {n}"),
            Cond::Daddr(IpNetwork::V4(n)) => write!(f, "ip daddr {n}"),
            Cond::Daddr(IpNetwork::V6(n)) if n.prefix() == 128 => write!(f, "ip6 daddr {}", n.ip()),
            Cond::Daddr(IpNetwork::V6(n)) => write!(f, "ip6 daddr {n}"),
            Cond::IifNot(n) => write!(f, "iifname != \"{n}\""),
            Cond::UdpDport(p) => write!(f, "udp dport {p}"),
            Cond::SaddrNotIn { set, v6 } => write!(f, "{} saddr != @{set}", if *v6 { "ip6" } else { "ip" }),
            Cond::FibDaddrLocal => f.write_str("fib daddr type local"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::MarkAccept => write!(f, "meta mark set meta mark | {:#x} accept", crate::compat::FORWARD_MARK),
            Action::Drop => f.write_str("drop"),
            Action::Return => f.write_str("return"),
            Action::Jump(c) => write!(f, "jump {c}"),
            Action::IifVmap(m) => write!(f, "iifname vmap @{m}"),
            Action::OifVmap(m) => write!(f, "oifname vmap @{m}"),
            Action::Masquerade => f.write_str("masquerade"),
            Action::Snat(IpAddr::V4(ip)) => write!(f, "snat ip to {ip}"),
            Action::Snat(IpAddr::V6(ip)) => write!(f, "snat ip6 to {ip}"),
            Action::Dnat(m) => {
                let (fam, daddr) = if m.v6 { ("ip6", "ip6 daddr . ") } else { ("ip", "ip daddr . ") };
                let key = if m.by_addr { daddr } else { "" };
                write!(
                    f,
                    "meta nfproto {} dnat {fam} to {key}meta l4proto . th dport map @{}",
                    if m.v6 { "ipv6" } else { "ipv4" },
                    m.name
                )
            }
        }
    }
}

impl fmt::Display for NftRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.conds {
            write!(f, "{c} ")?;
        }
        write!(f, "{}", self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{network as net, port_v4, port_v6_on_address};

    fn render(rules: &[NftRule]) -> Vec<String> {
        rules.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn isolated_network_golden() {
        let r = network_rules(&NetworkPolicy {
            snat_source: Some("192.0.2.10".parse().unwrap()),
            ..net(false, true, true)
        });
        let acc = "meta mark set meta mark | 0x10000000 accept";
        assert_eq!(
            render(&r.fwd_in),
            [
                format!("ct state established,related {acc}"),
                format!("ct status dnat {acc}"),
                format!("iifname \"br-loom1\" {acc}"),
                "drop".to_string(),
            ]
        );
        assert_eq!(
            render(&r.fwd_out),
            [
                "oifname \"br-loom1\" return",
                "ct state established,related return",
                "ct status dnat return",
                "oifname @bridges drop",
                "oifname \"docker0\" drop",
                "oifname \"br-*\" drop",
            ]
        );
        assert_eq!(
            render(&r.nat_out),
            [
                "oifname != \"br-loom1\" ip saddr 198.51.100.0/24 snat ip to 192.0.2.10",
                "oifname != \"br-loom1\" ip6 saddr 2001:db8:1::/64 masquerade",
            ]
        );
        assert_eq!(
            render(&r.nat_in),
            [
                "ct status dnat ip saddr 198.51.100.0/24 masquerade",
                "ct status dnat ip6 saddr 2001:db8:1::/64 masquerade",
                "ip saddr 127.0.0.0/8 masquerade",
            ]
        );
    }

    #[test]
    fn open_network_without_icc_golden() {
        let r = network_rules(&net(false, false, false));
        assert_eq!(r.fwd_in[2].to_string(), "iifname \"br-loom1\" drop");
        assert_eq!(r.fwd_in.last().unwrap().action, Action::MarkAccept);
        assert_eq!(render(&r.fwd_out), ["oifname \"br-loom1\" return"]);
    }

    #[test]
    fn internal_network_golden() {
        let r = network_rules(&net(true, true, true));
        let acc = "meta mark set meta mark | 0x10000000 accept";
        assert_eq!(render(&r.fwd_in), [format!("iifname \"br-loom1\" {acc}"), "drop".to_string()]);
        assert_eq!(render(&r.fwd_out), ["oifname \"br-loom1\" return", "drop"]);
        assert!(r.nat_in.is_empty() && r.nat_out.is_empty());
    }

    #[test]
    fn skeleton_golden() {
        let chains: Vec<(String, Vec<String>)> =
            skeleton().into_iter().map(|c| (c.name.to_string(), render(&c.rules))).collect();
        assert_eq!(
            chains[0].1,
            [
                "iifname vmap @fwd_out",
                "oifname vmap @fwd_in",
                "iifname @bridges meta mark set meta mark | 0x10000000 accept"
            ]
        );
        assert_eq!(
            chains[1].1,
            [
                "meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports4_addr",
                "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4",
                "meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports6_addr",
                "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6",
            ]
        );
        assert_eq!(chains[2].1, ["ip daddr 127.0.0.0/8 return", "fib daddr type local jump ports"]);
        assert_eq!(chains[3].1, ["fib daddr type local jump ports"]);
        let loopback = skeleton().into_iter().find(|c| c.name == CHAIN_LOOPBACK).unwrap();
        assert_eq!(loopback.hook.map(|(_, prio, nat)| (prio, nat)), Some((-300, false)));
        assert_eq!(
            render(&loopback.rules),
            ["iifname != \"lo\" ip daddr 127.0.0.0/8 drop", "iifname != \"lo\" ip6 daddr ::1 drop"]
        );
    }

    #[test]
    fn vxlan_guard_golden() {
        let chains = vxlan_chains(4789);
        assert_eq!(chains[0].name, "vxlan-in");
        assert_eq!(chains[0].hook.map(|(_, prio, nat)| (prio, nat)), Some((-300, false)));
        assert_eq!(
            render(&chains[0].rules),
            [
                "udp dport 4789 fib daddr type local ip saddr != @vxlan_peers4 drop",
                "udp dport 4789 fib daddr type local ip6 saddr != @vxlan_peers6 drop",
            ]
        );
        assert_eq!(render(&chains[1].rules), ["udp dport 4789 drop"]);
        let (set, key) = vxlan_elem("2001:db8::1".parse().unwrap());
        assert_eq!((set, key.len()), ("vxlan_peers6", 16));
        assert_eq!(vxlan_peer_from_key(&key), Some("2001:db8::1".parse().unwrap()));
        let (set, key) = vxlan_elem("192.0.2.1".parse().unwrap());
        assert_eq!((set, key), ("vxlan_peers4", vec![192, 0, 2, 1]));
    }

    #[test]
    fn port_elements_encode_and_decode() {
        let m = port_v4();
        let (k, d) = port_elem(&m);
        assert_eq!(k, [6, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(d, [198, 51, 100, 2, 0, 80, 0, 0]);
        let map = PortMap::of(&m);
        assert_eq!(map.name, "ports4");
        assert_eq!(port_from_elem(&map, &k, &d), Some(m));
        assert_eq!(render_port_elem(&m), "tcp . 8080 : 198.51.100.2 . 80");

        let m6 = port_v6_on_address();
        let (k, d) = port_elem(&m6);
        let map = PortMap::of(&m6);
        assert_eq!(map.name, "ports6_addr");
        assert_eq!((k.len(), d.len()), (24, 20));
        assert_eq!(&k[16..], [132, 0, 0, 0, 0, 9, 0, 0]);
        assert_eq!(port_from_elem(&map, &k, &d), Some(m6));
        assert_eq!(port_from_elem(&PORT_MAPS[1], &k, &d), None);
    }

    #[test]
    fn set_types_are_nft_concatenations() {
        let s = sets();
        let ports4 = s.iter().find(|s| s.name == "ports4").unwrap();
        assert_eq!(ports4.key_type, (12 << 6) | 13);
        assert_eq!(ports4.data, SetData::Value { dtype: (7 << 6) | 13, len: 8 });
        let p6a = s.iter().find(|s| s.name == "ports6_addr").unwrap();
        assert_eq!(p6a.key_type, (((8 << 6) | 12) << 6) | 13);
        assert_eq!(p6a.key_len, 24);
        assert_eq!(ifname_from_key(&ifname_key("br0")), "br0");
    }

    #[test]
    fn chain_names_carry_the_tag() {
        let c = NetChains::of("0123456789abcdef");
        assert_eq!(c.fwd_in, "net-0123456789ab-fwd-in");
        assert_eq!(tag_of_chain(&c.nat_out), Some("0123456789ab"));
        assert_eq!(tag_of_chain("forward"), None);
        assert_eq!(tag_of_chain("net-x-other"), None);
    }
}
