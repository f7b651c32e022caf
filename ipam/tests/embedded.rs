//! The embedded (redb) store and the IPAM on top of it.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{conformance, counting, model, scenarios};
use netloom_ipam::store::{self, Store, DEFAULT_PREFIX};
use netloom_ipam::{Ipam, IpamConfig, IpamError, StoreError};
use proptest::test_runner::{Config, TestRunner};

async fn open(dir: &Path) -> Arc<dyn Store> {
    store::open(None, dir, DEFAULT_PREFIX).await.unwrap()
}

#[tokio::test]
async fn store_basics() {
    let dir = tempfile::tempdir().unwrap();
    conformance::basics(open(dir.path()).await).await;
}

#[tokio::test]
async fn store_transactions() {
    let dir = tempfile::tempdir().unwrap();
    conformance::transactions(open(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_compare_and_swap_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    conformance::cas_counter(open(dir.path()).await, 4, 25).await;
}

#[tokio::test]
async fn store_watches() {
    let dir = tempfile::tempdir().unwrap();
    conformance::watches(open(dir.path()).await).await;
}

#[tokio::test]
async fn store_file_is_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).await;
    let err = match store::open(None, dir.path(), DEFAULT_PREFIX).await {
        Err(e) => e,
        Ok(_) => panic!("a second open of the same state dir must fail"),
    };
    assert!(matches!(err, StoreError::Embedded { .. }));
    assert!(err.to_string().contains("another instance"), "{err}");
}

#[tokio::test]
async fn bad_store_urls_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["redis://x", "etcd://", "etcd://h:0"] {
        let err = store::open(Some(url), dir.path(), DEFAULT_PREFIX).await.err().expect("refused");
        assert!(err.to_string().contains(url), "{err}");
    }
    let err = store::open(None, dir.path(), "no-slashes").await.err().expect("refused");
    assert!(err.to_string().contains("prefix"), "{err}");
}

#[tokio::test]
async fn ipam_pools() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::pools(&scenarios::ipam(&open(dir.path()).await, "h1").await).await;
}

#[tokio::test]
async fn ipam_addresses() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::addresses(&scenarios::ipam(&open(dir.path()).await, "h1").await).await;
}

#[tokio::test]
async fn ipam_multi_host_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    scenarios::multi_host(&scenarios::ipam(&store, "a").await, &scenarios::ipam(&store, "b").await).await;
}

