//! What loom-ipam tells reconciliation this host holds, and releasing it the way reconciliation
//! does (ReleaseAddress, then ReleasePool, through the IPAM driver), on the embedded store.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::scenarios::{gateway, ipam, none};
use netloom_ipam::alloc::{cidr::Subnet, keys};
use netloom_ipam::driver::IpamPlugin;
use netloom_ipam::store::{self, Store, DEFAULT_PREFIX};
use netloom_ipam::Ipam;
use netloom_plugin_api::engine::HeldAllocation;
use netloom_plugin_api::wire::ipam::{ReleaseAddressRequest, ReleasePoolRequest};
use netloom_plugin_api::IpamDriver;

async fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    store::open(None, dir, DEFAULT_PREFIX).await.unwrap()
}

/// One host's IPAM and its driver, sharing one state.
async fn host(store: &Arc<dyn Store>, name: &str) -> (Arc<Ipam>, IpamPlugin) {
    let ipam = Arc::new(ipam(store, name).await);
    (ipam.clone(), IpamPlugin::new(ipam))
}

async fn pool(ipam: &Ipam, subnet: &str) -> String {
    ipam.request_pool("LocalDefault", subnet, "", &none(), false).await.unwrap().pool_id
}

async fn address(ipam: &Ipam, pool_id: &str, wanted: &str) -> IpAddr {
    ipam.request_address(pool_id, wanted, &none()).await.unwrap().ip
}

async fn held(driver: &IpamPlugin) -> Vec<HeldAllocation> {
    driver.held_allocations().await.expect("loom-ipam takes part in reconciliation")
}

fn held_pool(pool_id: &str) -> HeldAllocation {
    HeldAllocation::Pool { pool_id: pool_id.to_string(), subnet: subnet_of(pool_id) }
}

fn held_address(pool_id: &str, ip: &str) -> HeldAllocation {
    HeldAllocation::Address { pool_id: pool_id.to_string(), subnet: subnet_of(pool_id), address: ip.parse().unwrap() }
}

fn held_gateway(pool_id: &str, ip: &str) -> HeldAllocation {
    HeldAllocation::Gateway { pool_id: pool_id.to_string(), subnet: subnet_of(pool_id), address: ip.parse().unwrap() }
}

fn subnet_of(pool_id: &str) -> ipnetwork::IpNetwork {
    pool_id.split_once('/').unwrap().1.parse().unwrap()
}

/// What reconciliation does with everything Docker no longer has.
async fn release(driver: &IpamPlugin, held: &[HeldAllocation]) {
    for allocation in held {
        match allocation {
            HeldAllocation::Address { pool_id, address, .. } | HeldAllocation::Gateway { pool_id, address, .. } => {
                let req = ReleaseAddressRequest { pool_id: pool_id.clone(), address: address.to_string() };
                driver.release_address(req).await.unwrap();
            }
            HeldAllocation::Pool { pool_id, .. } => {
                driver.release_pool(ReleasePoolRequest { pool_id: pool_id.clone() }).await.unwrap();
            }
        }
    }
}

async fn ipam_keys(store: &Arc<dyn Store>) -> Vec<String> {
    store.list("ipam/").await.unwrap().into_iter().map(|kv| kv.key).collect()
}

#[tokio::test]
async fn one_host_lists_and_releases_everything_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (h1, driver) = host(&store, "h1").await;
    let net = pool(&h1, "10.1.0.0/24").await;
    assert_eq!(pool(&h1, "10.1.0.0/24").await, net, "a second reference to the same pool");
    assert_eq!(h1.request_address(&net, "", &gateway()).await.unwrap().ip.to_string(), "10.1.0.1");
    address(&h1, &net, "").await;
    address(&h1, &net, "10.1.0.50").await;
    let v6 = h1.request_pool("LocalDefault", "fd00:1::/64", "", &none(), true).await.unwrap().pool_id;
    address(&h1, &v6, "").await;

    let listed = held(&driver).await;
    let expected = vec![
        held_address(&net, "10.1.0.2"),
        held_address(&net, "10.1.0.50"),
        held_address(&v6, "fd00:1::1"),
        held_gateway(&net, "10.1.0.1"),
        held_pool(&net),
        held_pool(&net),
        held_pool(&v6),
    ];
    assert_eq!(sorted(listed.clone()), sorted(expected));
    let first_pool = listed.iter().position(|h| matches!(h, HeldAllocation::Pool { .. })).unwrap();
    assert!(listed[first_pool..].iter().all(|h| matches!(h, HeldAllocation::Pool { .. })), "pools come last");

    release(&driver, &listed).await;
    assert_eq!(held(&driver).await, vec![]);
    assert_eq!(ipam_keys(&store).await, Vec::<String>::new(), "pools, indexes and addresses are all gone");
}

fn sorted(mut v: Vec<HeldAllocation>) -> Vec<HeldAllocation> {
    v.sort();
    v
}

