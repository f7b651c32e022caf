//! `loomctl inspect NETWORK`: Docker's view of the network (when dockerd can be asked) and
//! everything its driver holds for it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use netloom_plugin_api::engine::{DockerNetwork, Engine};
use netloom_plugin_api::status::{ask_inspect, sockets_in};
use serde_json::{json, Value};

use crate::{DOCKER_LIMIT, DRIVER_LIMIT};

pub async fn run(dir: &Path, engine: Option<&Engine>, wanted: &str) -> Result<ExitCode> {
    let docker = match engine {
        Some(engine) => match tokio::time::timeout(DOCKER_LIMIT, engine.network(wanted)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                eprintln!("loomctl: asking dockerd for {wanted}: {e}; asking every driver by id");
                None
            }
            Err(_) => None,
        },
        None => None,
    };
    let (driver, held) = match &docker {
        Some(network) => {
            let socket = socket_of(dir, &network.driver).await.with_context(|| {
                format!("network {wanted} is a {} network, and no netloom driver here serves it", network.driver)
            })?;
            (network.driver.clone(), ask_inspect(&socket, &network.id, DRIVER_LIMIT).await?)
        }
        None => ask_every_driver(dir, wanted).await?,
    };
    let mut out = json!({ "driver": driver, "held": held });
    if let Some(network) = &docker {
        out["id"] = json!(network.id);
        out["name"] = json!(network.name);
        out["docker"] = docker_view(network);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// The socket of the driver Docker calls `driver`: `<dir>/<driver>.sock`, else the one whose
/// status says so (a managed plugin's socket is under its plugin id).
async fn socket_of(dir: &Path, driver: &str) -> Option<PathBuf> {
    let plain = dir.join(format!("{driver}.sock"));
    if plain.exists() {
        return Some(plain);
    }
    let drivers = crate::gather::drivers(dir, None).await;
    drivers.into_iter().find(|d| d.up() && d.docker_driver() == driver).map(|d| d.socket)
}

/// Docker does not know `wanted` (or cannot be asked): the first driver that holds it answers.
async fn ask_every_driver(dir: &Path, wanted: &str) -> Result<(String, Value)> {
    let mut refusals = Vec::new();
    for socket in sockets_in(dir) {
        let name = socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        match ask_inspect(&socket, wanted, DRIVER_LIMIT).await {
            Ok(held) => return Ok((name, held)),
            Err(e) => refusals.push(format!("{name}: {e:#}")),
        }
    }
    if refusals.is_empty() {
        bail!("no netloom driver socket (loom-*.sock) in {}", dir.display());
    }
    bail!("no driver holds network {wanted}:\n  {}", refusals.join("\n  "))
}

fn docker_view(network: &DockerNetwork) -> Value {
    let containers: Vec<Value> = network
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "container": e.container_id,
                "endpoint": e.endpoint_id,
                "ipv4": e.ipv4.map(|a| a.to_string()),
                "ipv6": e.ipv6.map(|a| a.to_string()),
                "mac": e.mac,
            })
        })
        .collect();
    let subnets: Vec<String> = network.pools.iter().filter_map(|p| p.subnet).map(|s| s.to_string()).collect();
    json!({
        "scope": network.scope,
        "internal": network.internal,
        "ipam_driver": network.ipam_driver,
        "subnets": subnets,
        "options": network.options,
        "containers": containers,
    })
}
