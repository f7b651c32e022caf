//! Removing what netloom's owners left in `inet netloom` after a switch to iptables, without
//! installing anything (see [`crate::sweep_other_backend`]).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use tracing::debug;

use super::layout::{self, PORT_MAPS};
use super::netlink::Socket;
use super::{nl_context, remove_network_tag, remove_table, remove_vxlan_guard};
use crate::model::{Swept, VXLAN_GUARD_OWNER};
use crate::tag;

/// Deletes the networks (and the VXLAN guard) of the owners `is_mine` picks; the whole table and
/// the iptables compat rule once no owner is left.
pub(crate) fn sweep(is_mine: &dyn Fn(&str) -> bool) -> Result<Swept> {
    let mut sock = match Socket::open() {
        Ok(sock) => sock,
        Err(e) => {
            debug!("no nf_tables here ({e}): nothing to sweep");
            return Ok(Swept::default());
        }
    };
    let chains = match sock.chains() {
        Ok(chains) if !chains.is_empty() => chains,
        Ok(_) => return Ok(Swept::default()),
        Err(e) => {
            debug!("nf_tables does not answer ({e}): nothing to sweep");
            return Ok(Swept::default());
        }
    };
    // Network tag → full id, from the comments of the networks' chains.
    let mut networks: BTreeMap<String, String> = BTreeMap::new();
    for chain in &chains {
        let id = chain.comment.as_deref().and_then(tag::parse_nft_chain_comment);
        if let (Some(network_tag), Some(id)) = (layout::tag_of_chain(&chain.name), id) {
            networks.insert(network_tag.to_string(), id.to_string());
        }
    }
    let guard = chains.iter().any(|c| [layout::CHAIN_VXLAN_IN, layout::CHAIN_VXLAN_FWD].contains(&c.name.as_str()));
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    for (network_tag, id) in &networks {
        if is_mine(id) {
            remove_network_tag(&mut sock, network_tag)?;
            removed.push(id.clone());
        } else {
            kept.push(id.clone());
        }
    }
    if guard {
        if is_mine(VXLAN_GUARD_OWNER) {
            remove_vxlan_guard(&mut sock)?;
            removed.push(VXLAN_GUARD_OWNER.to_string());
        } else {
            kept.push(VXLAN_GUARD_OWNER.to_string());
        }
    }
    // Published ports of a network whose chains are gone name no full id: their owner is
    // unknown, so the table stays for them.
    let mut orphans = BTreeSet::new();
    for map in PORT_MAPS {
        for elem in sock.elems(map.name).map_err(nl_context("reading a port map"))? {
            if let Some((network_tag, _)) = elem.comment.as_deref().and_then(tag::parse_nft_elem_comment) {
                if !networks.contains_key(network_tag) {
                    orphans.insert(network_tag.to_string());
                }
            }
        }
    }
    let skeleton = kept.is_empty() && orphans.is_empty();
    if skeleton {
        remove_table(&mut sock)?;
    }
    kept.extend(orphans.into_iter().map(|t| format!("{t}… (published ports only)")));
    Ok(Swept { removed, kept, skeleton })
}
