//! VXLAN links for overlays with statically programmed peers: no multicast group, no learning;
//! remote MACs come from FDB entries (`fdb.rs`) and, with `proxy_arp`, ARP and neighbour
//! solicitations are answered by the link itself from its neighbour table (`neigh.rs`).

use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::LinkVxlan;
use tracing::info;

use crate::{is_absent, is_errno, names, unsupported_kind, Link, Netlink, Netns};

/// A VXLAN link as a driver wants it.
#[derive(Debug, Clone)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// This host's tunnel endpoint (VTEP): the source address of encapsulated packets.
    pub local: IpAddr,
    /// UDP port, both for sending and for receiving.
    pub port: u16,
    pub mtu: Option<u32>,
    /// Answer ARP requests and neighbour solicitations from the link's neighbour table instead of
    /// flooding them.
    pub proxy_arp: bool,
    /// Owner tag written as the link's alias.
    pub owner: &'a str,
}

/// What the kernel reports about a VXLAN link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanInfo {
    pub vni: Option<u32>,
    pub local: Option<IpAddr>,
    pub port: Option<u16>,
    pub learning: Option<bool>,
    pub proxy: Option<bool>,
}

impl VxlanInfo {
    /// Whether the link was made from `spec` (MTU and owner aside).
    pub fn matches(&self, spec: &VxlanSpec<'_>) -> bool {
        self.vni == Some(spec.vni)
            && self.local == Some(spec.local)
            && self.port == Some(spec.port)
            && self.learning == Some(false)
            && self.proxy == Some(spec.proxy_arp)
    }
}

/// The RTM_NEWLINK message that creates `spec`'s link (without the alias, set afterwards).
pub fn vxlan_message(spec: &VxlanSpec<'_>) -> LinkMessage {
    let mut builder = LinkVxlan::new(spec.name, spec.vni).port(spec.port).learning(false).proxy(spec.proxy_arp);
    builder = match spec.local {
        IpAddr::V4(v4) => builder.local(v4),
        IpAddr::V6(v6) => builder.local6(v6),
    };
    if let Some(mtu) = spec.mtu {
        builder = builder.mtu(mtu);
    }
    builder.build()
}

/// Reads the VXLAN attributes out of a link message.
pub fn vxlan_info_of(msg: &LinkMessage) -> Option<VxlanInfo> {
    let infos = msg.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    })?;
    let data = infos.iter().find_map(|info| match info {
        LinkInfo::Data(InfoData::Vxlan(data)) => Some(data),
        _ => None,
    })?;
    let mut out = VxlanInfo::default();
    for item in data {
        match item {
            InfoVxlan::Id(vni) => out.vni = Some(*vni),
            InfoVxlan::Local(v4) => out.local = Some(IpAddr::V4(*v4)),
            InfoVxlan::Local6(v6) => out.local = Some(IpAddr::V6(*v6)),
            InfoVxlan::Port(port) => out.port = Some(*port),
            InfoVxlan::Learning(on) => out.learning = Some(*on),
            InfoVxlan::Proxy(on) => out.proxy = Some(*on),
            _ => {}
        }
    }
    Some(out)
}

