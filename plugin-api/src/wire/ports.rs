//! Port publishing data as Docker encodes it in endpoint and sandbox options.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::network::option_keys;

/// IP protocol numbers as Docker sends them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(into = "u8", try_from = "u8")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl From<Protocol> for u8 {
    fn from(proto: Protocol) -> u8 {
        match proto {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl TryFrom<u8> for Protocol {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, String> {
        match value {
            6 => Ok(Protocol::Tcp),
            17 => Ok(Protocol::Udp),
            132 => Ok(Protocol::Sctp),
            other => Err(format!("unsupported IP protocol number {other}")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// One `-p [HostIP:]HostPort[-HostPortEnd]:Port/Proto` mapping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct PortBinding {
    #[serde(rename = "Proto")]
    pub proto: Protocol,
    /// Container address; "" when unspecified.
    #[serde(rename = "IP", default)]
    pub ip: String,
    #[serde(rename = "Port")]
    pub port: u16,
    /// "" means every host address.
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    /// 0 means "pick one" (`-P`).
    #[serde(rename = "HostPort", default)]
    pub host_port: u16,
    /// Top of a host port range; equals HostPort for one port, 0 with `-P`.
    #[serde(rename = "HostPortEnd", default)]
    pub host_port_end: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct TransportPort {
    #[serde(rename = "Proto")]
    pub proto: Protocol,
    #[serde(rename = "Port")]
    pub port: u16,
}

/// Reads `com.docker.network.portmap` from Join/Program/CreateEndpoint options (absent or null: none).
pub fn port_bindings(options: &Map<String, Value>) -> Result<Vec<PortBinding>, String> {
    decode_list(options, option_keys::PORTMAP)
}

/// Reads `com.docker.network.endpoint.exposedports`.
pub fn exposed_ports(options: &Map<String, Value>) -> Result<Vec<TransportPort>, String> {
    decode_list(options, option_keys::EXPOSED_PORTS)
}

fn decode_list<T: for<'de> Deserialize<'de>>(options: &Map<String, Value>, key: &str) -> Result<Vec<T>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| format!("invalid {key}: {e}")),
    }
}
