//! Links: bridges, veth pairs, their state, MTU, controller and owner tag.

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkGetRequest, LinkUnspec, LinkVeth};
use tracing::debug;

use crate::{is_absent, names, Netlink};

/// What netloom needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The kernel's kind: "bridge", "veth", "vxlan", "macvlan", "dummy", … (None for physical links).
    pub kind: Option<String>,
    pub mtu: u32,
    pub mac: Vec<u8>,
    /// Index of the bridge (or other controller) the link is enslaved to.
    pub controller: Option<u32>,
    pub up: bool,
    /// netloom tags the links it creates with an alias naming their owner.
    pub alias: Option<String>,
}

impl Link {
    fn from_message(msg: LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mtu: 0,
            mac: Vec::new(),
            controller: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            alias: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Mtu(mtu) => link.mtu = mtu,
                LinkAttribute::Address(mac) => link.mac = mac,
                LinkAttribute::Controller(index) => link.controller = Some(index),
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind_name(&kind));
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    pub fn is_kind(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }

    pub fn mac_string(&self) -> String {
        crate::mac::format(&self.mac)
    }
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(other) => other.to_lowercase(),
        known => format!("{known:?}").to_lowercase(),
    }
}

/// A bridge as a driver wants it.
#[derive(Debug, Clone)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    /// Owner tag written as the link's alias.
    pub owner: &'a str,
}

/// A veth pair: the host end stays (on a bridge), the peer goes into a container.
#[derive(Debug, Clone)]
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub peer_name: &'a str,
    pub mtu: Option<u32>,
    pub owner: &'a str,
}

