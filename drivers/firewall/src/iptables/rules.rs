//! The iptables rules of the skeleton, of a network and of a published port, as argument lists
//! (pure functions; golden-tested below), and parsing of `iptables -S` lines back.
//!
//! ```text
//! raw PREROUTING           ! -i lo -d 127.0.0.0/8 (ip6tables: ::1/128) -j DROP  (inserted first)
//! raw PREROUTING           [VXLAN guard] -p udp --dport P dst-type LOCAL -j LOOM-VXLAN
//! raw LOOM-VXLAN           [VXLAN guard] -s <peer> -j RETURN …, -j DROP
//! mangle FORWARD           [VXLAN guard] -p udp --dport P -j DROP            (inserted first)
//! filter FORWARD           -j LOOM-FORWARD                                      (inserted first)
//! filter LOOM-FORWARD      -j LOOM-ISOLATION-1                                  (first)
//!                          per network: replies, DNATed, egress, icc, [open] accepts
//! filter LOOM-ISOLATION-1  per network: internal drops; isolated: new non-DNAT out → STAGE-2,
//!                          new non-DNAT in → DROP
//! filter LOOM-ISOLATION-2  -o docker0 / -o br-+ / -o <every netloom bridge> → DROP
//! nat PREROUTING, OUTPUT   -m addrtype --dst-type LOCAL -j LOOM-DNAT            (inserted first;
//!                          PREROUTING also ! -d 127.0.0.0/8: 127.0.0.1 ports are the host's own)
//! nat POSTROUTING          -j LOOM-POSTROUTING                                  (inserted first)
//! nat LOOM-DNAT            one DNAT per published port (host-address ones first)
//! nat LOOM-POSTROUTING     per network: masquerade/SNAT out, hairpin and localhost masquerade
//! ```

use std::net::IpAddr;

use crate::model::{Nat, NetworkPolicy, PortMapping, Proto, LOOPBACK_V4};
use crate::tag;

pub(crate) const FORWARD: &str = "LOOM-FORWARD";
pub(crate) const ISOLATION_1: &str = "LOOM-ISOLATION-1";
pub(crate) const ISOLATION_2: &str = "LOOM-ISOLATION-2";
pub(crate) const DNAT: &str = "LOOM-DNAT";
pub(crate) const POSTROUTING: &str = "LOOM-POSTROUTING";

/// netloom's own chains, by table, in creation order.
pub(crate) const CHAINS: &[(&str, &str)] =
    &[("filter", FORWARD), ("filter", ISOLATION_1), ("filter", ISOLATION_2), ("nat", DNAT), ("nat", POSTROUTING)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    Append,
    /// `-I chain 1`.
    First,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IptRule {
    pub table: &'static str,
    pub chain: &'static str,
    pub position: Position,
    pub spec: Vec<String>,
}

impl IptRule {
    fn new(table: &'static str, chain: &'static str, position: Position, spec: &[&str], comment: &str) -> Self {
        let mut args: Vec<String> = Vec::with_capacity(spec.len() + 4);
        // Matches first, then the comment, then the target: the order `iptables -S` prints.
        let target_at = spec.iter().position(|a| *a == "-j").unwrap_or(spec.len());
        args.extend(spec[..target_at].iter().map(|s| s.to_string()));
        args.extend(["-m", "comment", "--comment", comment].map(String::from));
        args.extend(spec[target_at..].iter().map(|s| s.to_string()));
        Self { table, chain, position, spec: args }
    }

    /// The rule specification as one string (the `iptables` crate splits it on spaces).
    pub fn spec_string(&self) -> String {
        self.spec.join(" ")
    }

    /// How `iptables -t <table>` would be told to add it; for logs and tests.
    pub fn render(&self) -> String {
        let op = match self.position {
            Position::Append => "-A".to_string(),
            Position::First => "-I".to_string(),
        };
        let pos = if self.position == Position::First { " 1" } else { "" };
        format!("-t {} {op} {}{pos} {}", self.table, self.chain, self.spec_string())
    }
}

/// The loopback guard, jumps from the built-in chains and the base isolation rules for Docker's
/// bridges, for one family (`v6`: ip6tables).
pub(crate) fn skeleton(v6: bool) -> Vec<IptRule> {
    let c = tag::IPT_BASE;
    let mut rules = vec![loopback_guard(v6)];
    rules.extend([
        IptRule::new("filter", "FORWARD", Position::First, &["-j", FORWARD], c),
        IptRule::new("filter", FORWARD, Position::First, &["-j", ISOLATION_1], c),
        IptRule::new("filter", ISOLATION_2, Position::Append, &["-o", "docker0", "-j", "DROP"], c),
        IptRule::new("filter", ISOLATION_2, Position::Append, &["-o", "br-+", "-j", "DROP"], c),
    ]);
    // A port published on 127.0.0.1 is for the host itself (OUTPUT), never for a packet that
    // arrived from outside (the loopback guard drops those already; this is the second line).
    let local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT];
    let prerouting: Vec<&str> = if v6 { local.to_vec() } else { [&["!", "-d", LOOPBACK_V4][..], &local].concat() };
    rules.push(IptRule::new("nat", "PREROUTING", Position::First, &prerouting, c));
    rules.push(IptRule::new("nat", "OUTPUT", Position::First, &local, c));
    rules.push(IptRule::new("nat", "POSTROUTING", Position::First, &["-j", POSTROUTING], c));
    rules
}

