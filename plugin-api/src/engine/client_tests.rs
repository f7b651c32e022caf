use std::time::Duration;

use super::*;
use crate::engine::fake_docker::{not_found, version, FakeDocker, Reply};

const NETWORKS_OF_LOOM_NULL: &str = "/v1.41/networks?filters=%7B%22driver%22%3A%5B%22loom-null%22%5D%7D";

fn network_json(id: &str, driver: &str, ipam: &str, containers: &str) -> String {
    format!(
        r#"{{"Name":"name-{id}","Id":"{id}","Scope":"local","Driver":"{driver}","IPAM":{{"Driver":"{ipam}","Config":[{{"Subnet":"10.9.0.0/24"}}]}},"Internal":false,"Containers":{containers},"Options":{{}}}}"#
    )
}

fn docker_20_10() -> FakeDocker {
    FakeDocker::start(|target| match target {
        "/version" => version("1.41"),
        NETWORKS_OF_LOOM_NULL => Reply::Json(
            200,
            format!(
                "[{},{},{}]",
                network_json("n1", "loom-null", "default", "{}"),
                network_json("vanished", "loom-null", "default", "{}"),
                // A dockerd whose filter matched loosely: left out by the client.
                network_json("n3", "loom-null-other", "default", "{}")
            ),
        ),
        "/v1.41/networks" => Reply::Json(
            200,
            format!(
                "[{},{}]",
                network_json("n1", "loom-null", "default", "{}"),
                network_json("n2", "loom-bridge", "loom-ipam", "{}")
            ),
        ),
        "/v1.41/networks/n1" => Reply::Json(
            200,
            network_json(
                "n1",
                "loom-null",
                "default",
                r#"{"c1":{"Name":"web","EndpointID":"e1","MacAddress":"","IPv4Address":"","IPv6Address":""},
                   "ep-e2":{"Name":"x","EndpointID":"e2"}}"#,
            ),
        ),
        "/v1.41/networks/n2" => Reply::Json(200, network_json("n2", "loom-bridge", "loom-ipam", "null")),
        "/v1.41/networks/n3" => panic!("a network of another driver was inspected"),
        "/v1.41/containers/c1/json" => Reply::Json(
            200,
            r#"{"Name":"/web","NetworkSettings":{"Networks":{"name-n1":{"NetworkID":"n1","Aliases":["www"]}}}}"#.into(),
        ),
        "/v1.41/networks/boom" => Reply::Json(500, r#"{"message":"store is down"}"#.into()),
        other if other.starts_with("/v1.41/") => not_found(other),
        other => panic!("unexpected request {other}"),
    })
}

#[tokio::test]
async fn the_api_version_is_the_lower_of_the_servers_and_ours_and_asked_once() {
    let new_docker = FakeDocker::start(|_| version("1.45"));
    let engine = Engine::new(&new_docker.url()).unwrap();
    assert_eq!(engine.api_version().await.unwrap(), "1.44");
    assert_eq!(engine.api_version().await.unwrap(), "1.44");
    assert_eq!(new_docker.requests(), ["/version"]);

    let old_docker = docker_20_10();
    assert_eq!(Engine::new(&old_docker.url()).unwrap().api_version().await.unwrap(), "1.41");
}

#[tokio::test]
async fn networks_of_a_driver_are_listed_then_inspected_and_vanished_ones_skipped() {
    let fake = docker_20_10();
    let engine = Engine::new(&fake.url()).unwrap();
    let networks = engine.networks_of_driver("loom-null").await.unwrap();
    assert_eq!(networks.len(), 1);
    let n1 = &networks[0];
    assert_eq!((n1.id.as_str(), n1.name.as_str(), n1.driver.as_str()), ("n1", "name-n1", "loom-null"));
    let endpoints: Vec<(&str, &str, &str)> =
        n1.endpoints.iter().map(|e| (e.endpoint_id.as_str(), e.container_id.as_str(), e.name.as_str())).collect();
    assert_eq!(endpoints, [("e1", "c1", "web"), ("e2", "", "")]);
    assert_eq!(fake.requests(), ["/version", NETWORKS_OF_LOOM_NULL, "/v1.41/networks/n1", "/v1.41/networks/vanished"]);
}

