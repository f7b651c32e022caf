use super::*;
use crate::engine::model::{DockerEndpoint, DockerPool};
use crate::engine::reconcile::HeldEndpoint;

const CONFIRM: Duration = Duration::from_secs(5);

fn held(id: &str, global: bool, endpoints: &[&str]) -> HeldNetwork {
    HeldNetwork {
        id: id.into(),
        global,
        endpoints: endpoints.iter().map(|e| HeldEndpoint { id: e.to_string() }).collect(),
    }
}

fn docker(id: &str, endpoints: &[(&str, &str)]) -> DockerNetwork {
    DockerNetwork {
        id: id.into(),
        name: format!("name-{id}"),
        driver: "loom-bridge".into(),
        scope: "local".into(),
        internal: false,
        ipam_driver: "loom-ipam".into(),
        pools: Vec::new(),
        options: Default::default(),
        endpoints: endpoints
            .iter()
            .map(|(endpoint_id, ipv4)| DockerEndpoint {
                endpoint_id: endpoint_id.to_string(),
                container_id: format!("c-{endpoint_id}"),
                name: String::new(),
                ipv4: ipv4.parse().ok(),
                ipv6: None,
                mac: None,
            })
            .collect(),
    }
}

fn endpoint(network: &str, endpoint: &str) -> Subject {
    Subject::Endpoint { network_id: network.into(), endpoint_id: endpoint.into() }
}

fn network(id: &str) -> Subject {
    Subject::Network { id: id.into(), global: false }
}

#[test]
fn missing_endpoints_come_before_their_networks_and_present_ones_are_kept() {
    let held = [held("gone", false, &["e3"]), held("n1", false, &["e1", "e2"])];
    let docker = [docker("n1", &[("e1", "")])];
    let missing = missing_networks(&held, &docker);
    assert_eq!(missing, vec![endpoint("gone", "e3"), network("gone"), endpoint("n1", "e2")]);

    // Released in order: every endpoint before any network.
    let mut suspects = Suspects::default();
    let t0 = Instant::now();
    suspects.judge(missing.clone(), t0, CONFIRM);
    let verdict = suspects.judge(missing, t0 + CONFIRM, CONFIRM);
    let order: Vec<Subject> = verdict.release.into_iter().map(|(s, _)| s).collect();
    assert_eq!(order, vec![endpoint("gone", "e3"), endpoint("n1", "e2"), network("gone")]);
}

#[test]
fn a_suspect_is_released_only_after_confirm_after() {
    let mut suspects = Suspects::default();
    let t0 = Instant::now();
    let first = suspects.judge(vec![network("n")], t0, CONFIRM);
    assert_eq!(first, Verdict { release: vec![], suspected: vec![network("n")], cleared: vec![] });
    assert_eq!(suspects.next_due(CONFIRM), Some(t0 + CONFIRM));

    let early = suspects.judge(vec![network("n")], t0 + CONFIRM - Duration::from_millis(1), CONFIRM);
    assert_eq!(early, Verdict::default(), "not yet confirmed");

    let late = suspects.judge(vec![network("n")], t0 + CONFIRM + Duration::from_secs(1), CONFIRM);
    assert_eq!(late.release, vec![(network("n"), CONFIRM + Duration::from_secs(1))]);

    // Not forgotten (the release failed): released again by the next pass.
    let again = suspects.judge(vec![network("n")], t0 + 2 * CONFIRM, CONFIRM);
    assert_eq!(again.release.len(), 1);
    suspects.forget(&network("n"));
    assert!(suspects.is_empty());
}

#[test]
fn what_reappears_is_cleared_and_judged_afresh() {
    let mut suspects = Suspects::default();
    let t0 = Instant::now();
    suspects.judge(vec![network("n"), endpoint("n", "e")], t0, CONFIRM);
    let back = suspects.judge(vec![endpoint("n", "e")], t0 + Duration::from_secs(1), CONFIRM);
    assert_eq!(back.cleared, vec![network("n")]);
    assert!(back.release.is_empty());

    // Missing again later: a new suspect, not confirmed by the old sighting.
    let t1 = t0 + 10 * CONFIRM;
    let verdict = suspects.judge(vec![network("n"), endpoint("n", "e")], t1, CONFIRM);
    assert_eq!(verdict.suspected, vec![network("n")]);
    assert_eq!(verdict.release, vec![(endpoint("n", "e"), t1 - t0)]);
    assert_eq!(suspects.len(), 2);
}

#[test]
fn nothing_is_missing_when_docker_has_everything() {
    let held = [held("n1", false, &["e1"]), held("n2", true, &[])];
    let docker = [docker("n1", &[("e1", "")]), docker("n2", &[])];
    assert!(missing_networks(&held, &docker).is_empty());
    let mut suspects = Suspects::default();
    assert_eq!(suspects.judge(Vec::new(), Instant::now(), CONFIRM), Verdict::default());
}

