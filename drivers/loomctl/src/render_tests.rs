use std::path::PathBuf;

use netloom_plugin_api::engine::DockerNetwork;
use netloom_plugin_api::status::{NetworkStatus, StatusReply, StoreStatus};
use serde_json::json;

use super::*;
use crate::gather::Driver;

const WEB: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

pub fn docker_network(id: &str, name: &str) -> DockerNetwork {
    DockerNetwork {
        id: id.into(),
        name: name.into(),
        driver: "loom-bridge".into(),
        scope: "local".into(),
        internal: false,
        ipam_driver: "default".into(),
        pools: Vec::new(),
        options: Default::default(),
        endpoints: Vec::new(),
    }
}

pub fn bridge(docker: Option<Result<Vec<DockerNetwork>, String>>) -> Driver {
    let mut web = NetworkStatus::new(WEB);
    web.local_name = "bridge loomweb".into();
    web.subnets = vec!["10.1.0.0/24".into()];
    web.endpoints = 2;
    web.endpoint_ids = vec!["e1".into(), "e2".into()];
    let store = StoreStatus {
        url: "embedded:/var/lib/netloom/loom-bridge/store.redb".into(),
        healthy: true,
        ..Default::default()
    };
    Driver {
        name: "loom-bridge".into(),
        socket: PathBuf::from("/run/docker/plugins/loom-bridge.sock"),
        status: Ok(StatusReply {
            name: "loom-bridge".into(),
            docker_driver_name: "loom-bridge".into(),
            version: "0.1.0".into(),
            pid: 42,
            uptime_seconds: 3725,
            firewall: Some("nftables".into()),
            store: Some(store.clone()),
            stores: vec![store],
            networks: vec![web],
            details: json!(null),
        }),
        docker,
    }
}

pub fn down(name: &str) -> Driver {
    Driver {
        name: name.into(),
        socket: PathBuf::from(format!("/run/docker/plugins/{name}.sock")),
        status: Err("connecting: Connection refused".into()),
        docker: None,
    }
}

#[test]
fn json_names_each_network_by_docker_and_counts_its_endpoints() {
    let drivers = [bridge(Some(Ok(vec![docker_network(WEB, "web")]))), down("loom-host")];
    let out = json(&drivers);
    let bridge = &out["drivers"][0];
    assert_eq!(bridge["name"], "loom-bridge");
    assert_eq!(bridge["up"], true);
    assert_eq!(bridge["version"], "0.1.0");
    assert_eq!(bridge["firewall"], "nftables");
    assert_eq!(bridge["store"]["healthy"], true);
    assert_eq!(
        bridge["networks"],
        json!([{ "id": WEB, "name": "web", "endpoints": 2, "subnets": ["10.1.0.0/24"], "local_name": "bridge loomweb" }])
    );
    assert_eq!(
        out["drivers"][1],
        json!({ "name": "loom-host", "up": false, "error": "connecting: Connection refused" })
    );
}

#[test]
fn a_network_docker_does_not_have_has_no_name() {
    let out = json(&[bridge(Some(Ok(Vec::new())))]);
    assert_eq!(out["drivers"][0]["networks"][0]["name"], json!(null));
    let text = tables(Path::new("/x"), &[bridge(Some(Ok(Vec::new())))]);
    assert!(text.contains("(not in Docker)"), "{text}");
    let text = tables(Path::new("/x"), &[bridge(Some(Err("dockerd at unix:///x cannot be reached".into())))]);
    assert!(text.contains("(no Docker names: dockerd at unix:///x cannot be reached)"), "{text}");
}

#[test]
fn tables_show_each_driver_its_networks_and_overlay_peers() {
    let mut overlay = bridge(None);
    overlay.name = "loom-overlay".into();
    if let Ok(status) = &mut overlay.status {
        status.firewall = None;
        status.networks.clear();
        status.store = Some(StoreStatus {
            url: "etcd://10.0.0.1:2379".into(),
            healthy: false,
            error: Some("did not answer a read within 1.5s".into()),
            ..Default::default()
        });
        status.details = json!({ "peers": [
            { "host": "b7e1", "vtep": "10.0.0.2", "state": "live", "last_seen_seconds_ago": 3 },
            { "host": "c9a0", "vtep": "10.0.0.3", "state": "absent", "last_seen_seconds_ago": 125 },
        ] });
    }
    let text = tables(
        Path::new("/run/docker/plugins"),
        &[bridge(Some(Ok(vec![docker_network(WEB, "web")]))), overlay, down("loom-host")],
    );
    let expected = "\
loom-bridge  up  version 0.1.0  pid 42  uptime 1h2m  firewall nftables  store embedded:/var/lib/netloom/loom-bridge/store.redb (healthy)
  NETWORK       NAME  SUBNETS      ENDPOINTS  ON THIS HOST
  4f1c2d3e4f5a  web   10.1.0.0/24  2          bridge loomweb

loom-overlay  up  version 0.1.0  pid 42  uptime 1h2m  store etcd://10.0.0.1:2379 (UNHEALTHY: did not answer a read within 1.5s)
  PEER HOST  VTEP      STATE   LAST SEEN
  b7e1       10.0.0.2  live    3s ago
  c9a0       10.0.0.3  absent  2m5s ago

loom-host  DOWN  connecting: Connection refused

";
    assert_eq!(text, expected, "\n{text}");
    assert_eq!(tables(Path::new("/p"), &[]), "no netloom driver socket (loom-*.sock) in /p\n");
}

#[test]
fn durations_read_short() {
    assert_eq!(duration(0), "0s");
    assert_eq!(duration(59), "59s");
    assert_eq!(duration(61), "1m1s");
    assert_eq!(duration(7260), "2h1m");
    assert_eq!(duration(90000), "1d1h");
}
