use std::process::ExitCode;

use clap::Parser;
use netloom_plugin_api::{CommonArgs, Plugin};

mod driver;
mod handlers;
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
    netloom_driver_kit::serve(driver::DRIVER, &args.common, |parts| async move {
        let driver = driver::MacvlanDriver::start(parts.netlink.clone(), parts.records("macvlan")).await?;
        Ok(Plugin::network(driver))
    })
    .await
}
