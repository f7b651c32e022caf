//! Interface addresses.

use std::net::IpAddr;

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};

use crate::{is_errno, Link, Netlink};

impl Netlink {
    /// The addresses on `link`, with their prefix lengths.
    pub async fn addresses(&self, link: &Link) -> Result<Vec<IpNetwork>> {
        let messages: Vec<AddressMessage> = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("listing addresses of {}", link.name))?;
        Ok(messages.iter().filter_map(address_of).collect())
    }

    /// Adds `address` to `link` unless it is already there.
    pub async fn ensure_address(&self, link: &Link, address: IpNetwork) -> Result<()> {
        match self.handle().address().add(link.index, address.ip(), address.prefix()).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, Errno::EEXIST) => Ok(()),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("adding {address} to {}", link.name)),
        }
    }

    pub async fn delete_address(&self, link: &Link, address: IpNetwork) -> Result<()> {
        let messages: Vec<AddressMessage> = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(link.index)
            .set_address_filter(address.ip())
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("looking up {address} on {}", link.name))?;
        for msg in messages {
            match self.handle().address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, Errno::EADDRNOTAVAIL) => {}
                Err(e) => return Err(anyhow!(e)).with_context(|| format!("removing {address} from {}", link.name)),
            }
        }
        Ok(())
    }
}

fn address_of(msg: &AddressMessage) -> Option<IpNetwork> {
    let ip: IpAddr = msg.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })?;
    IpNetwork::new(ip, msg.header.prefix_len).ok()
}
