//! The `main` of a driver binary: its command line, and everything it opens before serving.

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use clap::Parser;
use netloom_dataplane::Netlink;
use netloom_firewall::{BackendChoice, Firewall};
use netloom_plugin_api::{CommonArgs, NetworkDriver, Plugin, Settings};
use netloom_store::{self as store, DriverRecords};
use tracing::warn;

use crate::record::{Endpoint, Network};
use crate::registry::Registry;

/// The command line of a driver binary: the options every netloom binary has.
#[derive(Parser)]
#[command(version)]
pub struct DriverArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The command line of a driver that programs the firewall.
#[derive(Parser)]
#[command(version)]
pub struct FirewallDriverArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Firewall backend for the driver's forwarding, NAT and published ports: auto (nftables
    /// where the kernel has nf_tables, else iptables), iptables or nftables
    #[arg(long, default_value = "auto", value_name = "auto|iptables|nftables")]
    pub firewall: BackendChoice,
}

/// Parses the command line of the binary `name`, described in `--help` by `about`.
fn parse_args<A: Parser>(name: &'static str, about: &'static str) -> A {
    let matches = A::command().name(name).bin_name(name).about(about).get_matches();
    A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Runs the driver binary `name` whose records are under `kind/<host-id>/` in the store:
/// `start` gets the netlink connection and the loaded records, and the socket opens once it is
/// done (see [`netloom_plugin_api::run`]).
pub async fn serve<N, E, D, F, Fut>(name: &'static str, about: &'static str, kind: &'static str, start: F) -> ExitCode
where
    N: Network,
    E: Endpoint,
    D: NetworkDriver,
    F: FnOnce(Netlink, Registry<N, E>) -> Fut,
    Fut: Future<Output = Result<D>>,
{
    let args: DriverArgs = parse_args(name, about);
    netloom_plugin_api::run(name, &args.common, |settings| async move {
        let (netlink, registry) = open(&settings, name, kind).await?;
        Ok(Plugin::network(start(netlink, registry).await?))
    })
    .await
}

/// [`serve`] for a driver that programs the firewall: `--firewall` picks the backend `start` gets,
/// and the rules `owns` says are the driver's (by firewall id) are swept from the other backend,
/// where a switch of backend left them.
pub async fn serve_with_firewall<N, E, D, F, Fut>(
    name: &'static str,
    about: &'static str,
    kind: &'static str,
    owns: fn(&str) -> bool,
    start: F,
) -> ExitCode
where
    N: Network,
    E: Endpoint,
    D: NetworkDriver,
    F: FnOnce(Netlink, Arc<dyn Firewall>, Registry<N, E>) -> Fut,
    Fut: Future<Output = Result<D>>,
{
    let args: FirewallDriverArgs = parse_args(name, about);
    let opened = Arc::new(OnceLock::new());
    let opened_kind = opened.clone();
    let code = netloom_plugin_api::run(name, &args.common, |settings| async move {
        let (netlink, registry) = open(&settings, name, kind).await?;
        // Resolved here, once logging is up, so that the choice of `auto` is logged.
        let firewall = netloom_firewall::open(args.firewall.resolve()).await.context("setting up the firewall")?;
        let _ = opened_kind.set(firewall.kind());
        // In the background: it touches only the backend not in use, whose rules applied until
        // now anyway, and listing iptables would hold up the socket for tens of milliseconds.
        let in_use = firewall.kind();
        tokio::spawn(async move {
            if let Err(e) = netloom_firewall::sweep_other_backend(in_use, owns).await {
                warn!("sweeping the other firewall backend: {e:#}");
            }
        });
        Ok(Plugin::network(start(netlink, firewall, registry).await?))
    })
    .await;
    // Networks (this driver's or another's) keep their rules and the skeleton; with none left,
    // nothing of netloom stays in the firewall.
    if let Some(kind) = opened.get() {
        if let Err(e) = netloom_firewall::remove_skeleton_if_unused(*kind).await {
            warn!("removing netloom's unused firewall skeleton at exit: {e:#}");
        }
    }
    code
}

/// The store and the driver's records in it, and a netlink connection.
async fn open<N: Network, E: Endpoint>(
    settings: &Settings,
    name: &'static str,
    kind: &str,
) -> Result<(Netlink, Registry<N, E>)> {
    let host_id = settings.host_id()?;
    let store = store::open_with(settings.store.as_deref(), &settings.state_dir, settings.store_options()?)
        .await
        .context("opening the state store")?;
    let netlink = Netlink::connect()?;
    let registry = Registry::load(name, DriverRecords::new(store, kind, &host_id)).await?;
    Ok((netlink, registry))
}