#[test]
fn a_global_network_docker_does_not_list_goes_to_the_driver_without_its_endpoints() {
    let missing = missing_networks(&[held("g", true, &["e1"])], &[]);
    assert_eq!(missing, vec![Subject::Network { id: "g".into(), global: true }]);
    // Listed by Docker: its endpoints are judged like any other.
    let missing = missing_networks(&[held("g", true, &["e1"])], &[docker("g", &[])]);
    assert_eq!(missing, vec![endpoint("g", "e1")]);
}

fn pool(subnet: &str, gateway: Option<&str>, aux: &[&str]) -> DockerPool {
    DockerPool {
        subnet: Some(subnet.parse().unwrap()),
        ip_range: None,
        gateway: gateway.map(|g| g.parse().unwrap()),
        aux_addresses: aux.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

fn address(pool_id: &str, subnet: &str, ip: &str) -> HeldAllocation {
    HeldAllocation::Address { pool_id: pool_id.into(), subnet: subnet.parse().unwrap(), address: ip.parse().unwrap() }
}

#[test]
fn ipam_addresses_are_matched_to_endpoints_gateways_and_aux_addresses_of_their_subnet() {
    let mut with_pool = docker("n1", &[("e1", "10.40.0.3/24"), ("e2", "10.41.0.9/24")]);
    with_pool.pools = vec![pool("10.40.0.0/24", Some("10.40.0.1"), &["10.40.0.2"])];
    let p = "loom/10.40.0.0/24";
    let held = [
        address(p, "10.40.0.0/24", "10.40.0.1"),
        address(p, "10.40.0.0/24", "10.40.0.2"),
        address(p, "10.40.0.0/24", "10.40.0.3"),
        address(p, "10.40.0.0/24", "10.40.0.4"),
        // An endpoint address outside the pool's subnet does not keep an address of this pool.
        address(p, "10.40.0.0/24", "10.41.0.9"),
        HeldAllocation::Gateway {
            pool_id: p.into(),
            subnet: "10.40.0.0/24".parse().unwrap(),
            address: "10.40.0.1".parse().unwrap(),
        },
        HeldAllocation::Pool { pool_id: p.into(), subnet: "10.40.0.0/24".parse().unwrap() },
    ];
    let missing = missing_allocations(&held, &[with_pool]);
    let addr = |ip: &str| Subject::Address { pool_id: p.into(), address: ip.parse().unwrap() };
    assert_eq!(missing, vec![addr("10.40.0.4"), addr("10.41.0.9")]);
}

#[test]
fn ipam_pools_and_gateways_of_a_subnet_docker_lacks_are_released_after_the_addresses() {
    let mut other = docker("n2", &[]);
    other.pools = vec![pool("10.50.0.0/24", None, &[])];
    let p = "loom/10.40.0.0/24";
    let held = [
        HeldAllocation::Pool { pool_id: p.into(), subnet: "10.40.0.0/24".parse().unwrap() },
        HeldAllocation::Pool { pool_id: p.into(), subnet: "10.40.0.0/24".parse().unwrap() },
        HeldAllocation::Gateway {
            pool_id: p.into(),
            subnet: "10.40.0.0/24".parse().unwrap(),
            address: "10.40.0.1".parse().unwrap(),
        },
        address(p, "10.40.0.0/24", "10.40.0.7"),
        // The same subnet written with host bits is the same subnet; a gateway Docker does not show is kept with it.
        HeldAllocation::Gateway {
            pool_id: "q".into(),
            subnet: "10.50.0.9/24".parse().unwrap(),
            address: "10.50.0.1".parse().unwrap(),
        },
    ];
    let missing = missing_allocations(&held, &[other]);
    let mut suspects = Suspects::default();
    let t0 = Instant::now();
    suspects.judge(missing.clone(), t0, CONFIRM);
    let verdict = suspects.judge(missing, t0 + CONFIRM, CONFIRM);
    let order: Vec<Subject> = verdict.release.into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        order,
        vec![
            Subject::Address { pool_id: p.into(), address: "10.40.0.7".parse().unwrap() },
            Subject::Gateway { pool_id: p.into(), address: "10.40.0.1".parse().unwrap() },
            Subject::Pool { pool_id: p.into() },
            Subject::Pool { pool_id: p.into() },
        ],
        "each held pool reference is released once"
    );
}

#[test]
fn global_pools_docker_does_not_show_are_set_apart_and_local_ones_are_not() {
    let mut listed = docker("g1", &[]);
    listed.pools = vec![pool("10.0.1.0/24", None, &[])];
    let held = [
        HeldAllocation::Pool { pool_id: "GlobalDefault/10.0.1.0/24".into(), subnet: "10.0.1.0/24".parse().unwrap() },
        HeldAllocation::Pool { pool_id: "GlobalDefault/10.0.2.0/24".into(), subnet: "10.0.2.0/24".parse().unwrap() },
        address("GlobalDefault/10.0.2.0/24", "10.0.2.0/24", "10.0.2.5"),
        HeldAllocation::Pool { pool_id: "LocalDefault/10.0.3.0/24".into(), subnet: "10.0.3.0/24".parse().unwrap() },
    ];
    assert_eq!(unseen_global_allocations(&held, &[listed]), held[1..3].to_vec());
}
