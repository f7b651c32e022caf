use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const ASKER: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2));

fn endpoint(network: &str, id: &str, names: &[&str], network_names: &[&str], ipv4: &str) -> NamedEndpoint {
    NamedEndpoint {
        network: network.to_string(),
        endpoint: id.to_string(),
        names: names.iter().map(|n| n.to_string()).collect(),
        network_names: network_names.iter().map(|n| n.to_string()).collect(),
        ipv4: Some(ipv4.parse().unwrap()),
        ipv6: None,
    }
}

fn asker(address: IpAddr, networks: &[&str]) -> Asker {
    Asker { addresses: vec![address], networks: networks.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>() }
}

fn v4(address: &str) -> IpAddr {
    IpAddr::V4(address.parse().unwrap())
}

/// `web` (alias `www`) on vni-1 ("front"), asked by a container on vni-1.
fn directory() -> Directory {
    let directory = Directory::new();
    directory.set_endpoints(vec![endpoint("vni-1", "e1", &["web", "www"], &["front"], "10.0.1.2")]);
    directory.set_askers(vec![asker(ASKER, &["vni-1"])]);
    directory
}

#[test]
fn container_name_alias_and_network_qualified_name_are_answered() {
    let directory = directory();
    for name in ["web", "www", "web.front", "www.front"] {
        assert_eq!(directory.lookup(ASKER, name, QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]), "{name}");
    }
}

#[test]
fn names_are_case_insensitive_and_a_trailing_dot_is_ignored() {
    let directory = directory();
    for name in ["WEB", "Web.", "web.FRONT.", "wWw"] {
        assert_eq!(directory.lookup(ASKER, name, QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]), "{name}");
    }
    let upper = Directory::new();
    upper.set_endpoints(vec![endpoint("vni-1", "e1", &["Web"], &["Front"], "10.0.1.2")]);
    upper.set_askers(vec![asker(ASKER, &["vni-1"])]);
    assert_eq!(upper.lookup(ASKER, "web.front", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]));
}

#[test]
fn other_names_are_not_ours() {
    let directory = directory();
    assert_eq!(directory.lookup(ASKER, "web", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]));
    for name in ["example.com", "we", "web.back", "front", "", "."] {
        assert_eq!(directory.lookup(ASKER, name, QueryKind::A), Lookup::NotOurs, "{name:?}");
    }
}

#[test]
fn a_source_that_is_no_container_of_this_host_is_refused_for_every_name() {
    let directory = directory();
    assert_eq!(directory.lookup(ASKER, "web", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]));
    let stranger = v4("172.18.0.99");
    for name in ["web", "example.com", "."] {
        for kind in [QueryKind::A, QueryKind::Aaaa, QueryKind::Other] {
            assert_eq!(directory.lookup(stranger, name, kind), Lookup::Refused, "{name} {kind:?}");
        }
    }
}

#[test]
fn a_name_on_a_network_the_asker_is_not_on_is_not_ours() {
    let directory = Directory::new();
    directory.set_endpoints(vec![endpoint("vni-2", "e2", &["db"], &["back"], "10.0.2.2")]);
    let inside = v4("172.18.0.3");
    directory.set_askers(vec![asker(ASKER, &["vni-1"]), asker(inside, &["vni-2"])]);
    assert_eq!(directory.lookup(inside, "db", QueryKind::A), Lookup::Found(vec![v4("10.0.2.2")]));
    assert_eq!(directory.lookup(ASKER, "db", QueryKind::A), Lookup::NotOurs);
    assert_eq!(directory.lookup(ASKER, "db.back", QueryKind::A), Lookup::NotOurs);
}