#[tokio::test]
async fn ipam_vnis() {
    let dir = tempfile::tempdir().unwrap();
    scenarios::vnis(&open(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_addresses_are_fast_and_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let ipam = scenarios::ipam(&open(dir.path()).await, "h1").await;
    let started = Instant::now();
    let got = scenarios::many(&ipam, "10.50.0.0/16", 1000).await;
    let elapsed = started.elapsed();
    assert_eq!(got.iter().collect::<BTreeSet<_>>().len(), 1000);
    assert!(elapsed < Duration::from_secs(10), "1000 allocations took {elapsed:?}");
    eprintln!("1000 sequential allocations (embedded, fsync per commit): {elapsed:?}");
}

/// The usual allocation is one transaction: no pool read, and the bitmap chunk this host wrote
/// last comes from its cache. Another host writing the same chunk makes that copy stale, which
/// costs a conflict and a read, never a duplicate; a deleted pool is still reported as such.
#[tokio::test]
async fn allocations_are_one_transaction_and_stale_caches_only_cost_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (store, calls) = counting::wrap(open(dir.path()).await);
    // Two hosts (two caches) on one store.
    let a = scenarios::ipam(&store, "a").await;
    let b = scenarios::ipam(&store, "b").await;
    let pool = a.request_pool("LocalDefault", "10.60.0.0/24", "", &scenarios::none(), false).await.unwrap().pool_id;
    let mut got = BTreeSet::new();
    let mut take = |ip: std::net::IpAddr| assert!(got.insert(ip), "{ip} handed out twice");

    take(a.request_address(&pool, "", &scenarios::none()).await.unwrap().ip);
    calls.take();
    take(a.request_address(&pool, "", &scenarios::none()).await.unwrap().ip);
    assert_eq!(calls.take(), (0, 1, 0), "(reads, transactions, conflicts) of a warm allocation");

    take(b.request_address(&pool, "", &scenarios::none()).await.unwrap().ip);
    calls.take();
    let after_b = a.request_address(&pool, "", &scenarios::none()).await.unwrap().ip;
    take(after_b);
    assert_eq!(calls.take(), (1, 2, 1), "a's stale chunk costs a conflict and a read of the chunk");

    // A release keeps the cache current: the next allocation is one transaction again.
    a.release_address(&pool, &after_b.to_string()).await.unwrap();
    calls.take();
    take(a.request_address(&pool, "", &scenarios::none()).await.unwrap().ip);
    assert_eq!(calls.take(), (0, 1, 0));

    // The pool goes away (and comes back empty) under a's cache.
    a.release_pool(&pool).await.unwrap();
    let err = a.request_address(&pool, "", &scenarios::none()).await.unwrap_err();
    assert!(matches!(err, IpamError::NotFound(_)), "{err:?}");
    b.request_pool("LocalDefault", "10.60.0.0/24", "", &scenarios::none(), false).await.unwrap();
    let again = a.request_address(&pool, "", &scenarios::none()).await.unwrap().ip;
    assert_eq!(a.addresses(&pool).await.unwrap().iter().map(|x| x.ip).collect::<Vec<_>>(), vec![again]);
    assert!(a.audit().await.unwrap().is_empty());
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (pool_id, before) = {
        let ipam = scenarios::ipam(&open(dir.path()).await, "h1").await;
        let pool = ipam.request_pool("LocalDefault", "", "", &scenarios::none(), false).await.unwrap();
        ipam.request_address(&pool.pool_id, "", &scenarios::gateway()).await.unwrap();
        let a = ipam.request_address(&pool.pool_id, "", &scenarios::none()).await.unwrap();
        (pool.pool_id, a)
    };
    let ipam = scenarios::ipam(&open(dir.path()).await, "h1").await;
    let again = ipam.request_pool("LocalDefault", "172.17.0.0/16", "", &scenarios::none(), false).await.unwrap();
    assert_eq!(again.pool_id, pool_id, "pool ids are stable across restarts");
    let next = ipam.request_address(&pool_id, "", &scenarios::none()).await.unwrap();
    assert_ne!(next, before);
    assert_eq!(ipam.request_address(&pool_id, "", &scenarios::gateway()).await.unwrap().to_string(), "172.17.0.1/16");
    assert_eq!(ipam.addresses(&pool_id).await.unwrap().len(), 3);
}

#[test]
fn random_sequences_never_duplicate_or_leak() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut runner = TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() });
    runner
        .run(&model::actions(60), |actions| {
            let dir = tempfile::tempdir().unwrap();
            rt.block_on(async { model::run(open(dir.path()).await, actions).await });
            Ok(())
        })
        .unwrap();
}

const CHILD_ENV: &str = "NETLOOM_IPAM_CRASH_CHILD_DIR";

/// Not a test by itself: the child half of `killed_mid_write_loses_nothing_acknowledged`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ipam = Ipam::new(open(Path::new(&dir)).await, "crash", IpamConfig::default()).await.unwrap();
        let pool = ipam.request_pool("LocalDefault", "10.60.0.0/16", "", &scenarios::none(), false).await.unwrap();
        let mut out = std::io::stdout().lock();
        // Single-threaded, the test runner has printed "test crash_child ... " without a line
        // end: without this one the first ACK would share its line and go uncounted.
        writeln!(out).unwrap();
        loop {
            let a = ipam.request_address(&pool.pool_id, "", &scenarios::none()).await.unwrap();
            writeln!(out, "ACK {}", a.ip).unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test]
async fn killed_mid_write_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = BTreeSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 150 {
        let line = lines.next().expect("child output").unwrap();
        if let Some(ip) = line.strip_prefix("ACK ") {
            acked.insert(ip.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL, most likely in the middle of the next commit
    child.wait().unwrap();
    for line in lines.map_while(Result::ok) {
        if let Some(ip) = line.strip_prefix("ACK ") {
            acked.insert(ip.to_string());
        }
    }

    let ipam = Ipam::new(open(dir.path()).await, "after", IpamConfig::default()).await.unwrap();
    assert_eq!(ipam.audit().await.unwrap(), Vec::<String>::new());
    let stored: BTreeSet<String> =
        ipam.addresses("LocalDefault/10.60.0.0/16").await.unwrap().iter().map(|a| a.ip.to_string()).collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost after the kill: {lost:?}");
    assert!(stored.len() <= acked.len() + 1, "at most the unacknowledged write in flight may be extra");
}
