//! The `main` of a driver binary: everything but its arguments and its constructor.

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use netloom_dataplane::Netlink;
use netloom_firewall::{BackendChoice, Firewall};
use netloom_ipam::store::{self, DriverRecords, Store};
use netloom_plugin_api::{CommonArgs, Plugin};

/// What a driver is built from, opened once logging is up and the state directory is locked.
pub struct Parts {
    pub host_id: String,
    pub store: Arc<dyn Store>,
    pub netlink: Netlink,
}

impl Parts {
    /// This host's records of the driver, under `<kind>/<host-id>/` in the store.
    pub fn records<N, E>(&self, kind: &str) -> DriverRecords<N, E>
    where
        N: store::NetworkRecord,
        E: store::EndpointRecord,
    {
        DriverRecords::new(self.store.clone(), kind, &self.host_id)
    }

    /// The firewall backend `choice` names (auto: resolved here, so its choice is logged).
    pub async fn firewall(&self, choice: BackendChoice) -> Result<Arc<dyn Firewall>> {
        netloom_firewall::open(choice.resolve()).await.context("setting up the firewall")
    }
}

/// Runs the driver binary `name` (see [`netloom_plugin_api::run`]): opens the store and a netlink
/// connection, then serves what `build` makes of them.
pub async fn serve<F, Fut>(name: &'static str, common: &CommonArgs, build: F) -> ExitCode
where
    F: FnOnce(Parts) -> Fut,
    Fut: Future<Output = Result<Plugin>>,
{
    netloom_plugin_api::run(name, common, |settings| async move {
        let host_id = settings.host_id()?;
        let store = store::open(settings.store.as_deref(), &settings.state_dir, store::DEFAULT_PREFIX)
            .await
            .context("opening the state store")?;
        let netlink = Netlink::connect()?;
        build(Parts { host_id, store, netlink }).await
    })
    .await
}