#[test]
fn a_name_on_several_shared_networks_answers_each_address_once() {
    let directory = Directory::new();
    directory.set_endpoints(vec![
        endpoint("vni-2", "b", &["app"], &["back"], "10.0.2.2"),
        endpoint("vni-1", "a", &["app"], &["front"], "10.0.1.2"),
        endpoint("vni-3", "c", &["app"], &["other"], "10.0.3.2"),
        endpoint("vni-1", "d", &["app"], &["front"], "10.0.1.2"),
    ]);
    directory.set_askers(vec![asker(ASKER, &["vni-1", "vni-2"])]);
    assert_eq!(directory.lookup(ASKER, "app", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2"), v4("10.0.2.2")]));
    assert_eq!(directory.lookup(ASKER, "app.back", QueryKind::A), Lookup::Found(vec![v4("10.0.2.2")]));
    assert_eq!(directory.lookup(ASKER, "app.other", QueryKind::A), Lookup::NotOurs);
}

#[test]
fn every_docker_name_of_a_network_qualifies_the_name() {
    let directory = Directory::new();
    directory.set_endpoints(vec![endpoint("vni-1", "e1", &["web"], &["front", "front-old"], "10.0.1.2")]);
    directory.set_askers(vec![asker(ASKER, &["vni-1"])]);
    for name in ["web.front", "web.front-old"] {
        assert_eq!(directory.lookup(ASKER, name, QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]), "{name}");
    }
}

#[test]
fn a_name_of_ours_without_an_address_of_the_asked_kind_is_found_empty() {
    let directory = directory();
    assert_eq!(directory.lookup(ASKER, "web", QueryKind::Aaaa), Lookup::Found(vec![]));
    assert_eq!(directory.lookup(ASKER, "web", QueryKind::Other), Lookup::Found(vec![]));

    let v6: Ipv6Addr = "fd00::2".parse().unwrap();
    let dual = Directory::new();
    dual.set_endpoints(vec![NamedEndpoint {
        ipv6: Some(v6),
        ..endpoint("vni-1", "e1", &["web"], &["front"], "10.0.1.2")
    }]);
    dual.set_askers(vec![asker(ASKER, &["vni-1"])]);
    assert_eq!(dual.lookup(ASKER, "web", QueryKind::Aaaa), Lookup::Found(vec![IpAddr::V6(v6)]));
    assert_eq!(dual.lookup(ASKER, "web", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]));
}

#[test]
fn an_asker_is_known_by_each_of_its_addresses_including_ipv4_mapped_ones() {
    let directory = directory();
    let overlay = v4("10.0.1.9");
    directory.set_askers(vec![Asker { addresses: vec![ASKER, overlay], networks: ["vni-1".to_string()].into() }]);
    let mapped = IpAddr::V6(Ipv4Addr::new(172, 18, 0, 2).to_ipv6_mapped());
    for source in [ASKER, overlay, mapped] {
        assert_eq!(directory.lookup(source, "web", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]), "{source}");
    }
}

#[test]
fn replacing_endpoints_and_askers_forgets_the_old_ones() {
    let directory = directory();
    assert_eq!(directory.lookup(ASKER, "web", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]));
    directory.set_endpoints(vec![endpoint("vni-1", "e3", &["api"], &["front"], "10.0.1.3")]);
    assert_eq!(directory.lookup(ASKER, "web", QueryKind::A), Lookup::NotOurs);
    assert_eq!(directory.lookup(ASKER, "api", QueryKind::A), Lookup::Found(vec![v4("10.0.1.3")]));
    directory.set_askers(vec![]);
    assert_eq!(directory.lookup(ASKER, "api", QueryKind::A), Lookup::Refused);
}

#[test]
fn another_container_of_this_host_is_forwarded_but_never_answered_names() {
    let directory = directory();
    let bridge_container = v4("172.17.0.5");
    let lan_host = v4("192.168.1.20");
    assert_eq!(directory.lookup(bridge_container, "web", QueryKind::A), Lookup::Refused, "before its subnet is known");
    directory.set_container_subnets(vec!["172.17.0.0/16".parse().unwrap()]);
    for name in ["web", "web.front", "example.com"] {
        assert_eq!(directory.lookup(bridge_container, name, QueryKind::A), Lookup::NotOurs, "{name}");
        assert_eq!(directory.lookup(lan_host, name, QueryKind::A), Lookup::Refused, "{name}");
    }
    assert_eq!(directory.lookup(ASKER, "web", QueryKind::A), Lookup::Found(vec![v4("10.0.1.2")]));
}
