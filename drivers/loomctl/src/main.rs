//! `loomctl`: asks the netloom drivers on this host, over their plugin sockets, what they hold
//! (`status`), everything about one network (`inspect`), and checks what they need (`doctor`).

mod doctor;
mod gather;
mod inspect;
mod kernel;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use netloom_plugin_api::engine::{Engine, DEFAULT_DOCKER_HOST};

/// How long one driver may take to answer one call.
pub const DRIVER_LIMIT: Duration = Duration::from_secs(4);
/// How long one Engine API call may take.
pub const DOCKER_LIMIT: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(name = "loomctl", version, about = "Status, inspection and checks of the netloom drivers on this host")]
struct Args {
    /// Where the drivers' sockets are (every loom-*.sock is asked)
    #[arg(long, value_name = "DIR", default_value = "/run/docker/plugins", global = true)]
    plugins_dir: PathBuf,

    /// dockerd's Engine API, for Docker's names of the networks: unix:///path or tcp://host:port;
    /// `none`: ids only
    #[arg(long, value_name = "URL", default_value = DEFAULT_DOCKER_HOST, env = "NETLOOM_DOCKER_HOST", global = true)]
    docker_host: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every driver: up or not, version, firewall, store and its health, networks, overlay peers
    Status {
        /// One JSON document instead of tables
        #[arg(long)]
        json: bool,
    },
    /// Everything the driver of one network holds for it (by Docker name or id), as JSON
    Inspect { network: String },
    /// Checks what the drivers need; exits non-zero when something is wrong
    Doctor,
    /// Asks loom-overlay for a new WireGuard key for this host's encrypted networks
    RotateKey,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let engine = match docker(&args.docker_host) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("loomctl: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.command {
        Command::Status { json } => status(&args.plugins_dir, engine.as_ref(), json).await,
        Command::Inspect { network } => inspect::run(&args.plugins_dir, engine.as_ref(), &network).await,
        Command::Doctor => Ok(doctor::run(&args.plugins_dir, engine.as_ref()).await),
        Command::RotateKey => rotate_key(&args.plugins_dir).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loomctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `None` for `none` (or nothing): names are not asked.
fn docker(host: &str) -> anyhow::Result<Option<Engine>> {
    if host.is_empty() || host == "none" {
        return Ok(None);
    }
    Ok(Some(Engine::new(host)?))
}

async fn status(dir: &std::path::Path, engine: Option<&Engine>, json: bool) -> anyhow::Result<ExitCode> {
    let drivers = gather::drivers(dir, engine).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&render::json(&drivers))?);
    } else {
        print!("{}", render::tables(dir, &drivers));
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate_key(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let socket = dir.join("loom-overlay.sock");
    let reply =
        netloom_plugin_api::status::ask_control(&socket, "RotateKey", &serde_json::Value::Null, DRIVER_LIMIT).await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(ExitCode::SUCCESS)
}
