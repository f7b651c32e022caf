//! What the Engine API tells about networks and endpoints, reduced to what netloom needs.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;

/// One network as `GET /networks/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerNetwork {
    pub id: String,
    pub name: String,
    /// The network driver's name (`loom-bridge`, or the socket name a plugin was started under).
    pub driver: String,
    /// `local`, `global` (Docker 20.10's cluster store) or `swarm`.
    pub scope: String,
    pub internal: bool,
    /// The IPAM driver's name (`default`, `loom-ipam`, ...).
    pub ipam_driver: String,
    pub pools: Vec<DockerPool>,
    pub options: BTreeMap<String, String>,
    /// The endpoints Docker has on this network on this host (containers and endpoints not yet
    /// joined to a container alike).
    pub endpoints: Vec<DockerEndpoint>,
}

/// One `IPAM.Config` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerPool {
    pub subnet: Option<IpNetwork>,
    pub ip_range: Option<IpNetwork>,
    pub gateway: Option<std::net::IpAddr>,
    /// `--aux-address` entries: addresses Docker took from the pool for something else.
    pub aux_addresses: Vec<std::net::IpAddr>,
}

/// One entry of a network's `Containers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerEndpoint {
    pub endpoint_id: String,
    /// Empty for an endpoint not joined to a container (Docker lists it as `ep-<id>`).
    pub container_id: String,
    /// The container's name without Docker's leading '/'; empty when there is no container.
    pub name: String,
    pub ipv4: Option<IpNetwork>,
    pub ipv6: Option<IpNetwork>,
    pub mac: Option<String>,
}

/// A container's names on one network: what a DNS name or `loomctl` shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNames {
    /// Without Docker's leading '/'.
    pub name: String,
    /// The network's aliases for this container (`--network-alias`, and on Docker 26 the short id).
    pub aliases: Vec<String>,
}

/// One event of `GET /events` with `type=network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkEvent {
    /// `create`, `connect`, `disconnect`, `destroy`, `remove`, ...
    pub action: String,
    pub network_id: String,
    pub network_name: Option<String>,
    /// The network's driver (`type` attribute).
    pub driver: Option<String>,
    /// The container of a connect/disconnect.
    pub container_id: Option<String>,
}

/// A container name as users type it: Docker keeps names with a leading '/'.
pub fn container_name(raw: &str) -> String {
    raw.trim_start_matches('/').to_string()
}

/// The container id behind a key of a network's `Containers`: Docker lists an endpoint that is
/// not joined to a container under `ep-<endpoint id>`, which names no container.
pub fn container_id_of_key(key: &str) -> String {
    if key.starts_with("ep-") {
        String::new()
    } else {
        key.to_string()
    }
}

impl ContainerNames {
    /// `name` without its leading '/', and the aliases Docker reports (`Aliases`, and from API
    /// 1.44 `DNSNames`, which also holds the name), each once, without the name itself.
    pub fn new(raw_name: &str, aliases: impl IntoIterator<Item = String>) -> ContainerNames {
        let name = container_name(raw_name);
        let mut unique = Vec::new();
        for alias in aliases {
            if !alias.is_empty() && alias != name && !unique.contains(&alias) {
                unique.push(alias);
            }
        }
        ContainerNames { name, aliases: unique }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_the_leading_slash_and_aliases_are_unique() {
        let names = ContainerNames::new(
            "/web",
            ["front".to_string(), "web".into(), "0123456789ab".into(), "front".into(), String::new()],
        );
        assert_eq!(names, ContainerNames { name: "web".into(), aliases: vec!["front".into(), "0123456789ab".into()] });
        assert_eq!(container_name("web"), "web");
    }

    #[test]
    fn endpoint_keys_without_a_container_name_none() {
        assert_eq!(container_id_of_key("ep-4f1c"), "");
        assert_eq!(container_id_of_key("9d2e77"), "9d2e77");
    }
}
