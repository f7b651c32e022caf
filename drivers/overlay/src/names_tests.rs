use std::collections::{BTreeMap, BTreeSet};

use netloom_plugin_api::engine::{DockerEndpoint, DockerNetwork};
use netloom_store::{KeyValue, WatchEvent};

use super::*;
use crate::records::{self, PeerRecord};

fn name(host: &str, endpoint: &str, container: &str, aliases: &[&str], network_name: &str) -> NameRecord {
    NameRecord {
        host: host.into(),
        endpoint: endpoint.into(),
        container: format!("{container}-id"),
        name: container.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        network_name: network_name.into(),
    }
}

fn peer(host: &str, endpoint: &str, ipv4: &str, ipv6: Option<&str>) -> PeerRecord {
    PeerRecord {
        host: host.into(),
        endpoint: endpoint.into(),
        vtep: "10.250.0.2".parse().unwrap(),
        port: 4789,
        mac: "02:42:0a:09:00:02".into(),
        ipv4: Some(ipv4.parse().unwrap()),
        ipv6: ipv6.map(|a| a.parse().unwrap()),
    }
}

/// A copy of the store holding these records, through the same path as watch events.
fn cache(names: &[(&str, NameRecord)], peers: &[(&str, PeerRecord)]) -> Cache {
    let mut cache = Cache::default();
    let mut revision = 1;
    for (network, record) in names {
        let key = records::name_key(network, &record.endpoint);
        cache.apply(&WatchEvent::Put(KeyValue { key, value: records::encode(record), revision }));
        revision += 1;
    }
    for (network, record) in peers {
        let key = records::peer_key(network, &record.endpoint);
        cache.apply(&WatchEvent::Put(KeyValue { key, value: records::encode(record), revision }));
        revision += 1;
    }
    cache
}

#[test]
fn a_name_is_answered_with_its_peers_addresses() {
    let copy = cache(
        &[("vni-5000", name("h2", "e1", "web", &["front", "web", ""], "ovl"))],
        &[("vni-5000", peer("h2", "e1", "10.9.0.2", Some("fd00::2")))],
    );
    let named = named_endpoints(&copy, &BTreeMap::new());
    assert_eq!(
        named,
        vec![NamedEndpoint {
            network: "vni-5000".into(),
            endpoint: "e1".into(),
            names: vec!["web".into(), "front".into()],
            network_names: vec!["ovl".into()],
            ipv4: Some("10.9.0.2".parse().unwrap()),
            ipv6: Some("fd00::2".parse().unwrap()),
        }]
    );

    // This host calls the same overlay by another Docker name: both are answered.
    let local = BTreeMap::from([("vni-5000".to_string(), "blue".to_string())]);
    assert_eq!(named_endpoints(&copy, &local)[0].network_names, vec!["ovl".to_string(), "blue".into()]);
    let same = BTreeMap::from([("vni-5000".to_string(), "ovl".to_string())]);
    assert_eq!(named_endpoints(&copy, &same)[0].network_names, vec!["ovl".to_string()]);
}

#[test]
fn a_name_without_its_peer_record_is_not_answered() {
    // e2's peer record is on another network, e3 has none: neither is answered, e1 is.
    let mut copy = cache(
        &[
            ("vni-5000", name("h2", "e1", "web", &[], "ovl")),
            ("vni-5000", name("h2", "e2", "db", &[], "ovl")),
            ("vni-5000", name("h2", "e3", "cache", &[], "ovl")),
        ],
        &[("vni-5000", peer("h2", "e1", "10.9.0.2", None)), ("vni-6000", peer("h2", "e2", "10.9.0.3", None))],
    );
    let answered = |copy: &Cache| -> Vec<String> {
        named_endpoints(copy, &BTreeMap::new()).into_iter().map(|n| n.endpoint).collect()
    };
    assert_eq!(answered(&copy), vec!["e1".to_string()]);

    // The endpoint goes: its peer record is deleted, and its name is no longer answered.
    copy.apply(&WatchEvent::Delete { key: records::peer_key("vni-5000", "e1"), revision: 100 });
    assert!(answered(&copy).is_empty());
}

#[test]
fn name_records_follow_the_watch() {
    let mut copy = Cache::default();
    let record = name("h2", "e1", "web", &[], "ovl");
    let key = records::name_key("vni-5000", "e1");
    assert_eq!(key, "overlay/names/vni-5000/e1");
    assert_eq!(records::names_prefix("vni-5000"), "overlay/names/vni-5000/");
    copy.apply(&WatchEvent::Put(KeyValue { key: key.clone(), value: records::encode(&record), revision: 5 }));
    assert_eq!(copy.names["vni-5000"]["e1"], (record.clone(), 5));
    // Older news changes nothing; unreadable records are skipped.
    let mut renamed = record.clone();
    renamed.name = "old".into();
    copy.apply(&WatchEvent::Put(KeyValue { key: key.clone(), value: records::encode(&renamed), revision: 4 }));
    copy.apply(&WatchEvent::Put(KeyValue {
        key: records::name_key("vni-5000", "e2"),
        value: b"junk".to_vec(),
        revision: 6,
    }));
    assert_eq!(copy.names["vni-5000"].len(), 1);
    assert_eq!(copy.names["vni-5000"]["e1"].0.name, "web");
    // A name record is not a peer: no network's FDB is touched.
    assert!(copy.peers.is_empty());
    copy.apply(&WatchEvent::Delete { key, revision: 7 });
    assert!(copy.names.is_empty());
}

