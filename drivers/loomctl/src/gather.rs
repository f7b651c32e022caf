//! What every driver says about itself, with Docker's names for its networks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netloom_plugin_api::engine::{DockerNetwork, Engine};
use netloom_plugin_api::status::{ask_status, sockets_in, StatusReply};

use crate::{DOCKER_LIMIT, DRIVER_LIMIT};

/// One socket and what its driver answered.
#[derive(Debug, Clone)]
pub struct Driver {
    /// The socket's name without `.sock`: Docker's name for the driver.
    pub name: String,
    pub socket: PathBuf,
    /// Why it did not answer.
    pub status: Result<StatusReply, String>,
    /// Docker's networks of this driver (by network driver, or by IPAM driver for an IPAM
    /// plugin); `None` without `--docker-host`, `Err` when dockerd could not be asked.
    pub docker: Option<Result<Vec<DockerNetwork>, String>>,
}

impl Driver {
    pub fn up(&self) -> bool {
        self.status.is_ok()
    }

    /// Docker's names of the networks, by id.
    pub fn docker_names(&self) -> BTreeMap<&str, &str> {
        match &self.docker {
            Some(Ok(networks)) => networks.iter().map(|n| (n.id.as_str(), n.name.as_str())).collect(),
            _ => BTreeMap::new(),
        }
    }

    /// Docker's name for the driver: a managed plugin's is `netloom/loom-bridge:latest`.
    pub fn docker_driver(&self) -> &str {
        match &self.status {
            Ok(status) if !status.docker_driver_name.is_empty() => &status.docker_driver_name,
            _ => &self.name,
        }
    }

    /// Whether this is an IPAM plugin: it says its allocations instead of networks.
    pub fn is_ipam(&self) -> bool {
        self.status.as_ref().is_ok_and(|s| s.details.get("allocations").is_some())
    }
}

/// Every `loom-*.sock` in `dir`, asked side by side.
pub async fn drivers(dir: &Path, engine: Option<&Engine>) -> Vec<Driver> {
    let asked = sockets_in(dir).into_iter().map(|socket| async move {
        let name = socket.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let status = ask_status(&socket, DRIVER_LIMIT).await.map_err(|e| format!("{e:#}"));
        let mut driver = Driver { name, socket, status, docker: None };
        if let (Some(engine), true) = (engine, driver.up()) {
            driver.docker = Some(docker_networks(engine, &driver).await);
        }
        driver
    });
    futures::future::join_all(asked).await
}

async fn docker_networks(engine: &Engine, driver: &Driver) -> Result<Vec<DockerNetwork>, String> {
    let asked = async {
        if driver.is_ipam() {
            engine.networks_of_ipam(driver.docker_driver()).await
        } else {
            engine.networks_of_driver(driver.docker_driver()).await
        }
    };
    match tokio::time::timeout(DOCKER_LIMIT, asked).await {
        Ok(Ok(networks)) => Ok(networks),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("dockerd did not list the networks within {DOCKER_LIMIT:?}")),
    }
}