impl Netlink {
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let request = self.handle().link().get().match_name(name.to_string());
        Self::one_link(request, || format!("looking up link {name}")).await
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let request = self.handle().link().get().match_index(index);
        Self::one_link(request, || format!("looking up link #{index}")).await
    }

    /// The link a lookup finds; None when the kernel has no such link.
    async fn one_link(request: LinkGetRequest, doing: impl FnOnce() -> String) -> Result<Option<Link>> {
        match request.execute().try_next().await {
            Ok(msg) => Ok(msg.map(Link::from_message)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(anyhow!(e)).with_context(doing),
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let messages: Vec<LinkMessage> =
            self.handle().link().get().execute().try_collect().await.context("listing links")?;
        Ok(messages.into_iter().map(Link::from_message).collect())
    }

    /// The bridge named in `spec`, created and up. An existing bridge with the same owner is reused;
    /// a link of that name that is not a bridge or belongs to someone else is an error.
    pub async fn ensure_bridge(&self, spec: &BridgeSpec<'_>) -> Result<Link> {
        names::validate(spec.name)?;
        let link = match self.link(spec.name).await? {
            Some(existing) => {
                if !existing.is_kind("bridge") {
                    bail!(
                        "{} already exists and is a {} link, not a bridge",
                        spec.name,
                        existing.kind.as_deref().unwrap_or("physical")
                    );
                }
                if existing.alias.as_deref() != Some(spec.owner) {
                    bail!(
                        "bridge {} already exists and is not this network's ({}); choose another com.docker.network.bridge.name",
                        spec.name,
                        existing.alias.as_deref().unwrap_or("not created by netloom")
                    );
                }
                existing
            }
            None => {
                let bridge = LinkBridge::new(spec.name).address(crate::mac::for_bridge(spec.owner).to_vec());
                self.add_link(bridge.build(), spec.mtu, || format!("creating bridge {}", spec.name)).await?;
                let link = self.require(spec.name).await?;
                self.set_alias(&link, spec.owner).await?;
                link
            }
        };
        if let Some(mtu) = spec.mtu {
            if link.mtu != mtu {
                self.set_mtu(&link, mtu).await?;
            }
        }
        self.set_up(&link).await?;
        self.require(spec.name).await
    }

    /// Creates a veth pair, or reuses one of ours with the same names.
    pub async fn ensure_veth(&self, spec: &VethSpec<'_>) -> Result<(Link, Link)> {
        names::validate(spec.host_name)?;
        names::validate(spec.peer_name)?;
        if let Some(existing) = self.link(spec.host_name).await? {
            if existing.is_kind("veth") && existing.alias.as_deref() == Some(spec.owner) {
                if let Some(peer) = self.link(spec.peer_name).await? {
                    return Ok((existing, peer));
                }
            }
            bail!("{} already exists and is not this endpoint's veth", spec.host_name);
        }
        let veth = LinkVeth::new(spec.host_name, spec.peer_name).build();
        self.add_link(veth, spec.mtu, || format!("creating veth pair {} / {}", spec.host_name, spec.peer_name)).await?;
        let mut peer = self.require(spec.peer_name).await?;
        if let Some(mtu) = spec.mtu {
            // The builder's MTU applies to the first end only.
            if peer.mtu != mtu {
                self.set_mtu(&peer, mtu).await?;
                peer = self.require(spec.peer_name).await?;
            }
        }
        let mut host = self.require(spec.host_name).await?;
        self.set_alias(&host, spec.owner).await?;
        host.alias = Some(spec.owner.to_string());
        Ok((host, peer))
    }

    /// The host end of a veth pair of ours, whose peer may already be in a container's
    /// namespace; the pair is created when the host end does not exist.
    pub async fn ensure_veth_host_end(&self, spec: &VethSpec<'_>) -> Result<Link> {
        match self.link(spec.host_name).await? {
            Some(existing) if existing.is_kind("veth") && existing.alias.as_deref() == Some(spec.owner) => Ok(existing),
            Some(_) => bail!("{} already exists and is not this endpoint's veth", spec.host_name),
            None => Ok(self.ensure_veth(spec).await?.0),
        }
    }

    /// Creates the link `message` describes, with `mtu` when given (on a veth pair: the first end).
    async fn add_link(&self, mut message: LinkMessage, mtu: Option<u32>, doing: impl FnOnce() -> String) -> Result<()> {
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.handle().link().add(message).execute().await.with_context(doing)
    }

    async fn require(&self, name: &str) -> Result<Link> {
        self.link(name).await?.ok_or_else(|| anyhow!("link {name} vanished right after it was created"))
    }

    pub async fn set_alias(&self, link: &Link, alias: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index).alias(alias).build();
        self.handle().link().set(msg).execute().await.with_context(|| format!("tagging {} as {alias}", link.name))
    }

    pub async fn set_up(&self, link: &Link) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index).up().build();
        self.handle().link().set(msg).execute().await.with_context(|| format!("setting {} up", link.name))
    }

    pub async fn set_mtu(&self, link: &Link, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(link.index).mtu(mtu).build();
        self.handle().link().set(msg).execute().await.with_context(|| format!("setting MTU {mtu} on {}", link.name))
    }

    /// Enslaves `link` to `controller` (a bridge) and brings it up.
    pub async fn attach(&self, link: &Link, controller: &Link) -> Result<()> {
        if link.controller == Some(controller.index) {
            return self.set_up(link).await;
        }
        let msg = LinkUnspec::new_with_index(link.index).controller(controller.index).up().build();
        self.handle()
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("attaching {} to {} and setting it up", link.name, controller.name))
    }

    /// Sets a bridge port's flags: `hairpin` lets traffic leave through the port it came in on (a
    /// container reaching its own published port); `isolated` ports cannot talk to each other,
    /// only to non-isolated ports and the bridge itself (how icc=false is enforced without
    /// br_netfilter).
    pub async fn configure_bridge_port(&self, port: &Link, hairpin: bool, isolated: bool) -> Result<()> {
        let msg = LinkBridgePort::new(port.index).hairpin(hairpin).isolated(isolated).build();
        self.handle()
            .link()
            .set_port(msg)
            .execute()
            .await
            .with_context(|| format!("setting hairpin={hairpin} isolated={isolated} on bridge port {}", port.name))
    }

    /// Deletes the link named `name`; returns false when there was none.
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle().link().del(link.index).execute().await {
            Ok(()) => {
                debug!(link = name, "deleted");
                Ok(true)
            }
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("deleting link {name}")),
        }
    }
}