#[tokio::test]
async fn a_shared_pool_loses_only_this_hosts_reference_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let ((ia, a), (ib, b)) = (host(&store, "host-a").await, host(&store, "host-b").await);
    let net = pool(&ia, "10.2.0.0/24").await;
    assert_eq!(pool(&ib, "10.2.0.0/24").await, net);
    ia.request_address(&net, "", &gateway()).await.unwrap();
    let on_a = address(&ia, &net, "").await;
    let on_b = address(&ib, &net, "").await;

    let held_a = held(&a).await;
    assert_eq!(held_a, vec![held_address(&net, &on_a.to_string()), held_pool(&net)], "no gateway: host-b shares it");
    assert_eq!(held(&b).await, vec![held_address(&net, &on_b.to_string()), held_pool(&net)]);

    release(&a, &held_a).await;
    let pools = ia.pools().await.unwrap();
    assert_eq!(pools.len(), 1, "host-b still holds the pool");
    assert_eq!(pools[0].hosts, [("host-b".to_string(), 1)].into());
    assert_eq!(pools[0].gateway.as_deref(), Some("10.2.0.1"));
    let left: Vec<IpAddr> = ib.addresses(&net).await.unwrap().iter().map(|a| a.ip).collect();
    assert_eq!(left, vec!["10.2.0.1".parse::<IpAddr>().unwrap(), on_b], "host-b's address and the gateway stay");
    assert!(ia.audit().await.unwrap().is_empty());
    assert_eq!(held(&a).await, vec![]);

    let held_b = held(&b).await;
    assert_eq!(
        held_b,
        vec![held_address(&net, &on_b.to_string()), held_gateway(&net, "10.2.0.1"), held_pool(&net)],
        "host-b is the last holder: the gateway is its to release now"
    );
    release(&b, &held_b).await;
    assert_eq!(ipam_keys(&store).await, Vec::<String>::new());
}

/// A Docker 20.10 global network: one host requested the pool, another only addresses in it.
#[tokio::test]
async fn a_pool_stays_listed_out_while_another_host_has_addresses_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let ((ia, a), (ib, b)) = (host(&store, "host-a").await, host(&store, "host-b").await);
    let net = ia.request_pool("GlobalDefault", "10.3.0.0/24", "", &none(), false).await.unwrap().pool_id;
    ia.request_address(&net, "", &gateway()).await.unwrap();
    let on_a = address(&ia, &net, "").await;
    let on_b = address(&ib, &net, "").await;

    let held_a = held(&a).await;
    assert_eq!(held_a, vec![held_address(&net, &on_a.to_string())], "the pool would take host-b's address with it");
    let held_b = held(&b).await;
    assert_eq!(held_b, vec![held_address(&net, &on_b.to_string())]);

    release(&a, &held_a).await;
    assert_eq!(ib.addresses(&net).await.unwrap().iter().map(|a| a.ip).collect::<Vec<_>>().len(), 2);
    release(&b, &held_b).await;
    let held_a = held(&a).await;
    assert_eq!(held_a, vec![held_gateway(&net, "10.3.0.1"), held_pool(&net)]);
    release(&a, &held_a).await;
    assert_eq!(ipam_keys(&store).await, Vec::<String>::new());
}

/// Owner records written without a host (by a hand or an old tool) are read, and neither they nor
/// the pool holding them are listed as this host's.
#[tokio::test]
async fn an_address_without_a_recorded_host_is_nobodys_to_release() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (h1, driver) = host(&store, "h1").await;
    let net = pool(&h1, "10.4.0.0/24").await;
    let mine = address(&h1, &net, "").await;
    let subnet = Subnet::parse("10.4.0.0/24").unwrap();
    let key = keys::addr_owner("LocalDefault", &subnet, "10.4.0.77".parse().unwrap());
    store.put(&key, br#"{"owner": "", "kind": "endpoint", "at": 1}"#.to_vec()).await.unwrap();
    let listed = held(&driver).await;
    assert_eq!(listed, vec![held_address(&net, &mine.to_string())], "nor is the pool, which would take it along");
}

/// Releasing what was already released changes nothing and is no error.
#[tokio::test]
async fn releasing_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let ((_, a), (ib, b)) = (host(&store, "host-a").await, host(&store, "host-b").await);
    let net = pool(&ib, "10.5.0.0/24").await;
    let ip = address(&ib, &net, "").await;
    let listed = held(&b).await;
    assert_eq!(listed, vec![held_address(&net, &ip.to_string()), held_pool(&net)]);
    // Another host's release of the pool does not touch host-b's reference.
    a.release_pool(ReleasePoolRequest { pool_id: net.clone() }).await.unwrap();
    assert_eq!(held(&b).await, listed);
    let only_address = &listed[..1];
    release(&b, only_address).await;
    release(&b, only_address).await;
    assert_eq!(held(&b).await, vec![held_pool(&net)]);
}
