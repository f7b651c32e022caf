//! A network's parent interface: checking the user's, making the VLAN sub-interface or the
//! isolated parent, and removing only what loom-macvlan made.

use anyhow::{anyhow, bail, Result};
use netloom_dataplane::{names, Link, Netlink, VethSpec, VlanSpec};
use netloom_driver_kit::Network;
use netloom_plugin_api::addressing::short_id;
use netloom_plugin_api::options::MTU;
use tracing::info;

use crate::options::{MacvlanOptions, Mode};
use crate::state::{NetworkRecord, Parent, OWNER_PREFIX};

fn ours(link: &Link) -> bool {
    link.alias.as_deref().is_some_and(|a| a.starts_with(OWNER_PREFIX))
}

/// Works out a new network's parent from its options, checking everything the kernel would
/// otherwise refuse later, before anything is made.
pub async fn plan(netlink: &Netlink, options: &MacvlanOptions, network_id: &str) -> Result<Parent> {
    let Some(wanted) = &options.parent else {
        return Ok(Parent::Isolated {
            name: names::derived("dm-", network_id),
            peer: names::derived("dp-", network_id),
        });
    };
    let name = wanted.name.clone();
    if let Some(link) = netlink.link(&name).await? {
        check_mtu(options.mtu, &link)?;
        return match (&wanted.vlan, link.is_kind("vlan") && ours(&link)) {
            (Some((base, id)), true) => Ok(Parent::Vlan { name, base: base.clone(), id: *id }),
            _ => {
                check_usable(&link, "parent interface")?;
                Ok(Parent::Existing { name })
            }
        };
    }
    let Some((base, id)) = &wanted.vlan else {
        bail!("parent interface {name} does not exist on this host; check `ip link` or use parent=IFACE.VLAN");
    };
    let base_link = netlink.link(base).await?.ok_or_else(|| {
        anyhow!("interface {base} (base of the VLAN sub-interface {name}) does not exist on this host")
    })?;
    check_usable(&base_link, "VLAN base interface")?;
    check_mtu(options.mtu, &base_link)?;
    Ok(Parent::Vlan { name, base: base.clone(), id: *id })
}

fn check_usable(link: &Link, what: &str) -> Result<()> {
    if link.is_kind("macvlan") {
        bail!("{what} {} is itself a macvlan link; use the interface it sits on", link.name);
    }
    if !link.up {
        bail!("{what} {} is down; bring it up (ip link set {} up) and try again", link.name, link.name);
    }
    Ok(())
}

fn check_mtu(mtu: Option<u32>, parent: &Link) -> Result<()> {
    match mtu {
        Some(mtu) if mtu > parent.mtu => {
            bail!("{MTU}={mtu} is larger than the MTU {} of parent interface {}", parent.mtu, parent.name)
        }
        _ => Ok(()),
    }
}

/// Passthru hands the whole parent to one container: such a parent is not shared.
pub fn check_sharing(mode: Mode, parent: &Parent, others: &[&NetworkRecord]) -> Result<()> {
    if let Some(other) = others.iter().find(|o| o.parent.name() == parent.name()) {
        if mode == Mode::Passthru || other.mode == Mode::Passthru {
            bail!(
                "parent interface {} is already used by network {} ({:?} mode); a passthru network needs its parent to itself",
                parent.name(),
                short_id(&other.id),
                other.mode
            );
        }
    }
    Ok(())
}

/// Makes (or finds) the network's parent, up; safe to repeat.
pub async fn ensure(netlink: &Netlink, net: &NetworkRecord) -> Result<Link> {
    let owner = net.owner();
    match &net.parent {
        Parent::Existing { name } => netlink
            .link(name)
            .await?
            .ok_or_else(|| anyhow!("parent interface {name} of network {} no longer exists", short_id(&net.id))),
        Parent::Vlan { name, base, id } => {
            if let Some(link) = netlink.link(name).await? {
                if ours(&link) {
                    netlink.set_up(&link).await?;
                }
                return Ok(link);
            }
            let base =
                netlink.link(base).await?.ok_or_else(|| anyhow!("interface {base} (base of {name}) does not exist"))?;
            let link = netlink.ensure_vlan(&VlanSpec { name, parent: &base, id: *id, owner: &owner }).await?;
            info!(network = %short_id(&net.id), link = %name, "VLAN sub-interface created");
            Ok(link)
        }
        Parent::Isolated { name, peer } => {
            let (host, peer) = netlink
                .ensure_veth(&VethSpec { host_name: name, peer_name: peer, mtu: net.mtu, owner: &owner })
                .await?;
            netlink.set_up(&peer).await?;
            netlink.set_up(&host).await?;
            netlink.link(name).await?.ok_or_else(|| anyhow!("isolated parent {name} vanished"))
        }
    }
}

/// Removes the parent if loom-macvlan made it and no network in `remaining` still uses it.
pub async fn release(netlink: &Netlink, net: &NetworkRecord, remaining: &[&NetworkRecord]) -> Result<()> {
    let name = net.parent.name();
    let Some(link) = netlink.link(name).await? else { return Ok(()) };
    match &net.parent {
        Parent::Existing { .. } => {}
        Parent::Vlan { .. } if ours(&link) => match remaining.iter().find(|o| o.parent.name() == name) {
            None => {
                netlink.delete_link(name).await?;
                info!(link = %name, "VLAN sub-interface removed with its last network");
            }
            // The tag names a live network, so a restart never takes the link for a leftover.
            Some(other) if link.alias.as_deref() == Some(net.owner().as_str()) => {
                netlink.set_alias(&link, &other.owner()).await?;
            }
            Some(_) => {}
        },
        Parent::Vlan { .. } => {}
        Parent::Isolated { .. } => {
            if link.alias.as_deref() == Some(net.owner().as_str()) {
                netlink.delete_link(name).await?;
            }
        }
    }
    Ok(())
}
