//! Calls that must not hang a request, and the check that keeps one subnet to one network.

use std::future::Future;

use anyhow::Result;
use ipnetwork::IpNetwork;
use netloom_dataplane::Netlink;
use netloom_firewall::Firewall;
use netloom_plugin_api::locks::{bounded, CALL_LIMIT};
use netloom_plugin_api::siblings::{self, ClaimedSubnets};
use netloom_plugin_api::{PluginError, PluginResult};

/// A firewall call that fails its request instead of hanging it.
pub async fn firewall_call<T>(
    firewall: &dyn Firewall,
    what: String,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    bounded(format!("the {} firewall ({what})", firewall.kind()), CALL_LIMIT, call).await
}

/// Refuses `subnets` when they overlap a network in `others` (this driver's other networks), one
/// of a sibling netloom driver, or a route the host already has through an interface other than
/// the one tagged `own_alias`.
pub async fn refuse_overlap(
    netlink: &Netlink,
    subnets: &[IpNetwork],
    others: Vec<ClaimedSubnets>,
    own_alias: Option<&str>,
) -> PluginResult<()> {
    siblings::refuse_overlap(subnets, others).await?;
    match bounded("the kernel's route list", CALL_LIMIT, netlink.route_overlap(subnets, own_alias)).await? {
        Some(why) => Err(PluginError::new(why)),
        None => Ok(()),
    }
}
