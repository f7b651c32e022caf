//! Whether the kernel can serve WireGuard devices itself.

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use rtnetlink::LinkWireguard;

use crate::{is_errno, unsupported_kind, Netlink};

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
}
