//! Routing beyond one route per link: the host's directly connected routes (what a new network
//! must not overlap), routes in a table of their own, and the rules that make an interface's
//! incoming traffic use only that table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{IpVersion, RouteMessageBuilder};

use crate::{is_errno, Link, Netlink};

/// A route of the main table that reaches its destination directly through an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedRoute {
    pub destination: IpNetwork,
    pub ifindex: u32,
}

/// An `iif <interface> lookup <table> [suppress_prefixlength 0]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IifRule {
    pub interface: String,
    pub table: u32,
    pub ipv6: bool,
    /// Ignore the table's default routes: a lookup that only meets one of them goes on to the
    /// next rules instead of ending there.
    pub skip_default: bool,
}

impl Netlink {
    /// The main table's routes without a gateway (the subnets of the host's interfaces, host
    /// routes to containers, …), IPv4 and IPv6; default, link-local and multicast routes left out.
    pub async fn connected_routes(&self) -> Result<Vec<ConnectedRoute>> {
        let mut routes = Vec::new();
        for message in [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()]
        {
            let dump: Vec<RouteMessage> = self
                .handle()
                .route()
                .get(message)
                .execute()
                .try_collect()
                .await
                .context("listing the host's routes")?;
            routes.extend(dump.iter().filter_map(connected_route_of));
        }
        Ok(routes)
    }

    /// Why `ours` cannot be used on this host: a message naming the interface that already has
    /// a connected route overlapping one of them, or `None`. The interface whose alias is
    /// `own_alias` (the network's own, left from an earlier attempt) does not count.
    pub async fn route_overlap(&self, ours: &[IpNetwork], own_alias: Option<&str>) -> Result<Option<String>> {
        for route in self.connected_routes().await? {
            let Some(mine) = ours.iter().find(|s| overlaps(s, &route.destination)) else { continue };
            let link = self.link_by_index(route.ifindex).await.ok().flatten();
            if own_alias.is_some() && link.as_ref().is_some_and(|l| l.alias.as_deref() == own_alias) {
                continue;
            }
            let (name, interface) = match link {
                Some(l) => (l.name.clone(), describe_interface(&l.name, l.alias.as_deref())),
                None => (format!("#{}", route.ifindex), format!("interface #{}", route.ifindex)),
            };
            return Ok(Some(format!(
                "subnet {mine} overlaps {} already routed on this host through {interface}; one subnet serves one \
                 network per host: remove what uses {name} or choose another --subnet",
                route.destination
            )));
        }
        Ok(None)
    }