pub(crate) const LOOPBACK_V6: &str = "::1/128";

/// Packets to the loopback addresses that did not come in on `lo` are dropped before conntrack
/// and DNAT see them: with `route_localnet` on a bridge, the kernel would otherwise route them to
/// the host's services bound to 127.0.0.1 (CVE-2020-8558).
pub(crate) fn loopback_guard(v6: bool) -> IptRule {
    let dst = if v6 { LOOPBACK_V6 } else { LOOPBACK_V4 };
    IptRule::new("raw", "PREROUTING", Position::First, &["!", "-i", "lo", "-d", dst, "-j", "DROP"], tag::IPT_BASE)
}

/// raw table: the VXLAN guard's peers (see [`vxlan_rules`]).
pub(crate) const VXLAN: &str = "LOOM-VXLAN";

/// The VXLAN guard's rules for `port` and the `peers` of one family: a jump from raw PREROUTING
/// for UDP `port` to a local address (the port is matched first, so other traffic pays one
/// compare), one RETURN per peer and a final DROP in `LOOM-VXLAN`, and a DROP of forwarded UDP
/// `port` at the top of mangle FORWARD (not filter FORWARD: dockerd inserts ACCEPTs at the top
/// of that one for every bridge network it creates later, e.g. docker_gwbridge).
pub(crate) struct VxlanRules {
    pub jump: IptRule,
    pub peers: Vec<IptRule>,
    pub drop: IptRule,
    pub forward: IptRule,
}

pub(crate) fn vxlan_rules(port: u16, peers: &[IpAddr]) -> VxlanRules {
    let c = tag::IPT_VXLAN;
    let p = port.to_string();
    let udp = ["-p", "udp", "-m", "udp", "--dport", p.as_str()];
    VxlanRules {
        jump: IptRule::new(
            "raw",
            "PREROUTING",
            Position::First,
            &[&udp[..], &["-m", "addrtype", "--dst-type", "LOCAL", "-j", VXLAN]].concat(),
            c,
        ),
        peers: peers
            .iter()
            .map(|ip| IptRule::new("raw", VXLAN, Position::First, &["-s", &host_prefix(*ip), "-j", "RETURN"], c))
            .collect(),
        drop: IptRule::new("raw", VXLAN, Position::Append, &["-j", "DROP"], c),
        forward: IptRule::new("mangle", "FORWARD", Position::First, &[&udp[..], &["-j", "DROP"]].concat(), c),
    }
}

/// The peer of a listed `LOOM-VXLAN` RETURN rule.
pub(crate) fn parse_vxlan_peer(spec: &str) -> Option<IpAddr> {
    let w = words(spec);
    if !w.windows(2).any(|p| p[0] == "-j" && p[1] == "RETURN") {
        return None;
    }
    let s = w.iter().position(|a| a == "-s").and_then(|i| w.get(i + 1))?;
    s.split('/').next()?.parse().ok()
}

