//! The dataplane every netloom driver shares: Linux links, addresses, routes, neighbour and FDB
//! entries, programmed over rtnetlink.
//!
//! Every operation is idempotent: an object that already exists in the wanted shape is reused,
//! one that exists in another shape is reported, and deleting something absent succeeds. Every
//! error names the object and the cause.

mod addr;
mod link;
pub mod names;
mod route;
pub mod sysctl;

use anyhow::{Context, Result};
use rtnetlink::Handle;

pub use link::*;

/// A netlink connection in the calling thread's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; its I/O task runs on the current tokio runtime.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// True when a netlink error is the kernel's EEXIST.
pub(crate) fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get()) == Some(-errno),
        _ => false,
    }
}

pub(crate) const EEXIST: i32 = 17;
pub(crate) const ENOENT: i32 = 2;
pub(crate) const ENODEV: i32 = 19;
pub(crate) const ESRCH: i32 = 3;
pub(crate) const EADDRNOTAVAIL: i32 = 99;
