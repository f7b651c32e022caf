//! The etcd backend against a real etcd started on loopback for each test. These tests fail (they
//! do not skip) when the `etcd` binary is missing.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{conformance, model, scenarios, unique_prefix};
use netloom_ipam::store::{self, Store, StoreOptions};
use netloom_ipam::{IpamError, Leftover, StoreError};
use proptest::test_runner::{Config, TestRunner};

async fn connect_with(url: &str, options: StoreOptions) -> Arc<dyn Store> {
    let dir = tempfile::tempdir().unwrap();
    store::open_with(Some(url), dir.path(), options).await.unwrap()
}

async fn connect(etcd: &Etcd, test: &str) -> Arc<dyn Store> {
    connect_with(&etcd.url(), StoreOptions { prefix: unique_prefix(test), ..StoreOptions::default() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance() {
    let etcd = Etcd::start().await;
    conformance::basics(connect(&etcd, "basics").await).await;
    conformance::transactions(connect(&etcd, "txn").await).await;
    conformance::watches(connect(&etcd, "watch").await).await;
    // Separate clients race like separate hosts would.
    let prefix = unique_prefix("cas");
    let a = connect_with(&etcd.url(), StoreOptions { prefix: prefix.clone(), ..StoreOptions::default() }).await;
    conformance::cas_counter(a, 4, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_scenarios() {
    let etcd = Etcd::start().await;
    scenarios::pools(&scenarios::ipam(&connect(&etcd, "pools").await, "h1").await).await;
    scenarios::addresses(&scenarios::ipam(&connect(&etcd, "addrs").await, "h1").await).await;
    scenarios::vnis(&connect(&etcd, "vnis").await).await;
    // Two hosts: two clients on one prefix.
    let prefix = unique_prefix("multi");
    let opts = || StoreOptions { prefix: prefix.clone(), ..StoreOptions::default() };
    let a = scenarios::ipam(&connect_with(&etcd.url(), opts()).await, "a").await;
    let b = scenarios::ipam(&connect_with(&etcd.url(), opts()).await, "b").await;
    scenarios::multi_host(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_allocate_1000_distinct_addresses_concurrently() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("race");
    let opts = || StoreOptions { prefix: prefix.clone(), ..StoreOptions::default() };
    let hosts = [
        Arc::new(scenarios::ipam(&connect_with(&etcd.url(), opts()).await, "host-a").await),
        Arc::new(scenarios::ipam(&connect_with(&etcd.url(), opts()).await, "host-b").await),
    ];
    let pool_id =
        hosts[0].request_pool("GlobalDefault", "10.70.0.0/16", "", &scenarios::none(), false).await.unwrap().pool_id;
    assert_eq!(
        hosts[1].request_pool("GlobalDefault", "10.70.0.0/16", "", &scenarios::none(), false).await.unwrap().pool_id,
        pool_id
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for (h, ipam) in hosts.iter().enumerate() {
        // 10 concurrent callers per host, 50 addresses each.
        for caller in 0..10 {
            let (ipam, pool_id) = (ipam.clone(), pool_id.clone());
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..50 {
                    let owner = scenarios::owner(&format!("h{h}-c{caller}-{i}"));
                    got.push(ipam.request_address(&pool_id, "", &owner).await.unwrap().ip);
                }
                got
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (1000, 1000), "duplicates handed out");
    assert_eq!(hosts[0].addresses(&pool_id).await.unwrap().len(), 1000);
    assert!(hosts[0].audit().await.unwrap().is_empty());
    eprintln!("1000 concurrent allocations from two hosts on one etcd: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_fails_fast_and_recovers() {
    let mut etcd = Etcd::start().await;
    let ipam = scenarios::ipam(&connect(&etcd, "down").await, "h1").await;
    let pool_id =
        ipam.request_pool("LocalDefault", "10.80.0.0/24", "", &scenarios::none(), false).await.unwrap().pool_id;
    let first = ipam.request_address(&pool_id, "", &scenarios::none()).await.unwrap();

    etcd.stop();
    for attempt in 0..2 {
        let started = Instant::now();
        let err = ipam.request_address(&pool_id, "", &scenarios::none()).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "attempt {attempt}: failing took {elapsed:?}");
        let text = err.to_string();
        assert!(matches!(err, IpamError::Store(StoreError::Unavailable { .. })), "{err:?}");
        assert!(text.contains("etcd") && text.contains(&etcd.endpoint()) && text.contains("unavailable"), "{text}");
    }
    let started = Instant::now();
    assert!(ipam.request_pool("LocalDefault", "", "", &scenarios::none(), false).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));

    etcd.restart().await;
    let started = Instant::now();
    let next = loop {
        match ipam.request_address(&pool_id, "", &scenarios::none()).await {
            Ok(a) => break a,
            Err(e) if started.elapsed() < Duration::from_secs(15) => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd is back but calls still fail: {e}"),
        }
    };
    eprintln!("working again {:?} after the restart", started.elapsed());
    assert_ne!(next, first);
    assert_eq!(ipam.addresses(&pool_id).await.unwrap().len(), 2, "nothing half-written while etcd was down");
    assert!(ipam.audit().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_endpoint_is_not_an_error() {
    let etcd = Etcd::start().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("etcd://{dead},{}", etcd.endpoint());
    let store = connect_with(&url, StoreOptions { prefix: unique_prefix("failover"), ..StoreOptions::default() }).await;
    let ipam = scenarios::ipam(&store, "h1").await;
    let started = Instant::now();
    let got = scenarios::many(&ipam, "10.90.0.0/24", 20).await;
    assert_eq!(got.len(), 20);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_keys_follow_their_process() {
    let etcd = Etcd::start().await;
    logs();
    let prefix = unique_prefix("lease");
    let short =
        || StoreOptions { prefix: prefix.clone(), lease_ttl: Duration::from_secs(2), ..StoreOptions::default() };
    let observer = connect_with(&etcd.url(), short()).await;

    // A lease revoked behind the store's back (as after a long partition) is replaced.
    let leased = connect_with(&etcd.url(), short()).await;
    leased.put_leased("hosts/x", b"1".to_vec()).await.unwrap();
    // Leased keys deleted or overwritten since are not brought back.
    leased.put_leased("hosts/deleted", b"1".to_vec()).await.unwrap();
    leased.put_leased("hosts/plain", b"1".to_vec()).await.unwrap();
    assert!(leased.delete("hosts/deleted").await.unwrap());
    leased.put("hosts/plain", b"2".to_vec()).await.unwrap();
    assert!(observer.get("hosts/x").await.unwrap().is_some());
    let mut raw = etcd_client::Client::connect([format!("http://{}", etcd.endpoint())], None).await.unwrap();
    for lease in raw.leases().await.unwrap().leases() {
        raw.lease_revoke(lease.id()).await.unwrap();
    }
    assert!(observer.get("hosts/x").await.unwrap().is_none());
    wait_for(Duration::from_secs(5), || async { observer.get("hosts/x").await.unwrap().is_some() }).await;
    assert!(observer.get("hosts/deleted").await.unwrap().is_none(), "a deleted leased key came back");
    assert_eq!(observer.get("hosts/plain").await.unwrap().unwrap().value, b"2", "a plain write stays plain");

    // Kept alive well past the TTL while the process lives...
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(observer.get("hosts/x").await.unwrap().is_some());
    // ...and gone within about one TTL after it stops.
    drop(leased);
    wait_for(Duration::from_secs(6), || async { observer.get("hosts/x").await.unwrap().is_none() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_hosts_leftovers_are_found_and_reclaimed() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("reclaim");
    let opts = || StoreOptions { prefix: prefix.clone(), lease_ttl: Duration::from_secs(2), ..StoreOptions::default() };
    let alive = scenarios::ipam(&connect_with(&etcd.url(), opts()).await, "alive").await;
    let shared =
        alive.request_pool("GlobalDefault", "10.95.0.0/24", "", &scenarios::none(), false).await.unwrap().pool_id;
    let kept = alive.request_address(&shared, "", &scenarios::owner("alive-ep")).await.unwrap();
    {
        let dying = scenarios::ipam(&connect_with(&etcd.url(), opts()).await, "dying").await;
        dying.request_pool("GlobalDefault", "10.95.0.0/24", "", &scenarios::none(), false).await.unwrap();
        dying.request_address(&shared, "", &scenarios::owner("dying-ep")).await.unwrap();
        let own =
            dying.request_pool("GlobalDefault", "10.96.0.0/24", "", &scenarios::none(), false).await.unwrap().pool_id;
        dying.request_address(&own, "", &scenarios::none()).await.unwrap();
        dying.allocate_vni("overlay-1").await.unwrap();
        let err = alive.reclaim_host("dying").await.unwrap_err();
        assert!(err.to_string().contains("is live"), "{err}");
    }
    wait_for(Duration::from_secs(6), || async { !alive.live_hosts().await.unwrap().contains("dying") }).await;

    let leftovers = alive.leftovers().await.unwrap();
    assert_eq!(leftovers.iter().filter(|l| matches!(l, Leftover::PoolReference { .. })).count(), 2, "{leftovers:?}");
    assert_eq!(leftovers.iter().filter(|l| matches!(l, Leftover::Address { .. })).count(), 2, "{leftovers:?}");
    assert_eq!(leftovers.iter().filter(|l| matches!(l, Leftover::Vni { .. })).count(), 1, "{leftovers:?}");
    assert!(leftovers.iter().all(|l| !format!("{l:?}").contains("alive")), "{leftovers:?}");

    let done = alive.reclaim_host("dying").await.unwrap();
    assert_eq!((done.addresses, done.pool_references), (2, 2));
    let pools: Vec<String> = alive.pools().await.unwrap().into_iter().map(|p| p.pool_id).collect();
    assert_eq!(pools, vec!["GlobalDefault/10.95.0.0/24"], "the dead host's own pool is gone, the shared one stays");
    let addrs: Vec<_> = alive.addresses(&shared).await.unwrap().into_iter().map(|a| a.ip).collect();
    assert_eq!(addrs, vec![kept.ip]);
    assert!(alive.audit().await.unwrap().is_empty());
}

#[test]
fn random_sequences_never_duplicate_or_leak() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let etcd = rt.block_on(Etcd::start());
    let mut runner = TestRunner::new(Config { cases: 10, failure_persistence: None, ..Config::default() });
    runner
        .run(&model::actions(50), |actions| {
            rt.block_on(async { model::run(connect(&etcd, "model").await, actions).await });
            Ok(())
        })
        .unwrap();
}

async fn wait_for<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[allow(dead_code)]
fn logs() {
    let _ = tracing_subscriber::fmt().with_env_filter("netloom_ipam=debug").with_test_writer().try_init();
}

#[tokio::test]
async fn an_etcd_that_never_answers_times_out() {
    let silent = common::silent::Silent::start().await;
    let url = format!("etcd://{}", silent.endpoint);
    let store = connect_with(&url, StoreOptions { prefix: unique_prefix("silent"), ..StoreOptions::default() }).await;
    let started = Instant::now();
    let ipam = scenarios::ipam(&store, "h1").await; // registration fails, in the background
    let err = ipam.request_pool("LocalDefault", "10.1.0.0/16", "", &scenarios::none(), false).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    assert!(err.to_string().contains(&silent.endpoint), "{err}");
    assert!(matches!(err, IpamError::Store(StoreError::Unavailable { .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_outlive_the_request_timeout() {
    use futures::StreamExt;
    let etcd = Etcd::start().await;
    let options = StoreOptions {
        prefix: unique_prefix("longwatch"),
        request_timeout: Duration::from_secs(1),
        ..StoreOptions::default()
    };
    let store = connect_with(&etcd.url(), options).await;
    let mut watch = store.watch("w/").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    store.put("w/late", b"1".to_vec()).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("an event").expect("open");
    assert_eq!(event.unwrap().key(), "w/late");
}