const NOT_REPLY_NOR_DNAT: [&str; 5] = ["-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT"];

/// The rules of one network for one family (`v6` selects ip6tables). Order within a network
/// does not matter: rules that overlap have the same verdict.
pub(crate) fn network_rules(net: &NetworkPolicy, v6: bool) -> Vec<IptRule> {
    let comment = tag::ipt_network_comment(&net.network_id);
    let c = comment.as_str();
    let b = net.bridge.as_str();
    let mut rules = Vec::new();
    let mut filter = |chain, spec: &[&str]| rules.push(IptRule::new("filter", chain, Position::Append, spec, c));

    // Every netloom bridge is a destination isolated networks may not open connections to.
    filter(ISOLATION_2, &["-o", b, "-j", "DROP"]);
    if net.internal {
        filter(ISOLATION_1, &["-i", b, "!", "-o", b, "-j", "DROP"]);
        filter(ISOLATION_1, &["!", "-i", b, "-o", b, "-j", "DROP"]);
    } else if net.isolate {
        filter(ISOLATION_1, &[&["-i", b, "!", "-o", b][..], &NOT_REPLY_NOR_DNAT, &["-j", ISOLATION_2]].concat());
        filter(ISOLATION_1, &[&["!", "-i", b, "-o", b][..], &NOT_REPLY_NOR_DNAT, &["-j", "DROP"]].concat());
    }
    if net.icc {
        filter(FORWARD, &["-i", b, "-o", b, "-j", "ACCEPT"]);
    } else {
        // Replies and published ports (hairpin) stay allowed; this keeps every rule of a network
        // order-independent (overlapping rules have the same verdict).
        filter(FORWARD, &[&["-i", b, "-o", b][..], &NOT_REPLY_NOR_DNAT, &["-j", "DROP"]].concat());
    }
    if !net.internal {
        filter(FORWARD, &["-o", b, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]);
        filter(FORWARD, &["-o", b, "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]);
        filter(FORWARD, &["-i", b, "!", "-o", b, "-j", "ACCEPT"]);
        if !net.isolate {
            filter(FORWARD, &["!", "-i", b, "-o", b, "-j", "ACCEPT"]);
        }
    }

    let mut nat = |spec: &[&str]| rules.push(IptRule::new("nat", POSTROUTING, Position::Append, spec, c));
    for rule in net.nat_rules().into_iter().filter(|n| n.is_ipv6() == v6) {
        match rule {
            Nat::Egress { subnet, to: Some(ip) } => {
                nat(&["-s", &subnet.to_string(), "!", "-o", b, "-j", "SNAT", "--to-source", &ip.to_string()])
            }
            Nat::Egress { subnet, to: None } => nat(&["-s", &subnet.to_string(), "!", "-o", b, "-j", "MASQUERADE"]),
            Nat::Hairpin { subnet } => {
                nat(&["-s", &subnet.to_string(), "-o", b, "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"])
            }
            Nat::Localhost => nat(&["-s", LOOPBACK_V4, "-o", b, "-j", "MASQUERADE"]),
        }
    }
    rules
}

fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}/32"),
        IpAddr::V6(ip) => format!("{ip}/128"),
    }
}

fn destination(m: &PortMapping) -> String {
    match m.container_ip {
        IpAddr::V4(ip) => format!("{ip}:{}", m.container_port),
        IpAddr::V6(ip) => format!("[{ip}]:{}", m.container_port),
    }
}

/// The DNAT rule of one published port (in iptables or ip6tables by the container's family).
pub(crate) fn port_rule(network_id: &str, endpoint_id: &str, m: &PortMapping) -> IptRule {
    let comment = tag::ipt_port_comment(network_id, endpoint_id);
    let proto = m.proto.name();
    let port = m.host_port.to_string();
    let dest = destination(m);
    let mut spec: Vec<String> = Vec::new();
    if let Some(ip) = m.host_ip {
        spec.extend(["-d".to_string(), host_prefix(ip)]);
    }
    spec.extend(
        ["-p", proto, "-m", proto, "--dport", &port, "-j", "DNAT", "--to-destination", &dest].map(String::from),
    );
    let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
    // Mappings on one host address go before the ones on every address.
    let position = if m.host_ip.is_some() { Position::First } else { Position::Append };
    IptRule::new("nat", DNAT, position, &spec, &comment)
}

