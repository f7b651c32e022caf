//! Every claim has a holder: an address is released only by the host (and endpoint) holding it, a
//! VNI only for its owner, a pool reference only by its host. And writes whose outcome the store
//! did not tell (a timeout after the request went out) are read back before being sent again, so
//! nothing is claimed twice or left behind. Embedded store; the flaky wrapper plays the timeouts.

mod common;

use std::sync::Arc;

use common::flaky::{FlakyStore, Lost};
use common::scenarios::{gateway, ipam, none, owner};
use netloom_ipam::alloc::keys;
use netloom_ipam::driver::IpamPlugin;
use netloom_ipam::store::{self, Store, DEFAULT_PREFIX};
use netloom_ipam::{Ipam, IpamError};
use netloom_plugin_api::wire::ipam::ReleaseAddressRequest;
use netloom_plugin_api::IpamDriver;

async fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    store::open(None, dir, DEFAULT_PREFIX).await.unwrap()
}

async fn pool(ipam: &Ipam, subnet: &str) -> String {
    ipam.request_pool("LocalDefault", subnet, "", &none(), false).await.unwrap().pool_id
}

async fn held_ips(ipam: &Ipam, pool_id: &str) -> Vec<String> {
    ipam.addresses(pool_id).await.unwrap().into_iter().map(|a| format!("{}@{}", a.ip, a.owner.host)).collect()
}

async fn references(ipam: &Ipam, pool_id: &str) -> Vec<(String, u32)> {
    let pools = ipam.pools().await.unwrap();
    pools.into_iter().find(|p| p.pool_id == pool_id).map(|p| p.hosts.into_iter().collect()).unwrap_or_default()
}

#[tokio::test]
async fn only_the_holding_host_releases_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b) = (ipam(&store, "host-a").await, ipam(&store, "host-b").await);
    let net = pool(&a, "10.70.0.0/24").await;
    assert_eq!(pool(&b, "10.70.0.0/24").await, net);

    // It works: a host releases its own address.
    let own = a.request_address(&net, "10.70.0.5", &none()).await.unwrap().ip.to_string();
    a.release_address(&net, &own).await.unwrap();
    assert_eq!(held_ips(&a, &net).await, Vec::<String>::new());

    // Another host's release is refused, and the address stays with its holder.
    let ip = a.request_address(&net, "10.70.0.5", &owner("ep-a")).await.unwrap().ip.to_string();
    let err = b.release_address(&net, &ip).await.unwrap_err();
    assert!(matches!(err, IpamError::NotHolder(_)), "{err:?}");
    let text = err.to_string();
    for needle in ["10.70.0.5", "held by host host-a", "endpoint ep-a", "not by host host-b"] {
        assert!(text.contains(needle), "{text:?} should say {needle:?}");
    }
    assert_eq!(held_ips(&a, &net).await, vec!["10.70.0.5@host-a"]);
    let taken = b.request_address(&net, "10.70.0.5", &none()).await.unwrap_err();
    assert!(matches!(taken, IpamError::InUse(_)), "still held: {taken:?}");

    // The same through loom-ipam's socket handler, as ReleaseAddress from B's dockerd.
    let driver_b = IpamPlugin::new(Arc::new(ipam(&store, "host-b").await));
    let req = ReleaseAddressRequest { pool_id: net.clone(), address: ip.clone() };
    let refused = driver_b.release_address(req).await.unwrap_err();
    assert!(refused.message().contains("only the host that holds an address can release it"), "{refused:?}");
    assert_eq!(held_ips(&a, &net).await, vec!["10.70.0.5@host-a"]);

    // An endpoint named at release must be the one that holds it.
    let wrong = a.release_address_of(&net, &ip, Some("ep-other")).await.unwrap_err();
    assert!(matches!(wrong, IpamError::NotHolder(_)) && wrong.to_string().contains("endpoint ep-a"), "{wrong:?}");
    assert_eq!(held_ips(&a, &net).await, vec!["10.70.0.5@host-a"]);
    a.release_address_of(&net, &ip, Some("ep-a")).await.unwrap();
    assert_eq!(held_ips(&a, &net).await, Vec::<String>::new());

    // The shared gateway is nobody's to free: a release of it by any host changes nothing.
    let gw = a.request_address(&net, "", &gateway()).await.unwrap().ip.to_string();
    b.release_address(&net, &gw).await.unwrap();
    assert_eq!(held_ips(&a, &net).await, vec![format!("{gw}@host-a")]);
}

