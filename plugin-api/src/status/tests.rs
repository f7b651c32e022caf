use std::time::Duration;

use async_trait::async_trait;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::engine::{HeldEndpoint, HeldNetwork};
use crate::siblings::ClaimedSubnets;
use crate::wire::network::*;
use crate::NetworkDriver;

const WEB: &str = "4f1c0000000000000000000000000000000000000000000000000000000000aa";
const DB: &str = "4f2d0000000000000000000000000000000000000000000000000000000000bb";

/// Holds two networks (two endpoints on one), has a firewall and a control call, and is slow to
/// say its details when asked to be.
struct Holding {
    slow_details: bool,
}

#[async_trait]
impl NetworkDriver for Holding {
    fn capabilities(&self) -> CapabilitiesResponse {
        CapabilitiesResponse { scope: Scope::Local, connectivity_scope: Scope::Local }
    }
    async fn create_network(&self, _: CreateNetworkRequest) -> PluginResult<()> {
        Ok(())
    }
    async fn delete_network(&self, _: NetworkRef) -> PluginResult<()> {
        Ok(())
    }
    async fn create_endpoint(&self, _: CreateEndpointRequest) -> PluginResult<CreateEndpointResponse> {
        Ok(CreateEndpointResponse::default())
    }
    async fn delete_endpoint(&self, _: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
    async fn join(&self, _: JoinRequest) -> PluginResult<JoinResponse> {
        Ok(JoinResponse::default())
    }
    async fn leave(&self, _: EndpointRef) -> PluginResult<()> {
        Ok(())
    }
    fn claimed_subnets(&self) -> Vec<ClaimedSubnets> {
        vec![ClaimedSubnets {
            driver: "loom-test".into(),
            network_id: WEB.into(),
            detail: "bridge web0".into(),
            subnets: vec!["10.1.0.0/24".parse().unwrap()],
        }]
    }
    async fn held_networks(&self) -> Option<Vec<HeldNetwork>> {
        let endpoints = |n: usize| (0..n).map(|i| HeldEndpoint { id: format!("ep{i}") }).collect();
        Some(vec![
            HeldNetwork { id: WEB.into(), global: false, endpoints: endpoints(2) },
            HeldNetwork { id: DB.into(), global: false, endpoints: endpoints(0) },
        ])
    }
    async fn status_details(&self) -> Value {
        if self.slow_details {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        json!({ "firewall": "nftables", "links": 3 })
    }
    async fn inspect_network(&self, network: &str) -> PluginResult<Value> {
        Ok(json!({ "bridge": "web0", "asked": network }))
    }
    async fn control(&self, call: &str, body: Value) -> PluginResult<Value> {
        match call {
            "Echo" => Ok(json!({ "echo": body })),
            _ => Err(PluginError::unknown_method(&format!("Netloom.{call}"))),
        }
    }
}

fn plugin(slow_details: bool) -> Plugin {
    Plugin::network(Holding { slow_details })
}

#[tokio::test]
async fn status_lists_networks_with_endpoints_subnets_and_the_firewall() {
    let (status_code, body) = plugin(false).handle(STATUS, b"").await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    let reply: StatusReply = serde_json::from_value(body).unwrap();
    assert_eq!(reply.pid, std::process::id());
    assert_eq!(reply.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(reply.firewall.as_deref(), Some("nftables"));
    assert_eq!(reply.details, json!({ "links": 3 }), "the firewall is shown once, on its own");
    assert_eq!(
        reply.networks,
        vec![
            NetworkStatus {
                id: WEB.into(),
                local_name: "bridge web0".into(),
                subnets: vec!["10.1.0.0/24".into()],
                endpoints: 2,
                endpoint_ids: vec!["ep0".into(), "ep1".into()],
                global: false,
            },
            NetworkStatus::new(DB),
        ]
    );
}

#[tokio::test]
async fn a_driver_slow_to_say_its_details_is_reported_not_waited_for() {
    let (status_code, body) = plugin(true).handle(STATUS, b"").await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    let error = body["details"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not say its details"), "{body}");
    assert_eq!(body["networks"].as_array().map(Vec::len), Some(2), "{body}");
}

#[tokio::test]
async fn inspect_takes_a_full_or_unambiguous_short_id() {
    let p = plugin(false);
    let (status_code, body) = p.handle(INSPECT, json!({ "Network": "4f1c" }).to_string().as_bytes()).await;
    assert_eq!(status_code, StatusCode::OK, "{body}");
    assert_eq!(body["asked"], WEB);
    assert_eq!(body["id"], WEB);
    assert_eq!(body["bridge"], "web0");

    let (status_code, body) = p.handle(INSPECT, json!({ "Network": "4f" }).to_string().as_bytes()).await;
    assert_eq!(status_code, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body["Err"].as_str().unwrap().contains("names 2 networks"), "{body}");

    for bad in [&b""[..], b"{}", b"[1]", br#"{"Network": ""}"#] {
        let (status_code, body) = p.handle(INSPECT, bad).await;
        assert_eq!(status_code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        assert!(body["Err"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn other_netloom_calls_go_to_the_drivers_control() {
    let p = plugin(false);
    let (status_code, body) = p.handle("Netloom.Echo", br#"{"a": 1}"#).await;
    assert_eq!((status_code, body), (StatusCode::OK, json!({ "echo": { "a": 1 } })));
    let (status_code, _) = p.handle("Netloom.Nothing", b"").await;
    assert_eq!(status_code, StatusCode::NOT_FOUND);
    let (status_code, body) = p.handle("Netloom.Echo", b"{not json").await;
    assert_eq!(status_code, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let (status_code, _) = Plugin::default().handle("Netloom.Echo", b"").await;
    assert_eq!(status_code, StatusCode::NOT_FOUND, "no network driver: no control calls");
    let (status_code, body) = p.handle(crate::siblings::METHOD, b"").await;
    assert_eq!(status_code, StatusCode::OK, "Netloom.Subnets is still answered: {body}");
}

#[tokio::test]
async fn the_status_is_asked_over_the_socket_and_a_dead_socket_fails_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loom-test.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::serve(listener, plugin(false), async {
        let _ = stopped.await;
    }));
    std::fs::write(dir.path().join("other.sock"), b"").unwrap();
    let managed = dir.path().join("4f1c2d").join("loom-bridge.sock");
    std::fs::create_dir(managed.parent().unwrap()).unwrap();
    std::fs::write(&managed, b"").unwrap();
    assert_eq!(sockets_in(dir.path()), vec![managed, path.clone()]);

    let reply = ask_status(&path, Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply.networks.len(), 2);
    let inspected = ask_inspect(&path, WEB, Duration::from_secs(5)).await.unwrap();
    assert_eq!(inspected["bridge"], "web0");
    let echoed = ask_control(&path, "Echo", &json!(7), Duration::from_secs(5)).await.unwrap();
    assert_eq!(echoed, json!({ "echo": 7 }));

    // A socket file nobody accepts on: connecting fails at once, a silent listener in time.
    let silent = dir.path().join("loom-silent.sock");
    let _held = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let started = std::time::Instant::now();
    assert!(ask_status(&silent, Duration::from_millis(300)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = stop.send(());
    server.await.unwrap();
}

#[test]
fn the_primary_store_is_the_failing_one_else_the_shared_one() {
    let store = |url: &str, healthy| StoreStatus { url: url.into(), healthy, ..StoreStatus::default() };
    let local = store("embedded:/var/lib/netloom/store.redb", true);
    let shared = store("etcd://10.0.0.1:2379", true);
    assert_eq!(StoreStatus::primary(&[local.clone(), shared.clone()]), Some(shared.clone()));
    assert_eq!(StoreStatus::primary(std::slice::from_ref(&local)), Some(local.clone()));
    let down = store("embedded:/x", false);
    assert_eq!(StoreStatus::primary(&[shared, down.clone()]), Some(down));
    assert_eq!(StoreStatus::primary(&[]), None);
}

#[test]
fn details_fill_in_what_a_driver_does_not_claim() {
    let mut networks = vec![NetworkStatus::new(DB), NetworkStatus::new(WEB)];
    networks[1].subnets = vec!["10.1.0.0/24".into()];
    let details = json!({ "networks": [
        { "id": DB, "subnets": ["10.2.0.0/24"], "local_name": "vni 4097" },
        { "id": WEB, "subnets": ["10.9.0.0/24"] },
    ] });
    fill_in(&mut networks, &details);
    assert_eq!(
        (networks[0].subnets.clone(), networks[0].local_name.as_str()),
        (vec!["10.2.0.0/24".into()], "vni 4097")
    );
    assert_eq!(networks[1].subnets, vec!["10.1.0.0/24".to_string()], "what the driver claims wins");
    fill_in(&mut networks, &json!(null));
}
