//! The dataplane every netloom driver shares: Linux links, addresses, routes, neighbour and FDB
//! entries, programmed over rtnetlink.
//!
//! Every operation is idempotent: an object that already exists in the wanted shape is reused,
//! one that exists in another shape is reported, and deleting something absent succeeds. Every
//! error names the object and the cause.

mod addr;
mod fastpath;
mod fdb;
mod link;
pub mod mac;
mod macvlan;
pub mod names;
mod neigh;
mod netns;
mod port_isolation;
mod route;
mod routing;
mod supervise;
pub mod sysctl;
mod vlan;
mod vxlan;
mod wireguard;
mod wireguard_control;

use anyhow::{Context, Result};
use nix::errno::Errno;
use rtnetlink::Handle;

pub use fastpath::{block_of as fastpath_block_of, endpoint_mac as fastpath_mac, FastPath, FastPathEntry};
pub use fdb::{fdb_entry_of, learned_mac_of, FdbEntry};
pub use link::*;
pub use macvlan::{macvlan_message, MacVlanMode, MacvlanSpec};
pub use neigh::{neighbour_entry_of, NeighbourEntry};
pub use netns::Netns;
pub use routing::{connected_route_of, describe_interface, overlaps, ConnectedRoute, IifRule};
pub use supervise::supervise;
pub use vlan::{vlan_message, VlanSpec, VLAN_IDS};
pub use vxlan::{vxlan_info_of, vxlan_message, VxlanInfo, VxlanSpec};
pub use wireguard_control::{WireguardControl, WireguardKey, WireguardPeerSpec, WireguardTotals};

/// A netlink connection in the calling thread's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: supervise::SharedHandle,
}

impl Netlink {
    /// Opens a connection; its I/O task runs on the current tokio runtime, and is remade if it
    /// dies.
    pub fn connect() -> Result<Self> {
        let open = || {
            let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
            Ok((connection, handle))
        };
        let (connection, handle) = open()?;
        Ok(Self::supervised(connection, handle, open))
    }

    pub(crate) fn handle(&self) -> Handle {
        supervise::current(&self.handle)
    }
}

/// True when a netlink error is the kernel's `errno`.
pub(crate) fn is_errno(err: &rtnetlink::Error, errno: Errno) -> bool {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get()) == Some(-(errno as i32)),
        _ => false,
    }
}

/// True when the kernel says the object asked for (a link, an entry) does not exist.
pub(crate) fn is_absent(err: &rtnetlink::Error) -> bool {
    is_errno(err, Errno::ENODEV) || is_errno(err, Errno::ENOENT)
}

/// True when the kernel does not know the link kind asked for (its module is missing).
pub(crate) fn unsupported_kind(err: &rtnetlink::Error) -> bool {
    is_errno(err, Errno::EOPNOTSUPP)
}