#[tokio::test]
async fn a_dead_hosts_addresses_are_reclaimed_by_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b) = (ipam(&store, "host-a").await, ipam(&store, "host-b").await);
    let net = pool(&a, "10.71.0.0/24").await;
    pool(&b, "10.71.0.0/24").await;
    a.request_address(&net, "10.71.0.9", &none()).await.unwrap();
    b.request_address(&net, "10.71.0.10", &none()).await.unwrap();
    store.delete(&keys::host("host-a")).await.unwrap(); // host-a's lease is gone
    let done = b.reclaim_host("host-a").await.unwrap();
    assert_eq!((done.addresses, done.pool_references), (1, 1));
    assert_eq!(held_ips(&b, &net).await, vec!["10.71.0.10@host-b"]);
}

#[tokio::test]
async fn a_vni_is_released_only_for_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (a, b) = (ipam(&store, "host-a").await, ipam(&store, "host-b").await);
    let first = a.allocate_vni("net-one").await.unwrap();
    b.release_vni_of(first, "net-one").await.unwrap(); // any host, for the right network
    assert_eq!(a.vni_of("net-one").await.unwrap(), None);

    let vni = a.allocate_vni("net-one").await.unwrap();
    let err = b.release_vni_of(vni, "net-two").await.unwrap_err();
    assert!(matches!(err, IpamError::NotHolder(_)), "{err:?}");
    assert!(err.to_string().contains(&format!("VNI {vni} is held by net-one (host host-a), not by net-two")), "{err}");
    assert_eq!(a.vni_of("net-one").await.unwrap(), Some(vni));
    assert_eq!(a.vnis().await.unwrap().len(), 1);
}

/// Two hosts over a store whose transactions on `key` can be made to time out.
async fn flaky(dir: &std::path::Path, key: &str, lost: Lost) -> (Arc<FlakyStore>, Ipam, Ipam) {
    let flaky = Arc::new(FlakyStore::new(open(dir).await, key, lost));
    let store: Arc<dyn Store> = flaky.clone();
    let a = Ipam::new(store.clone(), "host-a", Default::default()).await.unwrap();
    let b = Ipam::new(store, "host-b", Default::default()).await.unwrap();
    (flaky, a, b)
}

#[tokio::test]
async fn a_pool_reference_whose_write_timed_out_after_applying_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, a, b) = flaky(dir.path(), "ipam/pools/", Lost::Answer).await;

    // Creating: the first write is applied but its answer lost.
    flaky.fail(1, 0);
    let net = pool(&a, "10.72.0.0/24").await;
    assert_eq!(flaky.sent(), 1, "read back instead of sent again");
    assert_eq!(references(&a, &net).await, vec![("host-a".to_string(), 1)]);

    // Joining from another host, twice over.
    flaky.fail(1, 0);
    assert_eq!(pool(&b, "10.72.0.0/24").await, net);
    assert_eq!(flaky.sent(), 1);
    flaky.fail(1, 0);
    pool(&b, "10.72.0.0/24").await;
    assert_eq!(references(&a, &net).await, vec![("host-a".to_string(), 1), ("host-b".to_string(), 2)]);

    // Dropping: each release drops exactly one reference; the last one deletes the pool.
    flaky.fail(1, 0);
    b.release_pool(&net).await.unwrap();
    assert_eq!(references(&a, &net).await, vec![("host-a".to_string(), 1), ("host-b".to_string(), 1)]);
    b.release_pool(&net).await.unwrap();
    flaky.fail(1, 0);
    a.release_pool(&net).await.unwrap();
    assert!(a.pools().await.unwrap().is_empty(), "no leaked reference keeps the subnet");
}

#[tokio::test]
async fn a_pool_write_lost_before_the_store_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, a, _) = flaky(dir.path(), "ipam/pools/", Lost::Request).await;
    flaky.fail(2, 0);
    let net = pool(&a, "10.73.0.0/24").await;
    assert_eq!(flaky.sent(), 3, "two lost, read back as not applied, sent again");
    assert_eq!(references(&a, &net).await, vec![("host-a".to_string(), 1)]);

    // Lost every time: a bounded number of sends, then the store's error.
    flaky.fail(10, 0);
    let err = a.request_pool("LocalDefault", "10.73.0.0/24", "", &none(), false).await.unwrap_err();
    assert!(matches!(err, IpamError::Store(_)) && err.to_string().contains("timed out"), "{err:?}");
    assert_eq!(flaky.sent(), 3);
    assert_eq!(references(&a, &net).await, vec![("host-a".to_string(), 1)]);
}