fn endpoint(id: &str, container: &str, ipv4: &str) -> DockerEndpoint {
    DockerEndpoint {
        endpoint_id: id.into(),
        container_id: container.into(),
        name: String::new(),
        ipv4: Some(ipv4.parse().unwrap()),
        ipv6: None,
        mac: None,
    }
}

fn network(id: &str, endpoints: Vec<DockerEndpoint>) -> DockerNetwork {
    DockerNetwork {
        id: id.into(),
        name: format!("{id}-name"),
        driver: "loom-overlay".into(),
        scope: "local".into(),
        internal: false,
        ipam_driver: "loom-ipam".into(),
        pools: vec![],
        options: BTreeMap::new(),
        endpoints,
    }
}

#[test]
fn askers_are_containers_by_their_gateway_and_overlay_addresses() {
    let overlays = vec![
        network(
            "d1",
            vec![
                endpoint("e1", "c1", "10.9.0.2/24"),
                endpoint("e2", "c2", "10.9.0.3/24"),
                endpoint("e0", "", "10.9.0.9/24"),
            ],
        ),
        network("d2", vec![endpoint("e3", "c1", "10.8.0.2/24")]),
        // Not a network this host holds (no key): left out.
        network("d3", vec![endpoint("e4", "c3", "10.7.0.2/24")]),
    ];
    let gwbridge = network("gw", vec![endpoint("g1", "c1", "172.18.0.3/16"), endpoint("g9", "other", "172.18.0.9/16")]);
    let keys = BTreeMap::from([("d1".to_string(), "vni-1".to_string()), ("d2".to_string(), "vni-2".to_string())]);
    let more = BTreeMap::from([
        // Its address on a bridge network (which may hold its default route), and one it has already.
        ("c1".to_string(), vec!["172.17.0.5".parse().unwrap(), "10.9.0.2".parse().unwrap()]),
        ("c3".to_string(), vec!["172.17.0.6".parse().unwrap()]),
    ]);
    let askers = askers(&overlays, Some(&gwbridge), &more, &keys);
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    assert_eq!(
        askers,
        vec![
            Asker {
                addresses: vec![ip("10.9.0.2"), ip("10.8.0.2"), ip("172.18.0.3"), ip("172.17.0.5")],
                networks: BTreeSet::from(["vni-1".to_string(), "vni-2".to_string()]),
            },
            Asker { addresses: vec![ip("10.9.0.3")], networks: BTreeSet::from(["vni-1".to_string()]) },
        ]
    );
    assert_eq!(super::askers(&overlays, None, &more, &BTreeMap::new()), vec![]);
}

#[test]
fn a_pass_writes_only_what_changed_and_deletes_only_its_gone_endpoints() {
    let web = name("h1", "e1", "web", &["front"], "ovl");
    let db = name("h1", "e2", "db", &[], "ovl");
    let gone = name("h1", "e3", "old", &[], "ovl");
    let theirs = name("h2", "e9", "remote", &[], "ovl");
    let copy =
        cache(&[("vni-5000", web.clone()), ("vni-5000", db.clone()), ("vni-5000", gone), ("vni-5000", theirs)], &[]);
    let mut renamed = db.clone();
    renamed.aliases = vec!["database".into()];
    let new = name("h1", "e4", "new", &[], "ovl");
    let held: BTreeSet<(String, String)> =
        ["e1", "e2", "e4"].iter().map(|e| ("vni-5000".to_string(), e.to_string())).collect();
    let wanted = vec![
        ("vni-5000".to_string(), web.clone()),
        ("vni-5000".to_string(), renamed.clone()),
        ("vni-5000".to_string(), new.clone()),
    ];
    let plan = plan(wanted, &copy.names, "h1", &held);
    assert_eq!(plan.writes, vec![("vni-5000".to_string(), renamed), ("vni-5000".to_string(), new)]);
    // e3 is no longer held here; e9 is another host's.
    assert_eq!(plan.deletes, vec![("vni-5000".to_string(), "e3".to_string(), 3)]);

    // Nothing changed: nothing to do.
    let again = super::plan(vec![("vni-5000".to_string(), web)], &copy.names, "h1", &held);
    assert!(again.writes.is_empty());
    // An endpoint held on another network key is not this record's endpoint.
    let elsewhere: BTreeSet<(String, String)> = BTreeSet::from([("vni-6000".to_string(), "e1".to_string())]);
    assert_eq!(stale(&copy.names, "h1", &elsewhere).len(), 3);
}
