use std::process::ExitCode;

use clap::Parser;
use netloom_firewall::BackendChoice;
use netloom_plugin_api::{CommonArgs, Plugin};

mod driver;
mod handlers;
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
    netloom_driver_kit::serve(driver::DRIVER, &args.common, |parts| async move {
        let firewall = parts.firewall(args.firewall).await?;
        let driver = driver::BridgeDriver::start(parts.netlink.clone(), firewall, parts.records("bridge")).await?;
        Ok(Plugin::network(driver))
    })
    .await
}
