use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use netloom_ipam::driver::IpamPlugin;
use netloom_ipam::{store, DefaultPool, Ipam, IpamConfig};
use netloom_plugin_api::{CommonArgs, Plugin};

/// netloom's remote IPAM driver: pools and addresses shared by every host on the same store.
#[derive(Parser)]
#[command(name = "loom-ipam", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// This host's id, recorded with its pools and addresses [default: a random id kept in
    /// <state-dir>/host-id; host names are not used, since two hosts may share one]
    #[arg(long, value_name = "ID", env = "NETLOOM_HOST_ID")]
    host_id: Option<String>,

    /// Where LocalDefault pools are carved from, repeatable; replaces Docker's defaults
    /// (172.17.0.0/16 … 172.31.0.0/16, then 192.168.0.0/16 in /20s). IPv6 bases are allowed.
    #[arg(long = "default-pool", value_name = "base=CIDR,size=N")]
    default_pools: Vec<DefaultPool>,

    /// Where GlobalDefault pools are carved from, repeatable; replaces 10.0.0.0/8 in /24s
    #[arg(long = "global-default-pool", value_name = "base=CIDR,size=N")]
    global_default_pools: Vec<DefaultPool>,
}

fn config(args: &Args) -> IpamConfig {
    let mut config = IpamConfig::default();
    if !args.default_pools.is_empty() {
        config.default_pools.insert(config.local_space.clone(), args.default_pools.clone());
    }
    if !args.global_default_pools.is_empty() {
        config.default_pools.insert(config.global_space.clone(), args.global_default_pools.clone());
    }
    config
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = config(&args);
    let host_id = args.host_id.clone();
    netloom_plugin_api::run("loom-ipam", &args.common, |settings| async move {
        let host = match host_id {
            Some(id) => id,
            None => settings.host_id()?,
        };
        let store = store::open_with(settings.store.as_deref(), &settings.state_dir, settings.store_options()?)
            .await
            .context("opening the store")?;
        let ipam = Ipam::new(store, &host, config).await.context("starting the IPAM")?;
        Ok(Plugin::ipam(IpamPlugin::new(Arc::new(ipam))))
    })
    .await
}
