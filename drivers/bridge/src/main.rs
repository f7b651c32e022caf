use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use netloom_firewall::BackendChoice;
use netloom_ipam::store;
use netloom_plugin_api::{CommonArgs, Plugin};

mod driver;
mod options;
mod state;

/// Docker's bridge network as a remote driver: a Linux bridge per network, NAT, isolation and
/// published ports in the kernel.
#[derive(Parser)]
#[command(name = "loom-bridge", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Firewall backend for NAT, isolation and published ports: auto (nftables where the kernel
    /// has nf_tables, else iptables), iptables or nftables
    #[arg(long, default_value = "auto", value_name = "auto|iptables|nftables")]
    firewall: BackendChoice,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let firewall = args.firewall;
    netloom_plugin_api::run("loom-bridge", &args.common, |settings| async move {
        let host_id = settings.host_id()?;
        let store = store::open(settings.store.as_deref(), &settings.state_dir, store::DEFAULT_PREFIX)
            .await
            .context("opening the state store")?;
        let netlink = netloom_dataplane::Netlink::connect()?;
        let firewall = netloom_firewall::open(firewall.resolve()).await.context("setting up the firewall")?;
        let records = state::Records::new(store, "bridge", &host_id);
        let driver = driver::BridgeDriver::start(netlink, firewall, records).await?;
        Ok(Plugin::network(driver))
    })
    .await
}
