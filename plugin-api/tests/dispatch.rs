//! The server's request handling, driven through `Plugin::handle` with a recording driver.

use std::sync::Mutex;

use async_trait::async_trait;
use hyper::StatusCode;
use netloom_plugin_api::wire::ipam::{
    AddressSpacesResponse, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestAddressResponse,
    RequestPoolRequest, RequestPoolResponse,
};
use netloom_plugin_api::wire::network::*;
use netloom_plugin_api::{IpamDriver, NetworkDriver, Plugin, PluginError, PluginResult};
use serde_json::{json, Value};

#[derive(Default)]
struct Recorder {
    created: Mutex<Vec<CreateNetworkRequest>>,
}

#[async_trait]
impl NetworkDriver for Recorder {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Global }
    }
    async fn create_network(&self, req: CreateNetworkRequest) -> PluginResult<()> {
        if req.network_id == "boom" {
            panic!("driver bug");
        }
        if req.network_id == "refuse" {
            return Err(PluginError::new("bad subnet 10.0.0.0/33"));
        }
        self.created.lock().unwrap().push(req);
        Ok(())
    }
    async fn delete_network(&self, _req: NetworkRef) -> PluginResult<()> {
        Ok(())
    }
    async fn create_endpoint(&self, _req: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        Ok(CreateEndpointResponse::default())
    }
    async fn delete_endpoint(&self, _req: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
    async fn join(&self, _req: JoinRequest) -> PluginResult<JoinResponse> {
        Ok(JoinResponse {
            interface_name: Some(InterfaceName { src_name: "tmp1".into(), dst_prefix: "eth".into() }),
            gateway: "10.0.0.1".into(),
            ..Default::default()
        })
    }
    async fn leave(&self, _req: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
}

struct FixedIpam;

#[async_trait]
impl IpamDriver for FixedIpam {
    fn default_address_spaces(&self) -> AddressSpacesResponse {
        AddressSpacesResponse {
            local_default_address_space: "LocalDefault".into(),
            global_default_address_space: "GlobalDefault".into(),
        }
    }
    async fn request_pool(&self, req: RequestPoolRequest) -> PluginResult<RequestPoolResponse> {
        Ok(RequestPoolResponse {
            pool_id: format!("{}/{}", req.address_space, req.pool),
            pool: req.pool,
            data: Default::default(),
        })
    }
    async fn release_pool(&self, _req: ReleasePoolRequest) -> PluginResult<()> {
        Ok(())
    }
    async fn request_address(&self, req: RequestAddressRequest) -> PluginResult<RequestAddressResponse> {
        let address = if req.is_gateway() { "10.0.0.1/24" } else { "10.0.0.2/24" };
        Ok(RequestAddressResponse { address: address.into(), data: Default::default() })
    }
    async fn release_address(&self, _req: ReleaseAddressRequest) -> PluginResult<()> {
        Ok(())
    }
}

fn network_plugin() -> Plugin {
    Plugin::network(Recorder::default())
}

async fn call(plugin: &Plugin, method: &str, body: &str) -> (StatusCode, Value) {
    plugin.handle(method, body.as_bytes()).await
}

fn err_text(value: &Value) -> &str {
    value.get("Err").and_then(Value::as_str).unwrap_or_else(|| panic!("no Err in {value}"))
}

#[tokio::test]
async fn handshake_calls_take_empty_bodies() {
    let plugin = network_plugin();
    assert_eq!(call(&plugin, "Plugin.Activate", "").await, (StatusCode::OK, json!({"Implements": ["NetworkDriver"]})));
    assert_eq!(
        call(&plugin, "NetworkDriver.GetCapabilities", "").await,
        (StatusCode::OK, json!({"Scope": "local", "ConnectivityScope": "global"}))
    );
}

#[tokio::test]
async fn create_network_decodes_docker_fields_and_tolerates_unknown_ones() {
    let plugin = Plugin { network: Some(std::sync::Arc::new(Recorder::default())), ipam: None };
    let body = r#"{"NetworkID":"n1","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"k":"v","mtu":1400}},
        "IPv4Data":[{"AddressSpace":"LocalDefault","Gateway":"172.18.0.1/16","Pool":"172.18.0.0/16","AuxAddresses":null}],
        "IPv6Data":null,"SomethingNew":1}
"#;
    let (status, value) = call(&plugin, "NetworkDriver.CreateNetwork", body).await;
    assert_eq!((status, value), (StatusCode::OK, json!({})));
}

#[tokio::test]
async fn generic_options_are_strings() {
    let req: CreateNetworkRequest = serde_json::from_str(
        r#"{"NetworkID":"n","Options":{"com.docker.network.generic":{"a":"x","mtu":1400},"com.docker.network.internal":true}}"#,
    )
    .unwrap();
    let generic = req.options.generic();
    assert_eq!(generic["a"], "x");
    assert_eq!(generic["mtu"], "1400");
    assert!(req.options.internal());
    assert!(!req.options.enable_ipv6());
}

