//! Requests to a driver's plugin socket in the shapes dockerd sends them, and the request pairs
//! the benchmark times as one unit, shared by the driver-cost and footprint sections.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use netloom_plugin_api::client::PluginClient;
use serde_json::{json, Value};

/// A Docker-like id: 64 hex digits. Derived link names use the first characters, so the varying
/// part comes first; `kind` keeps ids of different objects apart.
pub fn hex_id(kind: u16, n: u32) -> String {
    format!("{n:06x}{kind:04x}{:054x}", 0)
}

/// A /16 IPv4 subnet, with the addresses in it handed out by index (the gateway is index 1).
#[derive(Debug, Clone, Copy)]
pub struct Subnet16 {
    pub a: u8,
    pub b: u8,
}

impl Subnet16 {
    pub fn pool(self) -> String {
        format!("{}.{}.0.0/16", self.a, self.b)
    }

    /// The `index`-th address of the subnet with its prefix length, e.g. `10.100.1.4/16` for 260.
    pub fn address(self, index: u32) -> String {
        assert!((1..65535).contains(&index), "index {index} is outside a /16");
        let ip = Ipv4Addr::new(self.a, self.b, (index >> 8) as u8, index as u8);
        format!("{ip}/16")
    }

    pub fn gateway(self) -> String {
        self.address(1)
    }
}

pub fn create_network(id: &str, subnet: Subnet16, generic: Value) -> Value {
    create_network_on(id, &subnet.pool(), &subnet.gateway(), generic)
}

/// CreateNetwork for any IPv4 pool (`gateway` with prefix length, as dockerd sends it).
pub fn create_network_on(id: &str, pool: &str, gateway: &str, generic: Value) -> Value {
    json!({
        "NetworkID": id,
        "Options": {"com.docker.network.generic": generic, "com.docker.network.enable_ipv6": false},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gateway}],
        "IPv6Data": []
    })
}

pub fn network_ref(net: &str) -> Value {
    json!({"NetworkID": net})
}

pub fn create_endpoint(net: &str, ep: &str, address: &str) -> Value {
    json!({
        "NetworkID": net, "EndpointID": ep,
        "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
        "Options": {}
    })
}

pub fn endpoint_ref(net: &str, ep: &str) -> Value {
    json!({"NetworkID": net, "EndpointID": ep})
}

/// A port map publishing container port 80/tcp on each of `host_ports`.
pub fn tcp_port_map(host_ports: impl IntoIterator<Item = u16>) -> Value {
    let bindings: Vec<Value> = host_ports
        .into_iter()
        .map(|p| json!({"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": p, "HostPortEnd": p}))
        .collect();
    Value::Array(bindings)
}

/// The options dockerd passes to Join and ProgramExternalConnectivity.
fn port_options(port_map: &Value) -> Value {
    json!({"com.docker.network.portmap": port_map, "com.docker.network.endpoint.exposedports": []})
}

pub fn join(net: &str, ep: &str, port_map: &Value) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "SandboxKey": "/var/run/docker/netns/x", "Options": port_options(port_map)})
}

pub fn program_external(net: &str, ep: &str, port_map: &Value) -> Value {
    json!({"NetworkID": net, "EndpointID": ep, "Options": port_options(port_map)})
}

pub fn request_pool(pool: &str) -> Value {
    json!({"AddressSpace": "LocalDefault", "Pool": pool, "SubPool": "", "Options": {}, "V6": false})
}

pub fn request_address(pool_id: &str) -> Value {
    json!({"PoolID": pool_id, "Address": "", "Options": {}})
}

/// One endpoint of a network as the benchmark makes it.
pub struct Endpoint<'a> {
    pub net: &'a str,
    pub id: &'a str,
    pub address: &'a str,
}

/// CreateEndpoint + Join: what dockerd asks of a driver when a container starts.
pub async fn attach(client: &mut PluginClient, ep: &Endpoint<'_>, port_map: &Value) -> Result<()> {
    client.call("NetworkDriver.CreateEndpoint", &create_endpoint(ep.net, ep.id, ep.address)).await?;
    client.call("NetworkDriver.Join", &join(ep.net, ep.id, port_map)).await?;
    Ok(())
}

/// Leave + DeleteEndpoint: what dockerd asks when a container stops.
pub async fn detach(client: &mut PluginClient, ep: &Endpoint<'_>) -> Result<()> {
    client.call("NetworkDriver.Leave", &endpoint_ref(ep.net, ep.id)).await?;
    client.call("NetworkDriver.DeleteEndpoint", &endpoint_ref(ep.net, ep.id)).await?;
    Ok(())
}

pub async fn program(client: &mut PluginClient, ep: &Endpoint<'_>, port_map: &Value) -> Result<()> {
    client.call("NetworkDriver.ProgramExternalConnectivity", &program_external(ep.net, ep.id, port_map)).await?;
    Ok(())
}

pub async fn revoke(client: &mut PluginClient, ep: &Endpoint<'_>) -> Result<()> {
    client.call("NetworkDriver.RevokeExternalConnectivity", &endpoint_ref(ep.net, ep.id)).await?;
    Ok(())
}

/// A current-thread runtime for the socket client.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("building the tokio runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_docker_like_and_vary_up_front() {
        let a = hex_id(0xe, 1);
        let b = hex_id(0xe, 2);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a[..6], b[..6]);
        assert_ne!(hex_id(0xa, 1)[..12], a[..12], "kinds differ within the first 12 chars");
    }

    #[test]
    fn addresses_walk_the_whole_slash_16() {
        let s = Subnet16 { a: 10, b: 100 };
        assert_eq!(s.pool(), "10.100.0.0/16");
        assert_eq!(s.gateway(), "10.100.0.1/16");
        assert_eq!(s.address(2), "10.100.0.2/16");
        assert_eq!(s.address(260), "10.100.1.4/16");
        assert_eq!(s.address(65534), "10.100.255.254/16");
    }

    #[test]
    fn requests_have_dockerd_shapes() {
        let s = Subnet16 { a: 10, b: 7 };
        let net = create_network("n", s, json!({"parent": "p0"}));
        assert_eq!(net["IPv4Data"][0]["Gateway"], "10.7.0.1/16");
        assert_eq!(net["Options"]["com.docker.network.generic"]["parent"], "p0");
        let ports = tcp_port_map([8080, 8081]);
        assert_eq!(
            ports[1],
            json!({"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8081, "HostPortEnd": 8081})
        );
        let j = join("n", "e", &ports);
        assert_eq!(j["Options"]["com.docker.network.portmap"], ports);
        assert_eq!(program_external("n", "e", &ports)["Options"], j["Options"]);
        assert_eq!(create_endpoint("n", "e", "10.7.0.2/16")["Interface"]["Address"], "10.7.0.2/16");
        assert_eq!(request_address("p")["PoolID"], "p");
    }
}