#[tokio::test]
async fn networks_of_an_ipam_driver_are_those_with_it_in_their_ipam_config() {
    let fake = docker_20_10();
    let engine = Engine::new(&fake.url()).unwrap();
    let networks = engine.networks_of_ipam("loom-ipam").await.unwrap();
    let ids: Vec<&str> = networks.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["n2"]);
    assert_eq!(networks[0].pools[0].subnet, Some("10.9.0.0/24".parse().unwrap()));
    assert!(networks[0].endpoints.is_empty());
}

#[tokio::test]
async fn the_subnets_of_every_network_come_from_one_list_call() {
    let fake = docker_20_10();
    let engine = Engine::new(&fake.url()).unwrap();
    let subnets = engine.local_subnets().await.unwrap();
    let expected: ipnetwork::IpNetwork = "10.9.0.0/24".parse().unwrap();
    assert_eq!(subnets, [expected, expected]);
    assert_eq!(fake.requests(), ["/version", "/v1.41/networks"]);
}

#[tokio::test]
async fn unknown_networks_and_containers_are_none_and_other_errors_are_errors() {
    let fake = docker_20_10();
    let engine = Engine::new(&fake.url()).unwrap();
    assert_eq!(engine.network("nope").await.unwrap(), None);
    assert_eq!(engine.network("n1").await.unwrap().map(|n| n.name), Some("name-n1".into()));
    assert_eq!(engine.container_names("gone", "n1").await.unwrap(), None);
    match engine.network("boom").await {
        Err(EngineError::Api { status: 500, message, .. }) => assert_eq!(message, "store is down"),
        other => panic!("expected dockerd's error, got {other:?}"),
    }
}

#[tokio::test]
async fn container_names_are_found_by_network_name_or_id() {
    let fake = docker_20_10();
    let engine = Engine::new(&fake.url()).unwrap();
    let expected = ContainerNames { name: "web".into(), aliases: vec!["www".into()] };
    assert_eq!(engine.container_names("c1", "n1").await.unwrap(), Some(expected.clone()));
    assert_eq!(engine.container_names("c1", "name-n1").await.unwrap(), Some(expected));
    assert_eq!(engine.container_names("c1", "elsewhere").await.unwrap(), None);
}

#[tokio::test]
async fn network_events_arrive_as_they_come_and_end_with_the_stream() {
    let create =
        r#"{"Type":"network","Action":"create","Actor":{"ID":"n1","Attributes":{"name":"a","type":"loom-null"}}}"#;
    let connect = r#"{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"c1","name":"a","type":"loom-null"}}}"#;
    let lines = vec![(Duration::ZERO, create.to_string()), (Duration::from_millis(100), connect.to_string())];
    let fake = FakeDocker::start(move |target| match target {
        "/version" => version("1.45"),
        "/v1.44/events?filters=%7B%22type%22%3A%5B%22network%22%5D%7D" => Reply::Stream(lines.clone()),
        other => panic!("unexpected request {other}"),
    });
    let engine = Engine::new(&fake.url()).unwrap();
    let mut events = engine.network_events().await.unwrap();
    let first = events.recv().await.unwrap();
    assert_eq!((first.action.as_str(), first.network_name.as_deref()), ("create", Some("a")));
    let second = events.recv().await.unwrap();
    assert_eq!((second.action.as_str(), second.container_id.as_deref()), ("connect", Some("c1")));
    assert_eq!(second.driver.as_deref(), Some("loom-null"));
    assert_eq!(events.recv().await, None);
}

#[tokio::test]
async fn a_dockerd_that_is_not_there_is_unreachable_and_a_bad_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(&format!("unix://{}/docker.sock", dir.path().display())).unwrap();
    assert!(matches!(engine.networks_of_driver("loom-null").await, Err(EngineError::Unreachable { .. })));
    assert!(matches!(engine.network_events().await, Err(EngineError::Unreachable { .. })));
    let error = Engine::new("docker.sock").unwrap_err();
    assert!(matches!(error, EngineError::BadHost(_)));
    assert!(error.to_string().contains("unix:///path/to/docker.sock"), "{error}");
}
