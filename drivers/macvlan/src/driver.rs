//! loom-macvlan's own part: a macvlan link per endpoint on the network's parent, made at Join
//! and removed at DeleteEndpoint; no bridge, no NAT, no published ports. What every driver does
//! the same way (records, turns, restore, leftovers) is the driver kit's.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::Result;
use netloom_dataplane::Netlink;
use netloom_driver_kit::{leftovers, restore, Endpoint, Registry, Snapshot};
use netloom_plugin_api::addressing::short_id;
use netloom_plugin_api::locks::Turn;
use netloom_plugin_api::PluginResult;
use tracing::warn;

use crate::parent;
use crate::state::{EndpointRecord, NetworkRecord, OWNER_PREFIX};

pub const DRIVER: &str = "loom-macvlan";

/// The key CreateNetwork and DeleteNetwork take besides their network's: parents are shared
/// between networks, so their checks must see finished networks.
const PARENTS: &str = "\0parents";

pub struct MacvlanDriver {
    pub(crate) netlink: Netlink,
    pub(crate) registry: Registry<NetworkRecord, EndpointRecord>,
}

impl MacvlanDriver {
    /// Reconciles the kernel with the records before the socket opens.
    pub async fn start(netlink: Netlink, registry: Registry<NetworkRecord, EndpointRecord>) -> Result<Self> {
        let driver = Self { netlink, registry };
        driver.reconcile(&driver.registry.snapshot()).await;
        Ok(driver)
    }

    /// The turn network creations and removals take before their network's.
    pub(crate) async fn parents_turn(&self, doing: String) -> PluginResult<Turn> {
        self.registry.turn_on(PARENTS, "other loom-macvlan network creations and removals", doing).await
    }

    /// The other networks, whose parents a network may share.
    pub(crate) fn others(&self, network_id: &str) -> Vec<NetworkRecord> {
        self.registry.maps().networks.values().filter(|n| n.id != network_id).cloned().collect()
    }

    async fn reconcile(&self, state: &Snapshot<NetworkRecord, EndpointRecord>) {
        let started = Instant::now();
        for net in state.networks.values() {
            if let Err(e) = parent::ensure(&self.netlink, net).await {
                warn!(network = %short_id(&net.id), "could not restore the parent interface: {e:#}");
            }
        }
        // An endpoint's macvlan is either in its container (invisible here) or back in this
        // namespace waiting for DeleteEndpoint; both are fine. Links tagged as ours that no record
        // explains are leftovers of a crash.
        let owners = state.owners();
        let parents: BTreeSet<&str> = state.networks.values().map(|n| n.parent.name()).collect();
        let keep = |link: &netloom_dataplane::Link, owner: &str| {
            owners.contains(owner) || parents.contains(link.name.as_str())
        };
        leftovers::sweep_links(&self.netlink, OWNER_PREFIX, keep).await;
        restore::done(started, state.networks.len(), state.endpoints.len());
    }

    /// Deletes the endpoint's macvlan if it is back in this namespace (it is destroyed with its
    /// container's namespace otherwise).
    pub(crate) async fn remove_link(&self, ep: &EndpointRecord) -> Result<()> {
        leftovers::delete_owned_link(&self.netlink, &ep.link, &ep.owner()).await
    }
}
