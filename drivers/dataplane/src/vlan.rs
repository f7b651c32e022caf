//! 802.1q sub-interfaces (`eth0.50`).

use anyhow::{anyhow, bail, Context, Result};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::LinkVlan;

use crate::{names, unsupported_kind, Link, Netlink};

/// The VLAN ids 802.1q leaves for use (0 and 4095 are reserved).
pub const VLAN_IDS: std::ops::RangeInclusive<u16> = 1..=4094;

/// An 802.1q sub-interface of `parent` carrying VLAN `id`.
#[derive(Debug, Clone)]
pub struct VlanSpec<'a> {
    pub name: &'a str,
    pub parent: &'a Link,
    pub id: u16,
    pub owner: &'a str,
}

/// The RTM_NEWLINK message that creates `spec`'s link (without the alias, set afterwards).
pub fn vlan_message(spec: &VlanSpec<'_>) -> LinkMessage {
    LinkVlan::new(spec.name, spec.parent.index, spec.id).build()
}

impl Netlink {
    /// The sub-interface named in `spec`, created and up. An existing VLAN link of ours is reused;
    /// any other link of that name is an error (callers use a user's own link without this).
    pub async fn ensure_vlan(&self, spec: &VlanSpec<'_>) -> Result<Link> {
        names::validate(spec.name)?;
        if !VLAN_IDS.contains(&spec.id) {
            bail!("VLAN id {} of {} is out of range; use 1 to 4094", spec.id, spec.name);
        }
        let link = match self.link(spec.name).await? {
            Some(existing) if existing.is_kind("vlan") && existing.alias.as_deref() == Some(spec.owner) => existing,
            Some(_) => bail!("{} already exists and is not a VLAN sub-interface made by netloom", spec.name),
            None => {
                match self.handle().link().add(vlan_message(spec)).execute().await {
                    Ok(()) => {}
                    Err(e) if unsupported_kind(&e) => bail!(
                        "creating VLAN sub-interface {} (id {} on {}): this kernel has no 802.1q VLAN support \
                         (load the 8021q module, or use a parent without .VLAN)",
                        spec.name,
                        spec.id,
                        spec.parent.name
                    ),
                    Err(e) => {
                        return Err(anyhow!(e)).with_context(|| {
                            format!(
                                "creating VLAN sub-interface {} (id {} on {})",
                                spec.name, spec.id, spec.parent.name
                            )
                        })
                    }
                }
                let link = self
                    .link(spec.name)
                    .await?
                    .ok_or_else(|| anyhow!("{} vanished right after it was created", spec.name))?;
                self.set_alias(&link, spec.owner).await?;
                link
            }
        };
        self.set_up(&link).await?;
        self.link(spec.name).await?.ok_or_else(|| anyhow!("{} vanished", spec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo};

    fn parent() -> Link {
        Link {
            index: 3,
            name: "eth0".into(),
            kind: None,
            mtu: 1500,
            mac: vec![],
            controller: None,
            up: true,
            alias: None,
        }
    }

    #[test]
    fn message_carries_name_parent_and_id() {
        let parent = parent();
        let msg = vlan_message(&VlanSpec { name: "eth0.50", parent: &parent, id: 50, owner: "o" });
        let attrs = &msg.attributes;
        assert!(attrs.contains(&LinkAttribute::IfName("eth0.50".into())), "{attrs:?}");
        assert!(attrs.contains(&LinkAttribute::Link(3)), "{attrs:?}");
        let info = attrs
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(info) => Some(info.clone()),
                _ => None,
            })
            .expect("IFLA_LINKINFO");
        assert_eq!(info, vec![LinkInfo::Kind(InfoKind::Vlan), LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(50)]))]);
    }

    #[test]
    fn ids_outside_802_1q_are_refused_before_the_kernel() {
        let parent = parent();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let nl = Netlink::connect().unwrap();
            for id in [0, 4095] {
                let err =
                    nl.ensure_vlan(&VlanSpec { name: "eth0.x", parent: &parent, id, owner: "o" }).await.unwrap_err();
                assert!(err.to_string().contains("out of range; use 1 to 4094"), "{err}");
            }
        });
    }
}
