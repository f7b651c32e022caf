//! Removing what netloom's owners left in iptables after a switch to nftables, without
//! installing anything (see [`crate::sweep_other_backend`]).

use std::collections::BTreeSet;

use anyhow::Result;
use tracing::debug;

use super::{Inner, ALL_TABLES};
use crate::model::{Swept, VXLAN_GUARD_OWNER};
use crate::tag::{self, IptOwner};

/// The owner a sweep asks `is_mine` about; `None` for the shared skeleton and the nftables
/// backend's compat rule.
fn owner_id<'a>(owner: &IptOwner<'a>) -> Option<&'a str> {
    match owner {
        IptOwner::Network(id) | IptOwner::Port { network_id: id, .. } => Some(id),
        IptOwner::Vxlan => Some(VXLAN_GUARD_OWNER),
        IptOwner::Base | IptOwner::Compat => None,
    }
}

/// Deletes the rules of the owners `is_mine` picks; the skeleton too once no owner is left.
/// The compat rule stays: it is the nftables backend's.
pub(crate) fn sweep(is_mine: &dyn Fn(&str) -> bool) -> Result<Swept> {
    let Some((inner, listed)) = Inner::unguarded_listing(&ALL_TABLES) else {
        debug!("iptables does not run here: nothing to sweep");
        return Ok(Swept::default());
    };
    let mut owners = BTreeSet::new();
    let mut skeleton = false;
    for rule in listed {
        match rule.comment.as_deref().and_then(tag::parse_ipt_comment) {
            Some(IptOwner::Base) => skeleton = true,
            Some(owner) => owners.extend(owner_id(&owner).map(str::to_string)),
            None => {}
        }
    }
    if owners.is_empty() && !skeleton {
        return Ok(Swept::default());
    }
    let (removed, kept): (Vec<String>, Vec<String>) = owners.into_iter().partition(|id| is_mine(id));
    if !removed.is_empty() {
        inner.remove_where(&ALL_TABLES, |o| owner_id(o).is_some_and(|id| removed.iter().any(|r| r == id)))?;
    }
    let skeleton = kept.is_empty();
    if skeleton {
        inner.remove_where(&ALL_TABLES, |o| matches!(o, IptOwner::Base))?;
        inner.remove_chains()?;
    } else if removed.iter().any(|id| id == VXLAN_GUARD_OWNER) {
        inner.remove_vxlan_chains()?;
    }
    Ok(Swept { removed, kept, skeleton })
}
