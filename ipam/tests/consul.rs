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
    assert!(leased.delete("hosts/deleted").await.unwrap());
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
    assert_eq!(consul.session_count(), 1);
    assert!(consul.renewals() >= 1);
}

#[tokio::test]
async fn consul_down_fails_fast_with_a_clear_error() {
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