    /// Routes `destination` out of `link` in routing table `table`.
    pub async fn ensure_link_route_in(&self, table: u32, destination: IpNetwork, link: &Link) -> Result<()> {
        let message = link_route(table, destination, link.index)?;
        match self.handle().route().add(message).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, Errno::EEXIST) => Ok(()),
            Err(e) => {
                Err(anyhow!(e)).with_context(|| format!("routing {destination} to {} in table {table}", link.name))
            }
        }
    }

    pub async fn delete_link_route_in(&self, table: u32, destination: IpNetwork, link: &Link) -> Result<()> {
        let message = link_route(table, destination, link.index)?;
        match self.handle().route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, Errno::ESRCH) => Ok(()),
            Err(e) => Err(anyhow!(e))
                .with_context(|| format!("removing route {destination} from {} in table {table}", link.name)),
        }
    }

    /// Ends table `table` with an `unreachable default` route of both families, so that a lookup
    /// there never falls through to the tables after it.
    pub async fn ensure_unreachable_default(&self, table: u32) -> Result<()> {
        let defaults = [
            RouteMessageBuilder::<IpAddr>::new().destination_prefix(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            RouteMessageBuilder::<IpAddr>::new().destination_prefix(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        ];
        for builder in defaults {
            let message = builder
                .map_err(|e| anyhow!("default route: {e}"))?
                .table_id(table)
                .kind(RouteType::Unreachable)
                .scope(RouteScope::Universe)
                .build();
            match self.handle().route().add(message).replace().execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, Errno::EEXIST) => {}
                Err(e) => {
                    return Err(anyhow!(e))
                        .with_context(|| format!("adding an unreachable default route to table {table}"))
                }
            }
        }
        Ok(())
    }

    /// Removes every route of table `table` (both families).
    pub async fn flush_table(&self, table: u32) -> Result<()> {
        for message in [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()]
        {
            let dump: Vec<RouteMessage> =
                self.handle().route().get(message).execute().try_collect().await.context("listing routes")?;
            for route in dump.into_iter().filter(|r| table_of(r) == table) {
                match self.handle().route().del(route).execute().await {
                    Ok(()) => {}
                    Err(e) if is_errno(&e, Errno::ESRCH) => {}
                    Err(e) => return Err(anyhow!(e)).with_context(|| format!("flushing routing table {table}")),
                }
            }
        }
        Ok(())
    }

    /// Adds `iif <rule.interface> lookup <rule.table> [suppress_prefixlength 0]` at `priority` (before the main table's
    /// 32766); safe to repeat.
    pub async fn ensure_iif_rule(&self, rule: &IifRule, priority: u32) -> Result<()> {
        let add =
            self.handle().rule().add().input_interface(rule.interface.clone()).table_id(rule.table).priority(priority);
        let result = if rule.ipv6 {
            let mut add = add.v6().action(RuleAction::ToTable);
            if rule.skip_default {
                add.message_mut().attributes.push(RuleAttribute::SuppressPrefixLen(0));
            }
            add.execute().await
        } else {
            let mut add = add.v4().action(RuleAction::ToTable);
            if rule.skip_default {
                add.message_mut().attributes.push(RuleAttribute::SuppressPrefixLen(0));
            }
            add.execute().await
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, Errno::EEXIST) => Ok(()),
            Err(e) => {
                Err(anyhow!(e)).with_context(|| format!("adding rule iif {} lookup {}", rule.interface, rule.table))
            }
        }
    }

    /// Every `iif … lookup <table>` rule whose table `tables` accepts.
    pub async fn iif_rules(&self, tables: impl Fn(u32) -> bool) -> Result<Vec<IifRule>> {
        let mut rules = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let dump: Vec<RuleMessage> =
                self.handle().rule().get(version).execute().try_collect().await.context("listing routing rules")?;
            rules.extend(dump.iter().filter_map(iif_rule_of).filter(|r| tables(r.table)));
        }
        Ok(rules)
    }

    /// Removes every `iif <rule.interface> lookup <rule.table>` rule of that family.
    pub async fn delete_iif_rule(&self, rule: &IifRule) -> Result<()> {
        let version = if rule.ipv6 { IpVersion::V6 } else { IpVersion::V4 };
        let dump: Vec<RuleMessage> =
            self.handle().rule().get(version).execute().try_collect().await.context("listing routing rules")?;
        for message in dump.into_iter().filter(|m| iif_rule_of(m).as_ref() == Some(rule)) {
            match self.handle().rule().del(message).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, Errno::ENOENT) || is_errno(&e, Errno::ESRCH) => {}
                Err(e) => {
                    return Err(anyhow!(e))
                        .with_context(|| format!("removing rule iif {} lookup {}", rule.interface, rule.table))
                }
            }
        }
        Ok(())
    }
}

fn link_route(table: u32, destination: IpNetwork, index: u32) -> Result<RouteMessage> {
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination.ip(), destination.prefix())
        .map_err(|e| anyhow!("route to {destination}: {e}"))?
        .output_interface(index)
        .table_id(table)
        .scope(RouteScope::Link)
        .build())
}

fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// A dumped route as a [`ConnectedRoute`], if it is one.
pub fn connected_route_of(route: &RouteMessage) -> Option<ConnectedRoute> {
    if table_of(route) != u32::from(RouteHeader::RT_TABLE_MAIN) || route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut destination = None;
    let mut ifindex = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Gateway(_) | RouteAttribute::Via(_) | RouteAttribute::MultiPath(_) => return None,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(IpAddr::V4(*ip)),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) => destination = Some(IpAddr::V6(*ip)),
            RouteAttribute::Oif(index) => ifindex = Some(*index),
            _ => {}
        }
    }
    let destination = IpNetwork::new(destination?, route.header.destination_prefix_length).ok()?;
    let ignored = match destination {
        IpNetwork::V4(n) => n.prefix() == 0 || n.ip().is_link_local() || n.ip().is_multicast(),
        IpNetwork::V6(n) => n.prefix() == 0 || (n.ip().segments()[0] & 0xffc0) == 0xfe80 || n.ip().is_multicast(),
    };
    (!ignored).then_some(ConnectedRoute { destination, ifindex: ifindex? })
}

fn iif_rule_of(message: &RuleMessage) -> Option<IifRule> {
    if message.header.action != RuleAction::ToTable {
        return None;
    }
    let mut interface = None;
    let mut table = u32::from(message.header.table);
    let mut skip_default = false;
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Iifname(name) => interface = Some(name.clone()),
            RuleAttribute::Table(t) => table = *t,
            // The kernel reports -1 (u32::MAX) when the rule suppresses nothing.
            RuleAttribute::SuppressPrefixLen(0) => skip_default = true,
            _ => {}
        }
    }
    Some(IifRule { interface: interface?, table, ipv6: message.header.family == AddressFamily::Inet6, skip_default })
}