#[tokio::test]
async fn an_unknown_outcome_that_cannot_be_read_back_is_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, a, _) = flaky(dir.path(), "ipam/pools/", Lost::Answer).await;
    flaky.fail(1, 10);
    let err = a.request_pool("LocalDefault", "10.74.0.0/24", "", &none(), false).await.unwrap_err();
    assert!(matches!(err, IpamError::Store(_)), "{err:?}");
    assert_eq!(flaky.sent(), 1, "a write that may have been applied is never sent blindly again");
    flaky.fail(0, 0);
    // It had been applied: the reference is there once, for reconciliation to find.
    assert_eq!(references(&a, "LocalDefault/10.74.0.0/24").await, vec![("host-a".to_string(), 1)]);
}

#[tokio::test]
async fn an_address_whose_claim_timed_out_after_applying_is_handed_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, a, b) = flaky(dir.path(), "/ips/", Lost::Answer).await;
    let net = pool(&a, "10.75.0.0/24").await;
    pool(&b, "10.75.0.0/24").await;

    flaky.fail(1, 0);
    let first = a.request_address(&net, "", &owner("ep-1")).await.unwrap().ip.to_string();
    assert_eq!(first, "10.75.0.1");
    flaky.fail(1, 0);
    let specific = a.request_address(&net, "10.75.0.20", &owner("ep-2")).await.unwrap().ip.to_string();
    assert_eq!(specific, "10.75.0.20");
    flaky.fail(1, 0);
    let gw = b.request_address(&net, "", &gateway()).await.unwrap().ip.to_string();
    assert_eq!(gw, "10.75.0.2");
    assert_eq!(flaky.sent(), 1);
    assert_eq!(held_ips(&a, &net).await, vec!["10.75.0.1@host-a", "10.75.0.2@host-b", "10.75.0.20@host-a"]);
    assert_eq!(a.request_address(&net, "", &none()).await.unwrap().ip.to_string(), "10.75.0.3");

    // A release whose answer is lost: released, and nothing else.
    flaky.fail(1, 0);
    a.release_address(&net, &specific).await.unwrap();
    assert_eq!(held_ips(&a, &net).await, vec!["10.75.0.1@host-a", "10.75.0.2@host-b", "10.75.0.3@host-a"]);
    assert!(a.audit().await.unwrap().is_empty(), "bitmaps and owner records agree");
}

#[tokio::test]
async fn an_address_claim_lost_before_the_store_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, a, _) = flaky(dir.path(), "/ips/", Lost::Request).await;
    let net = pool(&a, "10.76.0.0/24").await;
    flaky.fail(1, 0);
    assert_eq!(a.request_address(&net, "", &none()).await.unwrap().ip.to_string(), "10.76.0.1");
    assert_eq!(flaky.sent(), 2);
    assert_eq!(held_ips(&a, &net).await, vec!["10.76.0.1@host-a"]);
}

#[tokio::test]
async fn a_vni_whose_claim_timed_out_after_applying_is_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let (flaky, a, b) = flaky(dir.path(), "ipam/vnis/", Lost::Answer).await;
    flaky.fail(1, 0);
    let vni = a.allocate_vni("net-x").await.unwrap();
    assert_eq!(flaky.sent(), 1);
    assert_eq!(b.allocate_vni("net-y").await.unwrap(), vni + 1, "the first VNI is taken once, by net-x");
    flaky.fail(1, 0);
    a.reserve_vni(9000, "net-z").await.unwrap();
    assert_eq!(a.vni_of("net-z").await.unwrap(), Some(9000));
    flaky.fail(1, 0);
    b.release_vni_of(vni, "net-x").await.unwrap();
    let left: Vec<(u32, String)> = a.vnis().await.unwrap().into_iter().map(|v| (v.vni, v.owner.owner)).collect();
    assert_eq!(left, vec![(vni + 1, "net-y".to_string()), (9000, "net-z".to_string())]);
    assert!(a.audit().await.unwrap().is_empty());
}