/// One line of `iptables -S`: `-A CHAIN spec…`, with the comment when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedRule {
    pub chain: String,
    /// The specification as printed, without `-A CHAIN`.
    pub spec: String,
    pub comment: Option<String>,
}

/// Splits an `iptables -S` line into words, honouring double quotes (iptables quotes comments
/// that contain spaces).
pub(crate) fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub(crate) fn parse_listed(line: &str) -> Option<ListedRule> {
    let rest = line.strip_prefix("-A ")?;
    let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
    let w = words(spec);
    let comment = w.iter().position(|a| a == "--comment").and_then(|i| w.get(i + 1)).cloned();
    Some(ListedRule { chain: chain.to_string(), spec: spec.to_string(), comment })
}

/// A published port read back from a `LOOM-DNAT` rule.
pub(crate) fn parse_port_rule(spec: &str) -> Option<PortMapping> {
    let w = words(spec);
    let value = |flag: &str| w.iter().position(|a| a == flag).and_then(|i| w.get(i + 1)).map(String::as_str);
    let host_ip = match value("-d") {
        Some(d) => Some(d.split('/').next()?.parse::<IpAddr>().ok()?),
        None => None,
    };
    let proto: Proto = value("-p")?.parse().ok()?;
    let host_port: u16 = value("--dport")?.parse().ok()?;
    let dest = value("--to-destination")?;
    let (ip, port) = dest.rsplit_once(':')?;
    let container_ip: IpAddr = ip.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let container_port: u16 = port.parse().ok()?;
    Some(PortMapping { proto, host_ip, host_port, container_ip, container_port })
}

/// Options as (negated, flag, values), sorted.
pub(crate) type Normalized = Vec<(bool, String, Vec<String>)>;

