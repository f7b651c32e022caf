//! macvlan links: an endpoint's own MAC address on a parent interface's segment.

use anyhow::{anyhow, bail, Context, Result};
use rtnetlink::packet_route::link::LinkMessage;
pub use rtnetlink::packet_route::link::MacVlanMode;
use rtnetlink::LinkMacVlan;

use crate::{names, unsupported_kind, Link, Netlink};

/// A macvlan link as a driver wants it, created in the caller's namespace.
#[derive(Debug, Clone)]
pub struct MacvlanSpec<'a> {
    pub name: &'a str,
    /// Index of the parent (lower) interface.
    pub parent_index: u32,
    pub mode: MacVlanMode,
    pub mtu: Option<u32>,
    /// None: the kernel picks a random address.
    pub mac: Option<[u8; 6]>,
    /// Owner tag written as the link's alias.
    pub owner: &'a str,
}

/// The RTM_NEWLINK message that creates `spec`'s link (without the alias, set afterwards).
pub fn macvlan_message(spec: &MacvlanSpec<'_>) -> LinkMessage {
    let mut builder = LinkMacVlan::new(spec.name, spec.parent_index, spec.mode);
    if let Some(mtu) = spec.mtu {
        builder = builder.mtu(mtu);
    }
    if let Some(mac) = spec.mac {
        builder = builder.address(mac.to_vec());
    }
    builder.build()
}

impl Netlink {
    /// The macvlan named in `spec`: an existing one with the same owner is reused, any other link
    /// of that name is an error.
    pub async fn ensure_macvlan(&self, spec: &MacvlanSpec<'_>) -> Result<Link> {
        names::validate(spec.name)?;
        if let Some(existing) = self.link(spec.name).await? {
            if existing.is_kind("macvlan") && existing.alias.as_deref() == Some(spec.owner) {
                return Ok(existing);
            }
            bail!("{} already exists and is not this endpoint's macvlan", spec.name);
        }
        match self.handle().link().add(macvlan_message(spec)).execute().await {
            Ok(()) => {}
            Err(e) if unsupported_kind(&e) => {
                bail!("creating macvlan {}: this kernel has no macvlan support (CONFIG_MACVLAN)", spec.name)
            }
            Err(e) => {
                return Err(anyhow!(e))
                    .with_context(|| format!("creating macvlan {} on link #{}", spec.name, spec.parent_index))
            }
        }
        let link = self
            .link(spec.name)
            .await?
            .ok_or_else(|| anyhow!("macvlan {} vanished right after it was created", spec.name))?;
        self.set_alias(&link, spec.owner).await?;
        self.link(spec.name).await?.ok_or_else(|| anyhow!("macvlan {} vanished right after it was created", spec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkInfo};

    #[test]
    fn message_carries_parent_mode_mtu_and_mac() {
        let spec = MacvlanSpec {
            name: "mv-test",
            parent_index: 7,
            mode: MacVlanMode::Private,
            mtu: Some(1400),
            mac: Some([0x02, 0x42, 10, 0, 0, 5]),
            owner: "o",
        };
        let msg = macvlan_message(&spec);
        let attrs = &msg.attributes;
        assert!(attrs.contains(&LinkAttribute::IfName("mv-test".into())));
        assert!(attrs.contains(&LinkAttribute::Link(7)));
        assert!(attrs.contains(&LinkAttribute::Mtu(1400)));
        assert!(attrs.contains(&LinkAttribute::Address(vec![0x02, 0x42, 10, 0, 0, 5])));
        let info = attrs.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(info) => Some(info),
            _ => None,
        });
        let info = info.expect("IFLA_LINKINFO");
        assert!(info.contains(&LinkInfo::Kind(InfoKind::MacVlan)));
        assert!(info.contains(&LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(MacVlanMode::Private)]))));
    }
}
