//! The Consul backend against a fake agent on loopback (tests/common/fake_consul.rs), which speaks
//! the documented subset of Consul's HTTP API. No live Consul is involved.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_consul::FakeConsul;
use common::silent::Silent;
use common::{conformance, model, scenarios, unique_prefix};
use netloom_ipam::store::{self, Store, StoreOptions};
use netloom_ipam::{IpamError, StoreError};
use proptest::test_runner::{Config, TestRunner};

async fn connect_url(url: &str, prefix: &str) -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { prefix: prefix.to_string(), ..StoreOptions::default() };
    store::open_with(Some(url), dir.path(), options).await.unwrap()
}

async fn connect(consul: &FakeConsul, test: &str) -> Arc<dyn Store> {
    connect_url(&consul.url(), &unique_prefix(test)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance() {
    let consul = FakeConsul::start().await;
    conformance::basics(connect(&consul, "basics").await).await;
    conformance::transactions(connect(&consul, "txn").await).await;
    conformance::watches(connect(&consul, "watch").await).await;
    conformance::cas_counter(connect(&consul, "cas").await, 4, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_scenarios() {
    let consul = FakeConsul::start().await;
    scenarios::pools(&scenarios::ipam(&connect(&consul, "pools").await, "h1").await).await;
    scenarios::addresses(&scenarios::ipam(&connect(&consul, "addrs").await, "h1").await).await;
    scenarios::vnis(&connect(&consul, "vnis").await).await;
    let prefix = unique_prefix("multi");
    let a = scenarios::ipam(&connect_url(&consul.url(), &prefix).await, "a").await;
    let b = scenarios::ipam(&connect_url(&consul.url(), &prefix).await, "b").await;
    scenarios::multi_host(&a, &b).await;
}

#[test]
fn random_sequences_never_duplicate_or_leak() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let consul = rt.block_on(FakeConsul::start());
    let mut runner = TestRunner::new(Config { cases: 8, failure_persistence: None, ..Config::default() });
    runner
        .run(&model::actions(50), |actions| {
            rt.block_on(async { model::run(connect(&consul, "model").await, actions).await });
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_hold_leased_keys() {
    let consul = FakeConsul::start().await;
    let prefix = unique_prefix("session");
    let observer = connect_url(&consul.url(), &prefix).await;
    let leased = connect_url(&consul.url(), &prefix).await;
    leased.put_leased("hosts/x", b"1".to_vec()).await.unwrap();
    leased.put_leased("hosts/deleted", b"1".to_vec()).await.unwrap();
    leased.put_leased("hosts/plain", b"1".to_vec()).await.unwrap();
    assert!(leased.delete("hosts/deleted").await.unwrap());
    leased.put("hosts/plain", b"2".to_vec()).await.unwrap();
    assert!(observer.get("hosts/x").await.unwrap().is_some());
    assert_eq!(consul.session_count(), 1);

    // An expired session takes the key with it; the store then makes a new one and rewrites it.
    consul.expire_sessions();
    assert!(observer.get("hosts/x").await.unwrap().is_none());
    let started = Instant::now();
    while observer.get("hosts/x").await.unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(6), "leased key not rewritten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(observer.get("hosts/deleted").await.unwrap().is_none(), "a deleted leased key came back");
    assert_eq!(observer.get("hosts/plain").await.unwrap().unwrap().value, b"2", "a plain write stays plain");
    assert_eq!(consul.session_count(), 1);
    assert!(consul.renewals() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_keys_go_about_one_ttl_after_their_process() {
    let consul = FakeConsul::start().await;
    let prefix = unique_prefix("gone");
    let observer = connect_url(&consul.url(), &prefix).await;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { prefix, lease_ttl: Duration::from_secs(10), ..StoreOptions::default() };
    let leased = store::open_with(Some(&consul.url()), dir.path(), options).await.unwrap();
    leased.put_leased("hosts/x", b"1".to_vec()).await.unwrap();
    // Kept past the session's TTL (Consul's minimum, 10 s) while the process lives...
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(observer.get("hosts/x").await.unwrap().is_some());
    // ...and gone about one TTL after it stops.
    drop(leased);
    let started = Instant::now();
    while observer.get("hosts/x").await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(12), "leased key outlived its session");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_claims_are_found_and_reclaimed() {
    let consul = FakeConsul::start().await;
    let prefix = unique_prefix("reclaim");
    let alive = scenarios::ipam(&connect_url(&consul.url(), &prefix).await, "alive").await;
    let shared = alive.request_pool("GlobalDefault", "10.97.0.0/24", "", &scenarios::none(), false).await.unwrap();
    let kept = alive.request_address(&shared.pool_id, "", &scenarios::owner("alive-ep")).await.unwrap();
    let dying = scenarios::ipam(&connect_url(&consul.url(), &prefix).await, "dying").await;
    dying.request_pool("GlobalDefault", "10.97.0.0/24", "", &scenarios::none(), false).await.unwrap();
    dying.request_address(&shared.pool_id, "", &scenarios::owner("dying-ep")).await.unwrap();
    dying.allocate_vni("overlay-9").await.unwrap();
    assert!(alive.reclaim_host("dying").await.unwrap_err().to_string().contains("is live"));

    // The dying host's session expires with it, taking its host key.
    drop(dying);
    consul.expire_holder(&format!("{}hosts/dying", prefix.trim_start_matches('/')));
    assert!(!alive.live_hosts().await.unwrap().contains("dying"));
    let leftovers = alive.leftovers().await.unwrap();
    assert_eq!(leftovers.len(), 3, "a pool reference, an address and a VNI: {leftovers:?}");
    let done = alive.reclaim_host("dying").await.unwrap();
    assert_eq!((done.addresses, done.pool_references), (1, 1));
    let addrs: Vec<_> = alive.addresses(&shared.pool_id).await.unwrap().into_iter().map(|a| a.ip).collect();
    assert_eq!(addrs, vec![kept.ip]);
    assert!(alive.audit().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_allocate_distinct_addresses_concurrently() {
    let consul = FakeConsul::start().await;
    let prefix = unique_prefix("race");
    let hosts = [
        Arc::new(scenarios::ipam(&connect_url(&consul.url(), &prefix).await, "host-a").await),
        Arc::new(scenarios::ipam(&connect_url(&consul.url(), &prefix).await, "host-b").await),
    ];
    let pool = hosts[0].request_pool("GlobalDefault", "10.71.0.0/16", "", &scenarios::none(), false).await.unwrap();
    let callers = (0..8).map(|caller| {
        let (ipam, pool_id) = (hosts[caller % 2].clone(), pool.pool_id.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..25 {
                let owner = scenarios::owner(&format!("c{caller}-{i}"));
                got.push(ipam.request_address(&pool_id, "", &owner).await.unwrap().ip);
            }
            got
        })
    });
    let mut all = Vec::new();
    for caller in callers.collect::<Vec<_>>() {
        all.extend(caller.await.unwrap());
    }
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (200, 200), "an address handed out twice");
    assert!(hosts[1].audit().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_the_request_timeout() {
    use futures::StreamExt;
    let consul = FakeConsul::start().await;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        prefix: unique_prefix("longwatch"),
        request_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = store::open_with(Some(&consul.url()), dir.path(), options).await.unwrap();
    let mut watch = store.watch("w/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    store.put("w/late", b"1".to_vec()).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("an event").expect("open");
    assert_eq!(event.unwrap().key(), "w/late");
}

#[tokio::test]
async fn consul_down_fails_fast_and_recovers() {
    let consul = FakeConsul::start().await;
    let ipam = scenarios::ipam(&connect(&consul, "down").await, "h1").await;
    let pool = ipam.request_pool("LocalDefault", "10.1.0.0/24", "", &scenarios::none(), false).await.unwrap();
    consul.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let err = ipam.request_address(&pool.pool_id, "", &scenarios::none()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, IpamError::Store(StoreError::Unavailable { .. })), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("consul store at") && text.contains(&consul.endpoint()), "{text}");

    consul.restart().await;
    let next = ipam.request_address(&pool.pool_id, "", &scenarios::none()).await.unwrap();
    assert_eq!(ipam.addresses(&pool.pool_id).await.unwrap().len(), 1, "nothing half-written while down: {next:?}");
    assert!(ipam.audit().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_consul_that_never_answers_times_out() {
    let silent = Silent::start().await;
    let store = connect_url(&format!("consul://{}", silent.endpoint), &unique_prefix("silent")).await;
    let started = Instant::now();
    let err = store.get("x").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(err.to_string().contains("no answer within"), "{err}");
}

#[tokio::test]
async fn an_unreachable_agent_fails_over_to_the_next() {
    let consul = FakeConsul::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("consul://{dead},{}", consul.endpoint());
    let store = connect_url(&url, &unique_prefix("failover")).await;
    store.put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().value, b"v");
}