/// A rule specification in a form that does not depend on the order of its options, to tell
/// whether a listed rule is one we want: each option with its negation and values, sorted.
/// (`iptables -S` prints the address and interface options first, whatever order they were
/// given in; values are printed as given for everything netloom uses.)
pub(crate) fn normalized(spec: &str) -> Normalized {
    let mut groups: Vec<(bool, String, Vec<String>)> = Vec::new();
    let mut negate = false;
    for w in words(spec) {
        if w == "!" {
            negate = true;
        } else if w.starts_with('-') && w.len() > 1 {
            groups.push((negate, w, Vec::new()));
            negate = false;
        } else if let Some(last) = groups.last_mut() {
            last.2.push(w);
        }
    }
    groups.sort();
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{network as net, port_v4, port_v6_on_address};

    fn render(rules: &[IptRule]) -> Vec<String> {
        rules.iter().map(IptRule::render).collect()
    }

    #[test]
    fn skeleton_golden() {
        assert_eq!(
            render(&skeleton(false)),
            [
                "-t raw -I PREROUTING 1 ! -i lo -d 127.0.0.0/8 -m comment --comment netloom:base -j DROP",
                "-t filter -I FORWARD 1 -m comment --comment netloom:base -j LOOM-FORWARD",
                "-t filter -I LOOM-FORWARD 1 -m comment --comment netloom:base -j LOOM-ISOLATION-1",
                "-t filter -A LOOM-ISOLATION-2 -o docker0 -m comment --comment netloom:base -j DROP",
                "-t filter -A LOOM-ISOLATION-2 -o br-+ -m comment --comment netloom:base -j DROP",
                "-t nat -I PREROUTING 1 ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m comment --comment netloom:base -j LOOM-DNAT",
                "-t nat -I OUTPUT 1 -m addrtype --dst-type LOCAL -m comment --comment netloom:base -j LOOM-DNAT",
                "-t nat -I POSTROUTING 1 -m comment --comment netloom:base -j LOOM-POSTROUTING",
            ]
        );
        let v6 = render(&skeleton(true));
        assert_eq!(v6[0], "-t raw -I PREROUTING 1 ! -i lo -d ::1/128 -m comment --comment netloom:base -j DROP");
        assert_eq!(
            v6[5],
            "-t nat -I PREROUTING 1 -m addrtype --dst-type LOCAL -m comment --comment netloom:base -j LOOM-DNAT"
        );
    }

    #[test]
    fn vxlan_guard_golden_and_parse_back() {
        let r = vxlan_rules(4789, &["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()]);
        let c = "-m comment --comment netloom:vxlan";
        assert_eq!(
            r.jump.render(),
            format!("-t raw -I PREROUTING 1 -p udp -m udp --dport 4789 -m addrtype --dst-type LOCAL {c} -j LOOM-VXLAN")
        );
        assert_eq!(
            render(&r.peers),
            [
                format!("-t raw -I LOOM-VXLAN 1 -s 192.0.2.1/32 {c} -j RETURN"),
                format!("-t raw -I LOOM-VXLAN 1 -s 2001:db8::1/128 {c} -j RETURN")
            ]
        );
        assert_eq!(r.drop.render(), format!("-t raw -A LOOM-VXLAN {c} -j DROP"));
        assert_eq!(r.forward.render(), format!("-t mangle -I FORWARD 1 -p udp -m udp --dport 4789 {c} -j DROP"));
        // As `iptables -S` prints them back.
        assert_eq!(
            parse_vxlan_peer("-s 192.0.2.1/32 -m comment --comment netloom:vxlan -j RETURN"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(parse_vxlan_peer("-m comment --comment netloom:vxlan -j DROP"), None);
    }

    #[test]
    fn isolated_network_golden() {
        let c = "-m comment --comment netloom:net=0123456789abcdef";
        assert_eq!(
            render(&network_rules(&net(false, true, true), false)),
            [
                format!("-t filter -A LOOM-ISOLATION-2 -o br-loom1 {c} -j DROP"),
                format!("-t filter -A LOOM-ISOLATION-1 -i br-loom1 ! -o br-loom1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT {c} -j LOOM-ISOLATION-2"),
                format!("-t filter -A LOOM-ISOLATION-1 ! -i br-loom1 -o br-loom1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT {c} -j DROP"),
                format!("-t filter -A LOOM-FORWARD -i br-loom1 -o br-loom1 {c} -j ACCEPT"),
                format!("-t filter -A LOOM-FORWARD -o br-loom1 -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT"),
                format!("-t filter -A LOOM-FORWARD -o br-loom1 -m conntrack --ctstate DNAT {c} -j ACCEPT"),
                format!("-t filter -A LOOM-FORWARD -i br-loom1 ! -o br-loom1 {c} -j ACCEPT"),
                format!("-t nat -A LOOM-POSTROUTING -s 198.51.100.0/24 ! -o br-loom1 {c} -j MASQUERADE"),
                format!("-t nat -A LOOM-POSTROUTING -s 198.51.100.0/24 -o br-loom1 -m conntrack --ctstate DNAT {c} -j MASQUERADE"),
                format!("-t nat -A LOOM-POSTROUTING -s 127.0.0.0/8 -o br-loom1 {c} -j MASQUERADE"),
            ]
        );
    }

    #[test]
    fn open_network_without_icc_v6_golden() {
        let c = "-m comment --comment netloom:net=0123456789abcdef";
        let mut n = net(false, false, false);
        n.snat_source = Some("2001:db8:ffff::1".parse().unwrap());
        assert_eq!(
            render(&network_rules(&n, true)),
            [
                format!("-t filter -A LOOM-ISOLATION-2 -o br-loom1 {c} -j DROP"),
                format!("-t filter -A LOOM-FORWARD -i br-loom1 -o br-loom1 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT {c} -j DROP"),
                format!("-t filter -A LOOM-FORWARD -o br-loom1 -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT"),
                format!("-t filter -A LOOM-FORWARD -o br-loom1 -m conntrack --ctstate DNAT {c} -j ACCEPT"),
                format!("-t filter -A LOOM-FORWARD -i br-loom1 ! -o br-loom1 {c} -j ACCEPT"),
                format!("-t filter -A LOOM-FORWARD ! -i br-loom1 -o br-loom1 {c} -j ACCEPT"),
                format!("-t nat -A LOOM-POSTROUTING -s 2001:db8:1::/64 ! -o br-loom1 {c} -j SNAT --to-source 2001:db8:ffff::1"),
                format!("-t nat -A LOOM-POSTROUTING -s 2001:db8:1::/64 -o br-loom1 -m conntrack --ctstate DNAT {c} -j MASQUERADE"),
            ]
        );
    }

    #[test]
    fn internal_network_golden() {
        let c = "-m comment --comment netloom:net=0123456789abcdef";
        assert_eq!(
            render(&network_rules(&net(true, true, true), false)),
            [
                format!("-t filter -A LOOM-ISOLATION-2 -o br-loom1 {c} -j DROP"),
                format!("-t filter -A LOOM-ISOLATION-1 -i br-loom1 ! -o br-loom1 {c} -j DROP"),
                format!("-t filter -A LOOM-ISOLATION-1 ! -i br-loom1 -o br-loom1 {c} -j DROP"),
                format!("-t filter -A LOOM-FORWARD -i br-loom1 -o br-loom1 {c} -j ACCEPT"),
            ]
        );
    }

    #[test]
    fn no_masquerade_keeps_hairpin() {
        let mut n = net(false, true, true);
        n.masquerade = false;
        let r = render(&network_rules(&n, false));
        assert!(!r.iter().any(|r| r.contains("! -o br-loom1") && r.contains("MASQUERADE")));
        assert!(r.iter().any(|r| r.contains("--ctstate DNAT") && r.contains("MASQUERADE")));
    }

    #[test]
    fn port_rules_golden_and_parse_back() {
        let m = port_v4();
        let r = port_rule("0123456789abcdef", "fedcba9876543210", &m);
        assert_eq!(
            r.render(),
            "-t nat -A LOOM-DNAT -p tcp -m tcp --dport 8080 -m comment --comment netloom:net=0123456789abcdef,ep=fedcba987654 -j DNAT --to-destination 198.51.100.2:80"
        );
        assert_eq!(parse_port_rule(&r.spec_string()), Some(m));

        let m6 = port_v6_on_address();
        let r = port_rule("n", "e", &m6);
        assert_eq!(r.position, Position::First);
        assert!(r.render().starts_with("-t nat -I LOOM-DNAT 1 -d 2001:db8::1/128 -p sctp -m sctp --dport 9 "));
        assert!(r.render().ends_with("-j DNAT --to-destination [2001:db8:1::2]:9999"));
        assert_eq!(parse_port_rule(&r.spec_string()), Some(m6));
    }

    #[test]
    fn normalization_ignores_option_order_but_not_negation() {
        // As rendered, and as `iptables -S` prints it back (interfaces first).
        let ours = "-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT ! -i br0 -o br0 -m comment --comment netloom:net=x -j DROP";
        let listed = "! -i br0 -o br0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment netloom:net=x -j DROP";
        assert_eq!(normalized(ours), normalized(listed));
        let other = "-i br0 ! -o br0 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment netloom:net=x -j DROP";
        assert_ne!(normalized(listed), normalized(other));
        let quoted = "-m comment --comment \"netloom:net=x\" -j DROP";
        assert_eq!(normalized(quoted), normalized("-m comment --comment netloom:net=x -j DROP"));
    }

    #[test]
    fn listed_lines_parse() {
        let line = "-A LOOM-DNAT -d 192.0.2.1/32 -p sctp -m sctp --dport 9 -m comment --comment \"netloom:net=a,ep=b\" -j DNAT --to-destination 198.51.100.3:9";
        let l = parse_listed(line).unwrap();
        assert_eq!(l.chain, "LOOM-DNAT");
        assert_eq!(l.comment.as_deref(), Some("netloom:net=a,ep=b"));
        let m = parse_port_rule(&l.spec).unwrap();
        assert_eq!(m.proto, Proto::Sctp);
        assert_eq!(m.host_ip, Some("192.0.2.1".parse().unwrap()));
        assert!(parse_listed("-P FORWARD DROP").is_none());
        assert_eq!(parse_listed("-A FORWARD -j DOCKER-USER").unwrap().comment, None);
    }
}
