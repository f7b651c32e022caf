//! `IpamDriver.*` requests and responses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::json::null_as_default;

/// The RequestAddress option that marks the gateway request.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
pub const GATEWAY_ADDRESS_TYPE: &str = "com.docker.network.gateway";
/// RequestPool `Data` key telling Docker which gateway to use.
pub const GATEWAY_DATA_KEY: &str = "com.docker.network.gateway";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CapabilitiesResponse {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    #[serde(rename = "RequiresRequestReplay")]
    pub requires_request_replay: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddressSpacesResponse {
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local_default_address_space: String,
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global_default_address_space: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestPoolRequest {
    #[serde(rename = "AddressSpace")]
    pub address_space: String,
    /// `--subnet`, or "" for a default pool.
    #[serde(rename = "Pool", default)]
    pub pool: String,
    /// `--ip-range`, or "".
    #[serde(rename = "SubPool", default)]
    pub sub_pool: String,
    /// `--ipam-opt` pairs.
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6", default)]
    pub v6: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "Data", default)]
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleasePoolRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// A specific address (`--ip`, `--gateway`), or "".
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
}

impl RequestAddressRequest {
    pub fn is_gateway(&self) -> bool {
        self.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_ADDRESS_TYPE)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestAddressResponse {
    /// The address with the pool's prefix length, e.g. `10.1.2.3/24`.
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Data", default)]
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseAddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// A plain IP.
    #[serde(rename = "Address")]
    pub address: String,
}
