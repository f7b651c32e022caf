//! What loom-overlay keeps, and where.
//!
//! In the shared store (etcd or Consul), relative to the store prefix (`/netloom/v1/`):
//!
//! | key | value |
//! |---|---|
//! | `overlay/hosts/<host>` | [`HostRecord`], bound to the host's lease: gone ~15 s after the host stops |
//! | `overlay/networks/<network>` | [`NetworkConfig`] |
//! | `overlay/subnets/<subnet>` | the network key using that subnet (local scope) |
//! | `overlay/peers/<network>/<endpoint>` | [`PeerRecord`]: an endpoint's IP, MAC and VTEP |
//! | `overlay/names/<network>/<endpoint>` | [`NameRecord`]: the container's name and aliases (local scope) |
//! | `overlay/tunnels/<host>` | [`TunnelRecord`]: the host's WireGuard public key, endpoint and tunnel address, while it has encrypted networks |
//! | `overlay/tunnel-ips/<ip>` | the host holding that tunnel address (claimed with a create-if-absent write) |
//!
//! `<network>` is Docker's network id in global scope (the same on every host) and `vni-<N>` in
//! local scope, where each host's `docker network create` gives the network another id.
//!
//! Each host also keeps private records (which Docker network id maps to which network, its
//! endpoints and their interface names: [`LocalNetwork`], [`LocalEndpoint`]) as driver records
//! (`overlay/<host>/…`) in an embedded store in its state directory, not in the shared store, so
//! that the driver restarts, and keeps its dataplane, while the shared store is unreachable.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use netloom_plugin_api::wire::ports::PortBinding;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::options::subnet_key;

pub const ROOT: &str = "overlay/";
pub const HOSTS: &str = "overlay/hosts/";
pub const NETWORKS: &str = "overlay/networks/";
pub const SUBNETS: &str = "overlay/subnets/";
pub const PEERS: &str = "overlay/peers/";
pub const NAMES: &str = "overlay/names/";
pub const TUNNELS: &str = "overlay/tunnels/";
pub const TUNNEL_IPS: &str = "overlay/tunnel-ips/";

pub fn tunnel_key(host: &str) -> String {
    format!("{TUNNELS}{host}")
}

pub fn tunnel_ip_key(ip: IpAddr) -> String {
    format!("{TUNNEL_IPS}{ip}")
}

pub fn host_key(host: &str) -> String {
    format!("{HOSTS}{host}")
}

pub fn network_key(network: &str) -> String {
    format!("{NETWORKS}{network}")
}

pub fn subnet_index_key(subnet: &IpNetwork) -> String {
    format!("{SUBNETS}{}", subnet_key(subnet))
}

pub fn peers_prefix(network: &str) -> String {
    format!("{PEERS}{network}/")
}

pub fn peer_key(network: &str, endpoint: &str) -> String {
    format!("{PEERS}{network}/{endpoint}")
}

pub fn names_prefix(network: &str) -> String {
    format!("{NAMES}{network}/")
}

pub fn name_key(network: &str, endpoint: &str) -> String {
    format!("{NAMES}{network}/{endpoint}")
}

/// The network key a local-scope network with `vni` has on every host.
pub fn local_network_key(vni: u32) -> String {
    format!("vni-{vni}")
}

/// The owner name under which the network's VNI is held in the IPAM's VNI table.
pub fn vni_owner(network: &str) -> String {
    format!("overlay:{network}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Docker 23+: every host creates the network itself.
    Local,
    /// Docker 20.10 with a cluster store: one host creates it, every host sees it.
    Global,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Local => "local",
            Mode::Global => "global",
        })
    }
}

/// A network as every host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub key: String,
    pub mode: Mode,
    pub vni: u32,
    pub subnet_v4: Option<IpNetwork>,
    pub subnet_v6: Option<IpNetwork>,
    /// The containers' MTU.
    pub mtu: u32,
    /// `--internal`: no docker_gwbridge leg.
    #[serde(default)]
    pub internal: bool,
    /// `-o encrypted`: its VXLAN traffic between hosts rides in the hosts' WireGuard tunnels.
    #[serde(default)]
    pub encrypted: bool,
    pub created_by: String,
    pub created_at: u64,
    /// Local scope: host → its Docker network id, for every host that created the network; the
    /// record goes when the last one removes it.
    #[serde(default)]
    pub members: BTreeMap<String, String>,
}

impl NetworkConfig {
    pub fn subnets(&self) -> Vec<IpNetwork> {
        self.subnet_v4.into_iter().chain(self.subnet_v6).collect()
    }
}

/// One endpoint, as every other host needs it to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub host: String,
    pub endpoint: String,
    /// The host's tunnel endpoint.
    pub vtep: IpAddr,
    pub port: u16,
    pub mac: String,
    pub ipv4: Option<IpAddr>,
    pub ipv6: Option<IpAddr>,
}

/// The names Docker gives an endpoint's container on the host holding it, answered by every
/// host's DNS server while the endpoint's [`PeerRecord`] (its addresses) exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub host: String,
    pub endpoint: String,
    pub container: String,
    /// Without Docker's leading '/'.
    pub name: String,
    /// The container's aliases on the network (`--network-alias`, the short id).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The Docker network's name on the holding host (`<name>.<network name>` is answered).
    pub network_name: String,
}

/// A host's end of the encrypted overlays: what the others need to reach it through WireGuard.
/// Written when its first encrypted network appears, deleted with its last (or, for a host gone
/// for good, with its peer records). Only public data: the private key stays in the host's state
/// directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRecord {
    /// Standard base64, as `wg` prints keys.
    pub public_key: String,
    /// Its WireGuard UDP socket on the underlay.
    pub endpoint: std::net::SocketAddr,
    /// Its address inside the tunnel namespace: the VTEP of its encrypted networks.
    pub tunnel_ip: IpAddr,
}

/// A live host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub vtep: IpAddr,
    pub port: u16,
    pub pid: u32,
    pub version: String,
    pub started_at: u64,
}

/// This host's view of a Docker network (private record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalNetwork {
    pub docker_id: String,
    /// The cluster-wide key, and the configuration as last seen.
    pub config: NetworkConfig,
}

/// One of this host's endpoints (private record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    pub id: String,
    pub docker_network: String,
    pub network: String,
    /// The veth end Docker moves into the container (in the host namespace until then).
    pub container_veth: String,
    /// The veth end on the network's bridge, inside the network's namespace.
    pub bridge_veth: String,
    pub mac: String,
    pub ipv4: Option<IpNetwork>,
    pub ipv6: Option<IpNetwork>,
    /// `-p` bindings from Join, published on docker_gwbridge.
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// The container's docker_gwbridge address, once seen.
    #[serde(default)]
    pub gateway_ip: Option<IpAddr>,
}

impl netloom_store::NetworkRecord for LocalNetwork {
    fn network_id(&self) -> &str {
        &self.docker_id
    }
}

impl netloom_store::EndpointRecord for LocalEndpoint {
    fn network_id(&self) -> &str {
        &self.docker_network
    }

    fn endpoint_id(&self) -> &str {
        &self.id
    }
}

impl LocalEndpoint {
    pub fn peer(&self, host: &str, vtep: IpAddr, port: u16) -> PeerRecord {
        PeerRecord {
            host: host.to_string(),
            endpoint: self.id.clone(),
            vtep,
            port,
            mac: self.mac.clone(),
            ipv4: self.ipv4.map(|a| a.ip()),
            ipv6: self.ipv6.map(|a| a.ip()),
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings, numbers and addresses: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("store key {key} holds data loom-overlay cannot read"))
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub use netloom_plugin_api::addressing::short_id as short;