#[tokio::test]
async fn bad_requests_get_err_with_500() {
    let plugin = network_plugin();
    let cases = [
        ("NetworkDriver.CreateNetwork", "", "empty"),
        ("NetworkDriver.CreateNetwork", "{not json", "invalid NetworkDriver.CreateNetwork request"),
        ("NetworkDriver.CreateNetwork", r#"{"Options":{}}"#, "missing field `NetworkID`"),
        ("NetworkDriver.Join", r#"{"NetworkID":5,"EndpointID":"e"}"#, "invalid type"),
        ("NetworkDriver.CreateNetwork", r#"{"NetworkID":"refuse"}"#, "bad subnet 10.0.0.0/33"),
        (
            "NetworkDriver.CreateNetwork",
            r#"{"NetworkID":"boom"}"#,
            "internal error in NetworkDriver.CreateNetwork: driver bug",
        ),
    ];
    for (method, body, expected) in cases {
        let (status, value) = call(&plugin, method, body).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {body}");
        assert!(err_text(&value).contains(expected), "{method} {body}: {value}");
    }
}

#[tokio::test]
async fn unknown_methods_get_404() {
    let plugin = network_plugin();
    for method in ["NetworkDriver.Frobnicate", "IpamDriver.RequestPool", "Nonsense", ""] {
        let (status, value) = call(&plugin, method, "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
        assert!(err_text(&value).contains("does not implement"), "{value}");
    }
}

#[tokio::test]
async fn optional_external_connectivity_defaults_to_success() {
    let plugin = network_plugin();
    let (status, _) = call(&plugin, "NetworkDriver.ProgramExternalConnectivity",
        r#"{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}"#).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn join_reply_uses_docker_names_and_omits_empty_fields() {
    let plugin = network_plugin();
    let (status, value) =
        call(&plugin, "NetworkDriver.Join", r#"{"NetworkID":"n","EndpointID":"e","SandboxKey":"/x","Options":null}"#)
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value, json!({"InterfaceName": {"SrcName": "tmp1", "DstPrefix": "eth"}, "Gateway": "10.0.0.1"}));
}

#[tokio::test]
async fn ipam_calls_round_trip() {
    let plugin = Plugin::ipam(FixedIpam);
    assert_eq!(call(&plugin, "Plugin.Activate", "").await.1, json!({"Implements": ["IpamDriver"]}));
    assert_eq!(
        call(&plugin, "IpamDriver.GetCapabilities", "").await.1,
        json!({"RequiresMACAddress": false, "RequiresRequestReplay": false})
    );
    assert_eq!(
        call(&plugin, "IpamDriver.GetDefaultAddressSpaces", "").await.1["LocalDefaultAddressSpace"],
        "LocalDefault"
    );
    let (status, value) = call(
        &plugin,
        "IpamDriver.RequestPool",
        r#"{"AddressSpace":"LocalDefault","Pool":"10.0.0.0/24","SubPool":"","Options":null,"V6":false}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value["PoolID"], "LocalDefault/10.0.0.0/24");
    let (_, value) = call(
        &plugin,
        "IpamDriver.RequestAddress",
        r#"{"PoolID":"p","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
    )
    .await;
    assert_eq!(value["Address"], "10.0.0.1/24");
    let (status, value) = call(&plugin, "IpamDriver.ReleaseAddress", r#"{"PoolID":"p"}"#).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(err_text(&value).contains("missing field `Address`"));
    assert_eq!(call(&plugin, "NetworkDriver.GetCapabilities", "").await.0, StatusCode::NOT_FOUND);
}

#[test]
fn port_bindings_decode() {
    use netloom_plugin_api::wire::ports::{port_bindings, Protocol};
    let options: serde_json::Map<String, Value> = serde_json::from_str(
        r#"{"com.docker.network.portmap":[{"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":5353,"HostPortEnd":5353}]}"#,
    )
    .unwrap();
    let bindings = port_bindings(&options).unwrap();
    assert_eq!(bindings[0].proto, Protocol::Udp);
    assert_eq!(bindings[0].host_port, 5353);
    let none: serde_json::Map<String, Value> = serde_json::from_str(r#"{"com.docker.network.portmap":null}"#).unwrap();
    assert!(port_bindings(&none).unwrap().is_empty());
    let bad: serde_json::Map<String, Value> =
        serde_json::from_str(r#"{"com.docker.network.portmap":[{"Proto":99,"Port":1}]}"#).unwrap();
    assert!(port_bindings(&bad).unwrap_err().contains("unsupported IP protocol number 99"));
}
