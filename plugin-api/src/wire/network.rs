//! `NetworkDriver.*` requests and responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json::{is_false, null_as_default};

/// Option keys Docker puts in the top level of CreateNetwork's `Options`.
pub mod option_keys {
    pub const GENERIC: &str = "com.docker.network.generic";
    pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
    pub const ENABLE_IPV4: &str = "com.docker.network.enable_ipv4";
    pub const INTERNAL: &str = "com.docker.network.internal";
    pub const PORTMAP: &str = "com.docker.network.portmap";
    pub const EXPOSED_PORTS: &str = "com.docker.network.endpoint.exposedports";
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Local,
    Global,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CapabilitiesResponse {
    #[serde(rename = "Scope")]
    pub scope: Scope,
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: Scope,
}

/// One address pool of a network, as IPAM handed it to Docker.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpamData {
    #[serde(rename = "AddressSpace", default)]
    pub address_space: String,
    /// The pool in CIDR form.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// The gateway with the pool's prefix length, e.g. `172.18.0.1/16`.
    #[serde(rename = "Gateway", default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(rename = "AuxAddresses", default, deserialize_with = "null_as_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// CreateNetwork's top-level `Options`: a few typed keys plus the user's `-o` pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct NetworkOptions(pub Map<String, Value>);

impl NetworkOptions {
    /// The user's `-o key=value` pairs (`com.docker.network.generic`).
    pub fn generic(&self) -> BTreeMap<String, String> {
        match self.0.get(option_keys::GENERIC) {
            Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), value_to_string(v))).collect(),
            _ => BTreeMap::new(),
        }
    }

    pub fn enable_ipv6(&self) -> bool {
        self.flag(option_keys::ENABLE_IPV6)
    }

    pub fn internal(&self) -> bool {
        self.flag(option_keys::INTERNAL)
    }

    fn flag(&self, key: &str) -> bool {
        match self.0.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        }
    }
}

/// Docker sends option values as strings, but swarm and newer daemons may send other JSON types.
fn value_to_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: NetworkOptions,
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpamData>,
}

/// Requests that name only a network: DeleteNetwork, FreeNetwork.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AllocateNetworkRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpamData>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocateNetworkResponse {
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
}

/// The endpoint's interface as Docker's IPAM filled it in; empty strings mean "not set".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointInterface {
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", default, skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(rename = "MacAddress", default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateEndpointRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default, deserialize_with = "null_as_default")]
    pub interface: EndpointInterface,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

/// CreateEndpoint's answer: only fields Docker left empty may be filled in.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none", default)]
    pub interface: Option<EndpointInterface>,
}

/// Requests that name an endpoint: DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointOperInfoResponse {
    #[serde(rename = "Value")]
    pub value: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JoinRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
    /// The sandbox's labels; port data lives under `com.docker.network.portmap`.
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceName {
    /// Host-side name of the interface Docker moves into the sandbox.
    #[serde(rename = "SrcName")]
    pub src_name: String,
    /// Docker renames the interface to this prefix plus an index (`eth` → `eth0`).
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(into = "u8", try_from = "u8")]
pub enum RouteType {
    NextHop,
    Connected,
}

impl From<RouteType> for u8 {
    fn from(kind: RouteType) -> u8 {
        match kind {
            RouteType::NextHop => 0,
            RouteType::Connected => 1,
        }
    }
}

impl TryFrom<u8> for RouteType {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            0 => Ok(RouteType::NextHop),
            1 => Ok(RouteType::Connected),
            other => Err(format!("unknown RouteType {other}")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaticRoute {
    #[serde(rename = "Destination")]
    pub destination: String,
    #[serde(rename = "RouteType")]
    pub route_type: RouteType,
    #[serde(rename = "NextHop", default, skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName", skip_serializing_if = "Option::is_none", default)]
    pub interface_name: Option<InterfaceName>,
    /// A plain IP (no prefix length).
    #[serde(rename = "Gateway", skip_serializing_if = "String::is_empty", default)]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty", default)]
    pub gateway_ipv6: String,
    #[serde(rename = "StaticRoutes", skip_serializing_if = "Vec::is_empty", default)]
    pub static_routes: Vec<StaticRoute>,
    /// Keeps Docker from attaching the container to `docker_gwbridge`.
    #[serde(rename = "DisableGatewayService", skip_serializing_if = "is_false", default)]
    pub disable_gateway_service: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProgramExternalConnectivityRequest {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DiscoveryRequest {
    /// 1 is node discovery, the only kind Docker forwards to remote drivers.
    #[serde(rename = "DiscoveryType")]
    pub discovery_type: i64,
    #[serde(rename = "DiscoveryData", default)]
    pub discovery_data: Value,
}
