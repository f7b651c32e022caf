//! Routes through a link (host-routed endpoints) and via a gateway.

use std::net::IpAddr;

use anyhow::{anyhow, Context, Result};
use ipnetwork::IpNetwork;
use rtnetlink::RouteMessageBuilder;

use crate::{is_errno, Link, Netlink, EEXIST, ESRCH};

impl Netlink {
    /// Routes `destination` out of `link` (a scope-link route), replacing a different one.
    pub async fn ensure_link_route(&self, destination: IpNetwork, link: &Link) -> Result<()> {
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination.ip(), destination.prefix())
            .map_err(|e| anyhow!("route to {destination}: {e}"))?
            .output_interface(link.index)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        match self.handle().route().add(message).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, EEXIST) => Ok(()),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("routing {destination} to {}", link.name)),
        }
    }

    pub async fn delete_link_route(&self, destination: IpNetwork, link: &Link) -> Result<()> {
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(destination.ip(), destination.prefix())
            .map_err(|e| anyhow!("route to {destination}: {e}"))?
            .output_interface(link.index)
            // The kernel matches the scope too: a delete without it finds nothing (ESRCH).
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .build();
        match self.handle().route().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, ESRCH) => Ok(()),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("removing route {destination} from {}", link.name)),
        }
    }
}
