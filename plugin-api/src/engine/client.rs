//! The Engine API client: hyper over dockerd's unix socket (or TCP), API version negotiated.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::engine::decode::{RawContainer, RawInfo, RawNetwork, RawVersion};
use crate::engine::events;
use crate::engine::http::{query_value, Target};
use crate::engine::model::{ContainerNames, DockerNetwork, NetworkEvent};

/// Where dockerd listens unless told otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The newest API version this client was written for (Docker 25; `DNSNames` appeared here).
/// Docker 20.10 speaks 1.41 and is asked in 1.41.
const NEWEST_API: (u32, u32) = (1, 44);

/// Every call, and the start of the event stream, must be answered within this.
const CALL_LIMIT: Duration = Duration::from_secs(10);

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
    target: Arc<Target>,
    /// `1.41`, once a dockerd told its version; forgotten when dockerd cannot be reached (the
    /// one that comes back may be another version).
    version: Arc<Mutex<Option<String>>>,
}

impl Engine {
    /// `unix:///path`, `tcp://host:port` or `http://host:port`.
    pub fn new(docker_host: &str) -> Result<Engine, EngineError> {
        let target = Target::parse(docker_host).ok_or_else(|| EngineError::BadHost(docker_host.to_string()))?;
        Ok(Engine { host: docker_host.to_string(), target: Arc::new(target), version: Arc::default() })
    }

    pub fn docker_host(&self) -> &str {
        &self.host
    }

    /// The API version used: the lower of this client's newest and the server's (`GET /version`),
    /// found on first use and kept.
    pub async fn api_version(&self) -> Result<String, EngineError> {
        if let Some(version) = self.version.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(version);
        }
        let answer: RawVersion = self.get_json("/version").await?;
        let server = parse_version(&answer.api_version).ok_or_else(|| EngineError::Decode {
            what: "GET /version".into(),
            reason: format!("ApiVersion {:?} is not a version", answer.api_version),
        })?;
        let (major, minor) = server.min(NEWEST_API);
        let version = format!("{major}.{minor}");
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = Some(version.clone());
        Ok(version)
    }

    /// Every network whose driver is `driver`, inspected (endpoints included).
    pub async fn networks_of_driver(&self, driver: &str) -> Result<Vec<DockerNetwork>, EngineError> {
        let filters = serde_json::json!({ "driver": [driver] }).to_string();
        let path = format!("/networks?filters={}", query_value(&filters));
        let listed: Vec<RawNetwork> = self.get_versioned(&path).await?;
        self.inspect_each(listed.into_iter().filter(|n| n.driver == driver)).await
    }

    /// Every network whose IPAM driver is `ipam_driver`, inspected (endpoints included).
    pub async fn networks_of_ipam(&self, ipam_driver: &str) -> Result<Vec<DockerNetwork>, EngineError> {
        let listed: Vec<RawNetwork> = self.get_versioned("/networks").await?;
        self.inspect_each(listed.into_iter().filter(|n| n.ipam_driver() == ipam_driver)).await
    }

    /// The subnets of every network dockerd has (one list call, nothing inspected).
    pub async fn local_subnets(&self) -> Result<Vec<ipnetwork::IpNetwork>, EngineError> {
        let listed: Vec<RawNetwork> = self.get_versioned("/networks").await?;
        Ok(listed.into_iter().flat_map(|n| n.into_model().pools).filter_map(|pool| pool.subnet).collect())
    }

    /// One network by id or name; `None` when Docker has no such network.
    pub async fn network(&self, id_or_name: &str) -> Result<Option<DockerNetwork>, EngineError> {
        let path = format!("/networks/{}", query_value(id_or_name));
        Ok(self.get_versioned_opt::<RawNetwork>(&path).await?.map(RawNetwork::into_model))
    }

    /// A container's name and its aliases on `network` (id or name); `None` when Docker has no
    /// such container or it is not on that network.
    pub async fn container_names(
        &self,
        container_id: &str,
        network: &str,
    ) -> Result<Option<ContainerNames>, EngineError> {
        let path = format!("/containers/{}/json", query_value(container_id));
        Ok(self.get_versioned_opt::<RawContainer>(&path).await?.and_then(|c| c.names_on(network)))
    }

    /// Like [`Self::container_names`], with every address the container has on any network of
    /// this host (the source of its packets to the host depends on its default route).
    pub async fn container_on(
        &self,
        container_id: &str,
        network: &str,
    ) -> Result<Option<(ContainerNames, Vec<std::net::IpAddr>)>, EngineError> {
        let path = format!("/containers/{}/json", query_value(container_id));
        let Some(container) = self.get_versioned_opt::<RawContainer>(&path).await? else { return Ok(None) };
        let addresses = container.addresses();
        Ok(container.names_on(network).map(|names| (names, addresses)))
    }

    /// The cluster store dockerd was started with (`--cluster-store`, Docker 20.10 and older);
    /// `None` without one, and always on Docker 23 and later.
    pub async fn cluster_store(&self) -> Result<Option<String>, EngineError> {
        let info: RawInfo = self.get_versioned("/info").await?;
        Ok(info.cluster_store.filter(|s| !s.is_empty()))
    }

    /// Docker's network events from now on, until the connection drops (then `None`).
    pub async fn network_events(&self) -> Result<tokio::sync::mpsc::Receiver<NetworkEvent>, EngineError> {
        let filters = serde_json::json!({ "type": ["network"] }).to_string();
        let path = format!("/v{}/events?filters={}", self.api_version().await?, query_value(&filters));
        let response = self.target.stream(&path, CALL_LIMIT).await.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = http_body_util::BodyExt::collect(response.into_body()).await.map(|b| b.to_bytes());
            return Err(api_error(&path, status, &body.unwrap_or_default()));
        }
        Ok(events::forward(response.into_body()))
    }

    /// Inspects each listed network; one removed since the list was made is left out.
    async fn inspect_each(&self, listed: impl Iterator<Item = RawNetwork>) -> Result<Vec<DockerNetwork>, EngineError> {
        let mut networks = Vec::new();
        for network in listed {
            let path = format!("/networks/{}", query_value(&network.id));
            if let Some(inspected) = self.get_versioned_opt::<RawNetwork>(&path).await? {
                networks.push(inspected.into_model());
            }
        }
        Ok(networks)
    }

    async fn get_versioned<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        let path = format!("/v{}{path}", self.api_version().await?);
        self.get_json(&path).await
    }

    /// Like `get_versioned`, with 404 as `None`.
    async fn get_versioned_opt<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, EngineError> {
        match self.get_versioned(path).await {
            Ok(value) => Ok(Some(value)),
            Err(EngineError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        let (status, body) = self.target.get(path, CALL_LIMIT).await.map_err(|e| self.unreachable(e))?;
        if !(200..300).contains(&status) {
            return Err(api_error(path, status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| EngineError::Decode { what: format!("GET {path}"), reason: e.to_string() })
    }

    fn unreachable(&self, reason: String) -> EngineError {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = None;
        EngineError::Unreachable { host: self.host.clone(), reason }
    }
}

/// dockerd's `{"message": ...}` error body, or the body as text.
fn api_error(path: &str, status: u16, body: &[u8]) -> EngineError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    EngineError::Api { what: format!("GET {path}"), status, message }
}

/// `1.41` -> (1, 41).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
