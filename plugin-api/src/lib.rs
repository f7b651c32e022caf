//! Docker's CNM remote-plugin protocol for netloom: wire types, the unix-socket server, the
//! socket lifecycle and the command line every netloom binary shares.

pub mod addressing;
pub mod cli;
pub mod client;
pub mod driver;
pub mod engine;
pub mod error;
pub mod host_ports;
pub mod ids;
pub mod locks;
pub mod metrics;
pub mod options;
pub mod port_holder;
pub mod server;
pub mod siblings;
pub mod socket;
pub mod status;
pub mod wire;

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};

pub use cli::{CommonArgs, Settings};
pub use driver::{IpamDriver, NetworkDriver};
pub use error::{PluginError, PluginResult};
pub use server::Plugin;

/// Runs a plugin binary: logging, single-instance checks, `build` (which loads persisted state and
/// reconciles the kernel) and only then the socket, served until SIGTERM or SIGINT.
///
/// The socket appears only once the driver is ready, so dockerd never sees a half-started driver,
/// and a second instance is refused before it touches any state.
pub async fn run<F, Fut>(name: &str, args: &CommonArgs, build: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<Plugin>>,
{
    if let Err(e) = args.init_logging() {
        eprintln!("{name}: {e:#}");
        return ExitCode::from(2);
    }
    match run_inner(name, args, build).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_inner<F, Fut>(name: &str, args: &CommonArgs, build: F) -> anyhow::Result<()>
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<Plugin>>,
{
    let settings = args.settings(name);
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let engine = settings.docker_host.as_deref().map(engine::Engine::new).transpose()?;
    let _lock = socket::StateLock::acquire(&settings.state_dir)?;
    socket::prepare(&settings.socket)?;
    let metrics_listener = match args.metrics_addr() {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    siblings::set_own_socket(&settings.socket);
    status::started(name, &settings.docker_driver_name);
    let started = std::time::Instant::now();
    let plugin = build(settings.clone()).await?;
    let (_bound, listener) = socket::BoundSocket::bind(&settings.socket)?;
    info!(
        socket = %settings.socket.display(),
        state_dir = %settings.state_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        version = env!("CARGO_PKG_VERSION"),
        "{name} listening"
    );

    let shutdown = async {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received, finishing in-flight requests"),
            _ = interrupt.recv() => info!("SIGINT received, finishing in-flight requests"),
        }
    };
    let reconciler = match engine {
        Some(engine) => Some(start_reconciling(engine, &settings, &plugin)),
        None => {
            info!("--docker-host none: not reconciling against Docker");
            None
        }
    };
    let metrics_server = metrics_listener.map(|listener| tokio::spawn(metrics::serve(listener, plugin.clone())));
    server::serve(listener, plugin, shutdown).await;
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    if let Some(reconciler) = reconciler {
        reconciler.stop().await;
    }
    info!("{name} stopped");
    Ok(())
}

/// Starts the loop that removes what Docker no longer has (it ends at once for a plugin whose
/// drivers keep nothing to reconcile). Docker knows the driver by `Settings::docker_driver_name`.
fn start_reconciling(
    engine: engine::Engine,
    settings: &Settings,
    plugin: &Plugin,
) -> engine::reconcile::RunningReconciler {
    let config = engine::ReconcileConfig::every(settings.reconcile_interval);
    engine::Reconciler::new(engine, &settings.docker_driver_name, plugin, config).spawn()
}
