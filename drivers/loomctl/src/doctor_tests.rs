use std::path::Path;

use netloom_plugin_api::engine::DockerEndpoint;
use netloom_plugin_api::status::StoreStatus;
use serde_json::json;

use super::*;
use crate::render::tests::{bridge, docker_network, down};

const WEB: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

fn endpoint(id: &str) -> DockerEndpoint {
    DockerEndpoint {
        endpoint_id: id.into(),
        container_id: format!("c-{id}"),
        name: id.into(),
        ipv4: None,
        ipv6: None,
        mac: None,
    }
}

fn failed(checks: &[Check]) -> Vec<String> {
    checks.iter().filter(|c| !c.passed()).map(ToString::to_string).collect()
}

#[test]
fn a_good_host_passes_and_leftovers_are_named() {
    let mut web = docker_network(WEB, "web");
    web.endpoints = vec![endpoint("e1"), endpoint("e2")];
    let checks = judge(Path::new("/p"), &[bridge(Some(Ok(vec![web.clone()])))]);
    assert!(failed(&checks).is_empty(), "{checks:?}");
    assert!(checks.iter().any(|c| c.what == "loom-bridge: leftovers" && c.level == Level::Ok), "{checks:?}");

    web.endpoints.pop();
    let checks = judge(Path::new("/p"), &[bridge(Some(Ok(vec![web])))]);
    let leftover = checks.iter().find(|c| c.what == "loom-bridge: leftovers").unwrap();
    assert_eq!(leftover.level, Level::Warn);
    assert!(
        leftover.detail.contains("holds 1 thing(s)") && leftover.detail.contains("endpoint e2 of network 4f1c2d3e4f5a"),
        "{leftover}"
    );

    let checks = judge(Path::new("/p"), &[bridge(Some(Ok(Vec::new())))]);
    let leftover = checks.iter().find(|c| c.what == "loom-bridge: leftovers").unwrap();
    assert!(
        leftover.detail.contains("holds 3 thing(s)") && leftover.detail.contains("network 4f1c2d3e4f5a"),
        "{leftover}"
    );
}

#[test]
fn a_dead_socket_and_an_unreachable_store_fail_with_a_fix() {
    let mut bridge = bridge(None);
    if let Ok(status) = &mut bridge.status {
        status.stores.push(StoreStatus {
            url: "etcd://10.0.0.1:2379".into(),
            healthy: false,
            error: Some("TLS with the etcd store at 10.0.0.1:2379 failed: unknown issuer".into()),
            ..Default::default()
        });
    }
    let checks = judge(Path::new("/p"), &[bridge, down("loom-host")]);
    let failures = failed(&checks);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("loom-bridge: store etcd://10.0.0.1:2379: TLS") && failures[0].contains("--store-ca"),
        "{}",
        failures[0]
    );
    assert!(
        failures[1].contains("loom-host: does not answer") && failures[1].contains("systemctl start loom-host"),
        "{}",
        failures[1]
    );

    let none = judge(Path::new("/p"), &[]);
    assert!(failed(&none)[0].contains("no netloom driver socket (loom-*.sock) in /p"), "{none:?}");
}

#[test]
fn ipam_leftovers_are_judged_from_its_allocations() {
    let mut ipam = bridge(None);
    ipam.name = "loom-ipam".into();
    if let Ok(status) = &mut ipam.status {
        status.networks.clear();
        status.details = json!({ "allocations": [
            { "kind": "pool", "pool_id": "LocalDefault/10.9.0.0/24", "subnet": "10.9.0.0/24" },
            { "kind": "address", "pool_id": "LocalDefault/10.9.0.0/24", "subnet": "10.9.0.0/24", "address": "10.9.0.5" },
            { "kind": "bogus" },
        ] });
    }
    ipam.docker = Some(Ok(Vec::new()));
    assert!(ipam.is_ipam());
    let checks = judge(Path::new("/p"), &[ipam]);
    let leftover = checks.iter().find(|c| c.what == "loom-ipam: leftovers").unwrap();
    assert!(leftover.detail.contains("holds 2 thing(s)"), "{leftover}");
    assert!(leftover.detail.contains("address 10.9.0.5 of pool LocalDefault/10.9.0.0/24"), "{leftover}");
}

#[test]
fn store_fixes_follow_the_error() {
    assert!(store_fix("authentication to the etcd store failed").contains("--store-password-file"));
    assert!(store_fix("x509 certificate signed by unknown authority").contains("--store-ca"));
    assert!(store_fix("etcd store at h:2379 is unavailable").contains("start the store"));
}
