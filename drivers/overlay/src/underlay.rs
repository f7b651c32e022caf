//! `--advertise-addr`: this host's tunnel endpoint, given as an address of the host or as the
//! interface that has it, and the MTU of that interface.

use std::net::IpAddr;

use anyhow::{bail, Result};
use netloom_dataplane::Netlink;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub vtep: IpAddr,
    pub iface: String,
    pub mtu: u32,
}

pub async fn resolve(netlink: &Netlink, advertise: &str) -> Result<Underlay> {
    let advertise = advertise.trim();
    if advertise.is_empty() {
        bail!("no --advertise-addr: start loom-overlay with --advertise-addr IP|IFACE, this host's address on the underlay");
    }
    let links = netlink.links().await?;
    if let Ok(ip) = advertise.parse::<IpAddr>() {
        let mut seen = Vec::new();
        for link in &links {
            for address in netlink.addresses(link).await? {
                if address.ip() == ip {
                    return Ok(Underlay { vtep: ip, iface: link.name.clone(), mtu: link.mtu });
                }
                if link.name != "lo" && address.is_ipv4() {
                    seen.push(format!("{} {address}", link.name));
                }
            }
        }
        bail!(
            "--advertise-addr {ip} is not an address of this host (it has {}); give one of its addresses or an interface name",
            if seen.is_empty() { "no IPv4 address besides loopback".to_string() } else { seen.join(", ") }
        );
    }
    let Some(link) = links.iter().find(|l| l.name == advertise) else {
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).filter(|n| *n != "lo").collect();
        bail!(
            "--advertise-addr {advertise:?} is neither an IP address nor an interface of this host (interfaces: {})",
            names.join(", ")
        );
    };
    let addresses = netlink.addresses(link).await?;
    let pick = addresses.iter().find(|a| a.is_ipv4()).or_else(|| {
        addresses.iter().find(|a| matches!(a.ip(), IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80))
    });
    match pick {
        Some(address) => Ok(Underlay { vtep: address.ip(), iface: link.name.clone(), mtu: link.mtu }),
        None => bail!("--advertise-addr {advertise}: the interface has no IP address to use as the tunnel endpoint"),
    }
}