impl Netlink {
    /// The VXLAN attributes of the link named `name` (None: no such link, or not a VXLAN link).
    pub async fn vxlan_info(&self, name: &str) -> Result<Option<VxlanInfo>> {
        use futures::TryStreamExt;
        let mut stream = self.handle().link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(vxlan_info_of(&msg)),
            Ok(None) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("looking up link {name}")),
        }
    }

    /// The VXLAN link of `spec` in this connection's namespace, created if missing and up. An
    /// existing link of ours made with other parameters (VNI, VTEP, port) is replaced; any other
    /// link of that name is an error.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec<'_>) -> Result<Link> {
        self.ensure_vxlan_inner(spec, None).await
    }

    /// Like `ensure_vxlan`, but the link lives in `ns` (reached through `ns_netlink`, a connection
    /// inside it) while its UDP socket stays in this connection's namespace: the underlay.
    pub async fn ensure_vxlan_in(&self, spec: &VxlanSpec<'_>, ns: &Netns, ns_netlink: &Netlink) -> Result<Link> {
        self.ensure_vxlan_inner(spec, Some((ns, ns_netlink))).await
    }

    async fn ensure_vxlan_inner(&self, spec: &VxlanSpec<'_>, target: Option<(&Netns, &Netlink)>) -> Result<Link> {
        names::validate(spec.name)?;
        let target_nl = target.map(|(_, nl)| nl).unwrap_or(self);
        if let Some(existing) = target_nl.link(spec.name).await? {
            let ours = existing.is_kind("vxlan") && existing.alias.as_deref() == Some(spec.owner);
            if !ours {
                bail!(
                    "{} already exists and is not this network's VXLAN link ({})",
                    spec.name,
                    existing.alias.as_deref().unwrap_or("not created by netloom")
                );
            }
            let info = target_nl.vxlan_info(spec.name).await?.unwrap_or_default();
            if info.matches(spec) {
                if let Some(mtu) = spec.mtu {
                    if existing.mtu != mtu {
                        target_nl.set_mtu(&existing, mtu).await?;
                    }
                }
                target_nl.set_up(&existing).await?;
                return target_nl.link(spec.name).await?.ok_or_else(|| anyhow!("link {} vanished", spec.name));
            }
            info!(link = spec.name, have = ?info, want_vni = spec.vni, want_local = %spec.local, want_port = spec.port,
                  "VXLAN link has other parameters; replacing it");
            target_nl.delete_link(spec.name).await?;
        }
        let mut msg = vxlan_message(spec);
        // Kept open until the request is answered: the kernel resolves the descriptor then.
        let ns_file = match target {
            Some((ns, _)) => {
                let file = std::fs::File::open(ns.path())
                    .with_context(|| format!("opening network namespace {}", ns.path().display()))?;
                msg.attributes.push(LinkAttribute::NetNsFd(std::os::fd::AsRawFd::as_raw_fd(&file)));
                Some(file)
            }
            None => None,
        };
        let added = self.handle().link().add(msg).execute().await;
        drop(ns_file);
        match added {
            Ok(()) => {}
            Err(e) if unsupported_kind(&e) => {
                bail!("creating VXLAN link {}: this kernel has no VXLAN support (CONFIG_VXLAN)", spec.name)
            }
            Err(e) if is_errno(&e, Errno::EEXIST) => bail!(
                "creating VXLAN link {} for VNI {}: another VXLAN link already uses VNI {} with UDP port {} on this host \
                 (another overlay, or Docker's own overlay driver)",
                spec.name,
                spec.vni,
                spec.vni,
                spec.port
            ),
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!("creating VXLAN link {} (VNI {}, VTEP {}, port {})", spec.name, spec.vni, spec.local, spec.port)
                })
            }
        }
        let link = target_nl
            .link(spec.name)
            .await?
            .ok_or_else(|| anyhow!("VXLAN link {} vanished right after it was created", spec.name))?;
        target_nl.set_alias(&link, spec.owner).await?;
        target_nl.set_up(&link).await?;
        target_nl.link(spec.name).await?.ok_or_else(|| anyhow!("VXLAN link {} vanished", spec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn spec() -> VxlanSpec<'static> {
        VxlanSpec {
            name: "vx-test",
            vni: 4242,
            local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 4789,
            mtu: Some(1450),
            proxy_arp: true,
            owner: "o",
        }
    }

    #[test]
    fn message_has_no_group_and_no_learning() {
        let msg = vxlan_message(&spec());
        assert!(msg.attributes.contains(&LinkAttribute::IfName("vx-test".into())));
        assert!(msg.attributes.contains(&LinkAttribute::Mtu(1450)));
        let info = vxlan_info_of(&msg).expect("VXLAN data");
        assert!(info.matches(&spec()), "{info:?}");
        let LinkAttribute::LinkInfo(infos) =
            msg.attributes.iter().find(|a| matches!(a, LinkAttribute::LinkInfo(_))).unwrap()
        else {
            unreachable!()
        };
        let data = infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(d)) => Some(d),
            _ => None,
        });
        assert!(!data.unwrap().iter().any(|d| matches!(d, InfoVxlan::Group(_) | InfoVxlan::Group6(_))));
    }

    #[test]
    fn other_parameters_do_not_match() {
        let msg = vxlan_message(&spec());
        let info = vxlan_info_of(&msg).unwrap();
        assert!(!info.matches(&VxlanSpec { vni: 4243, ..spec() }));
        assert!(!info.matches(&VxlanSpec { port: 8472, ..spec() }));
        assert!(!info.matches(&VxlanSpec { local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), ..spec() }));
        assert!(!info.matches(&VxlanSpec { proxy_arp: false, ..spec() }));
    }
}
