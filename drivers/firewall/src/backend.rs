//! Picking and opening a backend.

use std::sync::Arc;

use anyhow::{Context, Result};
use tracing::info;

use crate::firewall::Firewall;
use crate::iptables::{self, IptablesFirewall};
use crate::model::{BackendChoice, BackendKind, Swept};
use crate::nft::{self, NftFirewall};

/// Opens the backend in the calling thread's network namespace (the nftables netlink socket and
/// the iptables processes stay in that namespace). Installs the loopback guard (see the crate
/// doc) right away.
pub async fn open(kind: BackendKind) -> Result<Arc<dyn Firewall>> {
    Ok(match kind {
        BackendKind::Iptables => Arc::new(IptablesFirewall::open().await?),
        BackendKind::Nftables => Arc::new(NftFirewall::open().await?),
    })
}

impl BackendKind {
    /// nftables where this kernel has nf_tables (probed over netlink in the calling thread's
    /// network namespace), else iptables, saying why in one log line.
    pub fn detect() -> BackendKind {
        match nft::probe() {
            Ok(()) => BackendKind::Nftables,
            Err(why) => {
                tracing::warn!("nf_tables is not usable here ({why}); using the iptables firewall backend");
                BackendKind::Iptables
            }
        }
    }
}

impl BackendChoice {
    /// The backend to open: the one asked for, or [`BackendKind::detect`] for `auto`.
    pub fn resolve(self) -> BackendKind {
        match self {
            BackendChoice::Auto => BackendKind::detect(),
            BackendChoice::Fixed(kind) => kind,
        }
    }
}

/// Removes from the backend *not* in use (`in_use.other()`) the rules of the owners `is_mine`
/// picks, and that backend's shared skeleton (loopback guard, netloom's chains, the `inet
/// netloom` table) once no netloom owner is left in it; logs what went. For a driver whose
/// backend changed (`--firewall auto` picks nftables where iptables was used before): without
/// this, the old backend's rules of its networks would keep applying next to the new ones.
///
/// Owners are the ids drivers give [`crate::NetworkPolicy::network_id`] (loom-bridge: bare
/// network ids; others `<driver>.<name>`), and [`crate::VXLAN_GUARD_OWNER`] for the VXLAN guard.
/// `is_mine` must pick only the calling driver's own: other netloom drivers on this host may
/// still use that backend. Nothing is installed, not even by probing (the other backend is never
/// opened), and a backend that is not there at all is nothing to sweep. A driver still on that
/// backend with no owner in it yet (say loom-host on iptables without endpoints) loses the
/// skeleton only until its first `add_network`, which puts it back; until then it has no
/// interface with `route_localnet` for the loopback guard to cover.
pub async fn sweep_other_backend(
    in_use: BackendKind,
    is_mine: impl Fn(&str) -> bool + Send + 'static,
) -> Result<Swept> {
    let other = in_use.other();
    let swept = tokio::task::spawn_blocking(move || match other {
        BackendKind::Iptables => iptables::sweep::sweep(&is_mine),
        BackendKind::Nftables => nft::sweep::sweep(&is_mine),
    })
    .await?
    .with_context(|| format!("removing netloom's {other} rules left from before the switch to {in_use}"))?;
    for owner in &swept.removed {
        info!(backend = %other, owner = %owner, "removed firewall rules left from before the switch to {in_use}");
    }
    if swept.skeleton {
        info!(backend = %other, "removed netloom's {other} skeleton: no netloom owner is left there");
    } else if !swept.kept.is_empty() {
        info!(backend = %other, owners = ?swept.kept, "{other} rules of other netloom owners left in place");
    }
    Ok(swept)
}

/// For a driver that stops: removes the shared skeleton of the backend `kind` (loopback guard,
/// netloom's chains, the `inet netloom` table with its compat rule) once no netloom owner has
/// anything left in it, so that a host where nothing uses netloom any more keeps none of its
/// rules (a managed plugin has no uninstall hook; this is its last chance). Any owner's rules
/// (this or another driver's networks, published ports, the VXLAN guard) keep everything in
/// place. A driver that starts again puts the skeleton back in [`open`]. Returns whether the
/// skeleton went.
pub async fn remove_skeleton_if_unused(kind: BackendKind) -> Result<bool> {
    let swept = tokio::task::spawn_blocking(move || match kind {
        BackendKind::Iptables => iptables::sweep::sweep(&|_| false),
        BackendKind::Nftables => nft::sweep::sweep(&|_| false),
    })
    .await?
    .with_context(|| format!("removing netloom's unused {kind} skeleton"))?;
    if swept.skeleton {
        info!(backend = %kind, "removed netloom's {kind} skeleton: no netloom owner is left");
    }
    Ok(swept.skeleton)
}