/// An interface as a user knows it: its name, and the network it belongs to when its name or
/// owner tag (alias) tells.
pub fn describe_interface(name: &str, alias: Option<&str>) -> String {
    let short = |id: &str| id.chars().take(12).collect::<String>();
    let owner = alias.and_then(|a| a.strip_prefix("netloom:")).and_then(|rest| rest.split_once(':'));
    match owner {
        Some((driver, ids)) => {
            let network = ids.split(':').next().unwrap_or_default();
            format!("interface {name} (loom-{driver} network {})", short(network))
        }
        None if name == "docker0" => "interface docker0 (Docker's default bridge network)".into(),
        None => match name.strip_prefix("br-") {
            Some(id) if id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
                format!("interface {name} (Docker bridge network {id})")
            }
            _ => format!("interface {name}"),
        },
    }
}

/// True when two networks share an address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V4(a), IpNetwork::V4(b)) => a.contains(b.network()) || b.contains(a.network()),
        (IpNetwork::V6(a), IpNetwork::V6(b)) => a.contains(b.network()) || b.contains(a.network()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNetwork {
        text.parse().unwrap()
    }

    #[test]
    fn interfaces_are_described_with_their_network() {
        assert_eq!(
            describe_interface("loome904e172e07", Some("netloom:bridge:e904e172e07e0123456789")),
            "interface loome904e172e07 (loom-bridge network e904e172e07e)"
        );
        assert_eq!(
            describe_interface("lh0123", Some("netloom:host:abcdef:0123")),
            "interface lh0123 (loom-host network abcdef)"
        );
        assert_eq!(describe_interface("docker0", None), "interface docker0 (Docker's default bridge network)");
        assert_eq!(
            describe_interface("br-0123456789ab", None),
            "interface br-0123456789ab (Docker bridge network 0123456789ab)"
        );
        assert_eq!(describe_interface("eth0", Some("uplink")), "interface eth0");
        assert_eq!(describe_interface("br-lan", None), "interface br-lan");
        assert_eq!(describe_interface("é", Some("netloom:é")), "interface é");
    }

    #[test]
    fn overlap_of_networks() {
        assert!(overlaps(&net("10.1.0.0/16"), &net("10.1.2.0/24")));
        assert!(overlaps(&net("10.1.2.0/24"), &net("10.1.0.0/16")));
        assert!(overlaps(&net("10.1.2.0/24"), &net("10.1.2.77/32")));
        assert!(overlaps(&net("10.1.2.5/24"), &net("10.1.2.0/24")), "host bits do not matter");
        assert!(!overlaps(&net("10.1.2.0/24"), &net("10.1.3.0/24")));
        assert!(overlaps(&net("fd00:1::/64"), &net("fd00:1::5/128")));
        assert!(!overlaps(&net("fd00:1::/64"), &net("fd00:2::/64")));
        assert!(!overlaps(&net("10.0.0.0/8"), &net("::/0")), "families never overlap");
    }

    fn route(dest: &str, gateway: Option<&str>, oif: u32) -> RouteMessage {
        let dest = net(dest);
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.ip(), dest.prefix())
            .unwrap()
            .output_interface(oif);
        if let Some(g) = gateway {
            builder = builder.gateway(g.parse().unwrap()).unwrap();
        }
        let mut message = builder.build();
        message.header.kind = RouteType::Unicast;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message
    }

    #[test]
    fn connected_routes_are_recognised() {
        assert_eq!(
            connected_route_of(&route("172.17.0.0/16", None, 4)),
            Some(ConnectedRoute { destination: net("172.17.0.0/16"), ifindex: 4 })
        );
        assert_eq!(connected_route_of(&route("fd00:9::/64", None, 5)).map(|r| r.ifindex), Some(5));
        for skipped in [
            route("10.0.0.0/8", Some("192.0.2.1"), 2),
            route("0.0.0.0/0", None, 2),
            route("169.254.0.0/16", None, 2),
            route("fe80::/64", None, 2),
            route("ff00::/8", None, 2),
        ] {
            assert_eq!(connected_route_of(&skipped), None, "{skipped:?}");
        }
        let mut other_table = route("10.9.0.0/24", None, 3);
        other_table.header.table = 200;
        assert_eq!(connected_route_of(&other_table), None);
    }
}
