use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use netloom_ipam::store;
use netloom_plugin_api::{CommonArgs, Plugin};

mod driver;
mod options;
mod parent;
mod state;

/// Docker's macvlan network as a remote driver: every container gets a macvlan link with its own
/// MAC address on a host interface's segment (`-o parent=eth0`, or `eth0.50` for a VLAN).
#[derive(Parser)]
#[command(name = "loom-macvlan", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    netloom_plugin_api::run("loom-macvlan", &args.common, |settings| async move {
        let host_id = settings.host_id()?;
        let store = store::open(settings.store.as_deref(), &settings.state_dir, store::DEFAULT_PREFIX)
            .await
            .context("opening the state store")?;
        let netlink = netloom_dataplane::Netlink::connect()?;
        let records = state::Records::new(store, "macvlan", &host_id);
        let driver = driver::MacvlanDriver::start(netlink, records).await?;
        Ok(Plugin::network(driver))
    })
    .await
}
