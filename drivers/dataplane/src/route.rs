//! Routes through a link (host-routed endpoints) and via a gateway.

use std::net::IpAddr;

use anyhow::{anyhow, Context, Result};
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use rtnetlink::packet_route::route::{RouteMessage, RouteScope};
use rtnetlink::RouteMessageBuilder;

use crate::{is_errno, Link, Netlink};

impl Netlink {
    /// Routes `destination` out of `link` (a scope-link route), replacing a different one.
    pub async fn ensure_link_route(&self, destination: IpNetwork, link: &Link) -> Result<()> {
        let message = link_route(destination, link)?;
        match self.handle().route().add(message).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, Errno::EEXIST) => Ok(()),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("routing {destination} to {}", link.name)),
        }
    }

    pub async fn delete_link_route(&self, destination: IpNetwork, link: &Link) -> Result<()> {
        let message = link_route(destination, link)?;
        match self.handle().route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, Errno::ESRCH) => Ok(()),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("removing route {destination} from {}", link.name)),
        }
    }
}

/// A scope-link route to `destination` out of `link`. The kernel matches the scope on delete
/// too: a delete without it finds nothing (ESRCH).
fn link_route(destination: IpNetwork, link: &Link) -> Result<RouteMessage> {
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(destination.ip(), destination.prefix())
        .map_err(|e| anyhow!("route to {destination}: {e}"))?
        .output_interface(link.index)
        .scope(RouteScope::Link)
        .build())
}
