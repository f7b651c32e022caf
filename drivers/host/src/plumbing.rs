//! The kernel side of a host-routed endpoint: a veth pair whose host end answers for the
//! containers' link-local gateway and proxies ARP, and a host route per container address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, Result};
use ipnetwork::IpNetwork;
use netloom_dataplane::{sysctl, IifRule, Link, Netlink, VethSpec};
use netloom_driver_kit::Endpoint;

use crate::state::{EndpointRecord, NetworkRecord};

/// Every container's IPv4 gateway: a link-local address on every host-side veth end.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// Every container's IPv6 gateway, likewise.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The host's forwarding switches for a network's families.
pub fn enable_forwarding(net: &NetworkRecord) -> Result<()> {
    if !net.pools_v4.is_empty() {
        sysctl::ensure("net.ipv4.ip_forward", "1")?;
    }
    if !net.pools_v6.is_empty() {
        sysctl::ensure("net.ipv6.conf.all.forwarding", "1")?;
    }
    Ok(())
}

/// Creates (or completes) the endpoint's veth pair and its host end's settings; safe to repeat.
pub async fn ensure_endpoint(netlink: &Netlink, net: &NetworkRecord, ep: &EndpointRecord) -> Result<Link> {
    let owner = ep.owner();
    let spec = VethSpec { host_name: &ep.host_veth, peer_name: &ep.peer_veth, mtu: net.options.mtu, owner: &owner };
    // At a restart the peer is usually inside its container: only the host end is checked.
    let host = netlink.ensure_veth_host_end(&spec).await?;
    let name = host.name.as_str();
    // Containers of one subnet ARP for each other: the host answers with its own MAC and routes.
    sysctl::ensure_iface("net.ipv4.conf", name, "proxy_arp", "1")?;
    sysctl::ensure_iface("net.ipv4.neigh", name, "proxy_delay", "0")?;
    if !net.internal {
        // Published ports on the host's 127.0.0.1: DNATed loopback traffic is routed out the veth.
        sysctl::ensure_iface("net.ipv4.conf", name, "route_localnet", "1")?;
    }
    if ep.address_v6.is_some() {
        // fe80::1 must answer at once, not after duplicate address detection.
        sysctl::ensure_iface("net.ipv6.conf", name, "accept_dad", "0")?;
    }
    netlink.set_up(&host).await?;
    netlink.ensure_address(&host, IpNetwork::from(IpAddr::V4(GATEWAY_V4))).await?;
    if ep.address_v6.is_some() {
        let gateway = IpNetwork::new(IpAddr::V6(GATEWAY_V6), 64).map_err(|e| anyhow!("{e}"))?;
        netlink.ensure_address(&host, gateway).await?;
    }
    Ok(host)
}

/// Before the main table (32766), after the local one (0): an internal endpoint's traffic still
/// reaches the host's own addresses (its gateway among them) but is routed nowhere else.
pub const RULE_PRIORITY: u32 = 1100;

/// The rules that confine an internal endpoint's traffic to its network's table, both families
/// whatever its addresses (a container may send what it likes).
pub fn rules(table: u32, ep: &EndpointRecord) -> [IifRule; 2] {
    [false, true].map(|ipv6| IifRule { interface: ep.host_veth.clone(), table, ipv6, skip_default: false })
}

/// The rules that let the host itself reach an internal network's endpoints (they are in no
/// other table): locally generated traffic looks in the table first, past its unreachable
/// default.
pub fn host_rules(table: u32) -> [IifRule; 2] {
    [false, true].map(|ipv6| IifRule { interface: "lo".into(), table, ipv6, skip_default: true })
}

/// Removes an internal network's table and the host's rules for it.
pub async fn remove_table(netlink: &Netlink, table: u32) -> Result<()> {
    for rule in host_rules(table) {
        netlink.delete_iif_rule(&rule).await?;
    }
    netlink.flush_table(table).await
}

/// Routes the endpoint's addresses to its veth: in the main table, or for an internal network in
/// the network's own table, with the rules that send the veth's traffic there.
pub async fn add_routes(netlink: &Netlink, host: &Link, net: &NetworkRecord, ep: &EndpointRecord) -> Result<()> {
    match net.table {
        None => {
            for route in ep.host_routes() {
                netlink.ensure_link_route(route, host).await?;
            }
        }
        Some(table) => {
            netlink.ensure_unreachable_default(table).await?;
            for route in ep.host_routes() {
                netlink.ensure_link_route_in(table, route, host).await?;
                // An endpoint joined before its network had a table (an older version) has its
                // route in the main table, where the LAN could use it.
                netlink.delete_link_route(route, host).await?;
            }
            for rule in rules(table, ep).iter().chain(&host_rules(table)) {
                netlink.ensure_iif_rule(rule, RULE_PRIORITY).await?;
            }
        }
    }
    Ok(())
}

/// Withdraws the endpoint's routes and rules (routes go with the veth when it is gone).
pub async fn remove_routes(netlink: &Netlink, net: Option<&NetworkRecord>, ep: &EndpointRecord) -> Result<()> {
    let table = net.and_then(|n| n.table);
    if let Some(table) = table {
        for rule in rules(table, ep) {
            netlink.delete_iif_rule(&rule).await?;
        }
    }
    if let Some(host) = netlink.link(&ep.host_veth).await? {
        for route in ep.host_routes() {
            match table {
                None => netlink.delete_link_route(route, &host).await?,
                Some(table) => netlink.delete_link_route_in(table, route, &host).await?,
            }
        }
    }
    Ok(())
}
