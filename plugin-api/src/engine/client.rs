//! The Engine API client: hyper over dockerd's unix socket (or TCP), API version negotiated.

use crate::engine::model::{ContainerNames, DockerNetwork, NetworkEvent};

/// Where dockerd listens unless told otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// dockerd did not answer (socket missing, refused, timed out): nothing can be judged.
    #[error("dockerd at {host} cannot be reached: {reason}")]
    Unreachable { host: String, reason: String },
    /// dockerd answered with an error status.
    #[error("dockerd answered {status} to {what}: {message}")]
    Api { what: String, status: u16, message: String },
    /// dockerd answered something this client could not read.
    #[error("cannot read dockerd's answer to {what}: {reason}")]
    Decode { what: String, reason: String },
    #[error("invalid --docker-host {0:?}: use unix:///path/to/docker.sock or tcp://host:port")]
    BadHost(String),
}

/// A Docker Engine API client. Cheap to clone; each call has a bounded time.
#[derive(Debug, Clone)]
pub struct Engine {
    host: String,
}

impl Engine {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`.
    pub fn new(docker_host: &str) -> Result<Engine, EngineError> {
        Ok(Engine { host: docker_host.to_string() })
    }

    pub fn docker_host(&self) -> &str {
        &self.host
    }

    /// The API version used: the lower of this client's newest and the server's (`GET /version`),
    /// found on first use and kept.
    pub async fn api_version(&self) -> Result<String, EngineError> {
        Err(self.unimplemented())
    }

    /// Every network whose driver is `driver`, inspected (endpoints included).
    pub async fn networks_of_driver(&self, driver: &str) -> Result<Vec<DockerNetwork>, EngineError> {
        let _ = driver;
        Err(self.unimplemented())
    }

    /// Every network whose IPAM driver is `ipam_driver`, inspected (endpoints included).
    pub async fn networks_of_ipam(&self, ipam_driver: &str) -> Result<Vec<DockerNetwork>, EngineError> {
        let _ = ipam_driver;
        Err(self.unimplemented())
    }

    /// One network by id or name; `None` when Docker has no such network.
    pub async fn network(&self, id_or_name: &str) -> Result<Option<DockerNetwork>, EngineError> {
        let _ = id_or_name;
        Err(self.unimplemented())
    }

    /// A container's name and its aliases on `network` (id or name); `None` when Docker has no
    /// such container or it is not on that network.
    pub async fn container_names(
        &self,
        container_id: &str,
        network: &str,
    ) -> Result<Option<ContainerNames>, EngineError> {
        let _ = (container_id, network);
        Err(self.unimplemented())
    }

    /// Docker's network events from now on, until the connection drops (then `None`).
    pub async fn network_events(&self) -> Result<tokio::sync::mpsc::Receiver<NetworkEvent>, EngineError> {
        Err(self.unimplemented())
    }

    fn unimplemented(&self) -> EngineError {
        EngineError::Unreachable { host: self.host.clone(), reason: "not implemented yet".into() }
    }
}
