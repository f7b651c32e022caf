//! A request stuck in the shared store holds up only its own network: requests on other networks
//! answer at once and the in-memory state stays free. The store is the slow call here (a wrapper
//! that holds reads of one network's record until released); the test runs in a network
//! namespace of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use netloom_dataplane::Netlink;
use netloom_ipam::store::{
    self, DriverRecords, KeyValue, Revision, Store, StoreResult, Txn, TxnOutcome, WatchStream, DEFAULT_PREFIX,
};
use netloom_ipam::{Ipam, IpamConfig};
use netloom_plugin_api::locks::KeyedLocks;
use netloom_plugin_api::NetworkDriver;
use serde_json::json;
use tokio::sync::Notify;

use super::*;
use crate::cluster::Shared;
use crate::fabric::Fabric;
use crate::overlay::Config;
use crate::state::State;

/// The embedded store, except that reads of keys containing `stuck` wait for `release`.
struct HeldStore {
    inner: Arc<dyn Store>,
    stuck: String,
    release: Notify,
}

#[async_trait]
impl Store for HeldStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        if key.contains(&self.stuck) {
            self.release.notified().await;
        }
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        self.inner.txn(txn).await
    }
    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        self.inner.watch(prefix).await
    }
    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.inner.put_leased(key, value).await
    }
}

fn in_new_netns(test: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(test());
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn request<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[test]
fn a_request_stuck_in_the_store_holds_up_only_its_network() {
    in_new_netns(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().unwrap();
            let embedded = store::open(None, &dir.path().join("private"), DEFAULT_PREFIX).await.unwrap();
            let inner = store::open(None, &dir.path().join("shared"), DEFAULT_PREFIX).await.unwrap();
            let held = Arc::new(HeldStore { inner, stuck: "slow".into(), release: Notify::new() });
            let ipam = Ipam::new(held.clone(), "h1", IpamConfig::default()).await.unwrap();
            let config = Config {
                mode: Mode::Global,
                advertise: None,
                port: 4789,
                reconcile_every: Duration::from_secs(10),
                lease_ttl: Duration::from_secs(15),
                dead_host_grace: Duration::from_secs(300),
                netns_dir: None,
                firewall: None,
                guard_firewall: netloom_firewall::BackendKind::Nftables,
            };
            let overlay = Arc::new(Overlay {
                config,
                host: "h1".into(),
                shared: Ok(Shared { store: held.clone(), ipam }),
                local: DriverRecords::new(embedded, "overlay", "h1"),
                fabric: Fabric::new(Netlink::connect().unwrap(), dir.path().join("netns"), 4789),
                gateway: None,
                guard: None,
                gateway_lock: tokio::sync::Mutex::new(()),
                state: std::sync::Mutex::new(State::default()),
                turns: KeyedLocks::default(),
                fdb_turns: KeyedLocks::default(),
            });
            let driver = Arc::new(Driver(overlay.clone()));

            // Removing a network this host never used asks the store, which does not answer.
            let stuck = {
                let driver = driver.clone();
                tokio::spawn(async move { driver.delete_network(request(json!({"NetworkID": "slow"}))).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!stuck.is_finished());

            // Meanwhile other networks' requests are answered at once, and the state is free.
            let started = Instant::now();
            driver.delete_network(request(json!({"NetworkID": "fast"}))).await.unwrap();
            let err = driver.join(request(json!({"NetworkID": "fast", "EndpointID": "e1"}))).await.unwrap_err();
            assert!(err.message().contains("e1"), "{}", err.message());
            assert!(overlay.state.try_lock().is_ok(), "the state is locked across a store call");
            assert!(started.elapsed() < Duration::from_millis(250), "waited {:?}", started.elapsed());

            // Once the store answers, the stuck request completes.
            held.release.notify_one();
            tokio::time::timeout(Duration::from_secs(5), stuck).await.unwrap().unwrap().unwrap();
        })
    });
}
