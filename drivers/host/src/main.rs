use std::process::ExitCode;

use clap::Parser;
use netloom_firewall::BackendChoice;
use netloom_plugin_api::{CommonArgs, Plugin};

mod driver;
mod handlers;
mod options;
mod plumbing;
mod policy;
mod state;

/// Host-routed container networking: a veth per container, a route per container address on the
/// host, a link-local gateway; no bridge and no NAT unless asked for.
#[derive(Parser)]
#[command(name = "loom-host", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// Firewall backend for forwarding and masquerade: auto (nftables where the kernel
    /// has nf_tables, else iptables), iptables or nftables
    #[arg(long, default_value = "auto", value_name = "auto|iptables|nftables")]
    firewall: BackendChoice,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    netloom_driver_kit::serve(driver::DRIVER, &args.common, |parts| async move {
        let firewall = parts.firewall(args.firewall).await?;
        let driver = driver::HostDriver::start(parts.netlink.clone(), firewall, parts.records("host")).await?;
        Ok(Plugin::network(driver))
    })
    .await
}
