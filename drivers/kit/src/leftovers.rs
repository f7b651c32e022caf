//! What a crash or an outage can leave behind: links and firewall rules tagged as a driver's own
//! that none of its records explains. The kernel is the truth; the records say what to keep.

use anyhow::Result;
use netloom_dataplane::{Link, Netlink};
use netloom_firewall::Firewall;
use tracing::{info, warn};

/// Deletes every link whose owner tag (alias) starts with `prefix` and that `keep` does not claim.
pub async fn sweep_links(netlink: &Netlink, prefix: &str, keep: impl Fn(&Link, &str) -> bool) {
    let links = match netlink.links().await {
        Ok(links) => links,
        Err(e) => return warn!("listing links for leftovers: {e:#}"),
    };
    for link in links {
        let Some(alias) = link.alias.as_deref() else { continue };
        if alias.starts_with(prefix) && !keep(&link, alias) {
            info!(link = %link.name, owner = alias, "removing leftover link");
            if let Err(e) = netlink.delete_link(&link.name).await {
                warn!("{e:#}");
            }
        }
    }
}

/// Removes the firewall rules of every owned id (network or endpoint policy) for which
/// `is_leftover` says no record explains it.
pub async fn sweep_firewall(firewall: &dyn Firewall, is_leftover: impl Fn(&str) -> bool) {
    let ids = match firewall.owned_networks().await {
        Ok(ids) => ids,
        Err(e) => return warn!("listing firewall rules for leftovers: {e:#}"),
    };
    for id in ids.into_iter().filter(|id| is_leftover(id)) {
        info!(id = %id, "removing leftover firewall rules");
        if let Err(e) = firewall.remove_network_by_id(&id).await {
            warn!("{e:#}");
        }
    }
}

/// Deletes the link `name` if it is there and tagged `owner`; a link of that name that someone
/// else made is left alone.
pub async fn delete_owned_link(netlink: &Netlink, name: &str, owner: &str) -> Result<()> {
    if let Some(link) = netlink.link(name).await? {
        if link.alias.as_deref() == Some(owner) {
            netlink.delete_link(name).await?;
        }
    }
    Ok(())
}
