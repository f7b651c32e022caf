//! Kernel WireGuard links: whether the kernel can serve them, and making one whose UDP socket
//! lives in another namespace than the link (see [`crate::WireguardControl`] for its keys and
//! peers).

use std::os::fd::AsRawFd;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::LinkWireguard;

use crate::{is_errno, names, unsupported_kind, Netlink, Netns};

impl Netlink {
    /// True when a `wireguard` link can be made here: one named `probe_name` is created and deleted
    /// again at once (a link of that name that already exists is left alone and counts as yes).
    pub async fn kernel_has_wireguard(&self, probe_name: &str) -> Result<bool> {
        crate::names::validate(probe_name)?;
        match self.handle().link().add(LinkWireguard::new(probe_name).build()).execute().await {
            Ok(()) => {
                self.delete_link(probe_name).await?;
                Ok(true)
            }
            Err(e) if is_errno(&e, Errno::EEXIST) => Ok(true),
            Err(e) if unsupported_kind(&e) || is_errno(&e, Errno::ENODEV) => Ok(false),
            Err(e) => Err(anyhow!(e)).context("probing for kernel WireGuard"),
        }
    }

    /// Makes a kernel WireGuard link named `name` inside `ns`. The kernel opens the link's UDP
    /// socket in the namespace it was created from, this connection's, so the encrypted side
    /// (the link) and the underlay side (the socket) stay apart.
    pub async fn create_wireguard_in(&self, name: &str, ns: &Netns) -> Result<()> {
        names::validate(name)?;
        let mut msg = LinkWireguard::new(name).build();
        // Kept open until the request is answered: the kernel resolves the descriptor then.
        let ns_file = std::fs::File::open(ns.path())
            .with_context(|| format!("opening network namespace {}", ns.path().display()))?;
        msg.attributes.push(LinkAttribute::NetNsFd(ns_file.as_raw_fd()));
        let added = self.handle().link().add(msg).execute().await;
        drop(ns_file);
        match added {
            Ok(()) => Ok(()),
            Err(e) if unsupported_kind(&e) => bail!("creating {name}: this kernel has no WireGuard (CONFIG_WIREGUARD)"),
            Err(e) if is_errno(&e, Errno::EEXIST) => bail!("creating {name}: a link of that name already exists"),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("creating WireGuard link {name}")),
        }
    }
}
