//! Requests on one network do not wait for a stuck request on another, and a request that
//! cannot get its turn fails in bounded time naming what it waited for. The store is the slow
//! call here (a wrapper that holds writes for one network until released); the kernel side runs
//! in a network namespace of the test's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use netloom_driver_kit::Registry;
use netloom_plugin_api::wire::network::{CreateEndpointRequest, CreateNetworkRequest};
use netloom_plugin_api::NetworkDriver;
use netloom_store::{
    DriverRecords, KeyValue, Revision, Store, StoreOptions, StoreResult, Txn, TxnOutcome, WatchStream,
};
use serde_json::json;
use tokio::sync::Notify;

use super::*;

/// The embedded store, except that writes of keys containing `stuck` wait for `release`.
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
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        if key.contains(&self.stuck) {
            self.release.notified().await;
        }
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

fn network(id: &str, pool: &str) -> CreateNetworkRequest {
    request(
        json!({"NetworkID": id, "Options": {"com.docker.network.generic": {}}, "IPv4Data": [{"Pool": pool}], "IPv6Data": []}),
    )
}

fn endpoint(net: &str, ep: &str, address: &str) -> CreateEndpointRequest {
    request(json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address}, "Options": {}}))
}

#[test]
fn a_stuck_network_holds_up_only_itself() {
    in_new_netns(|| {
        Box::pin(async {
            let dir = tempfile::tempdir().unwrap();
            let embedded = netloom_store::open_with(None, dir.path(), StoreOptions::default()).await.unwrap();
            let store =
                Arc::new(HeldStore { inner: embedded, stuck: "endpoints/slow/".into(), release: Notify::new() });
            let netlink = Netlink::connect().unwrap();
            let firewall = netloom_firewall::open(netloom_firewall::BackendKind::Nftables).await.unwrap();
            let registry = Registry::load(DRIVER, DriverRecords::new(store.clone(), "host", "h1")).await.unwrap();
            let mut driver = HostDriver::start(netlink, firewall, registry).await.unwrap();
            driver.registry.lock_wait = Duration::from_millis(300);
            let driver = Arc::new(driver);
            driver.create_network(network("slow", "10.70.0.0/24")).await.unwrap();
            driver.create_network(network("fast", "10.71.0.0/24")).await.unwrap();

            let stuck = {
                let driver = driver.clone();
                tokio::spawn(async move { driver.create_endpoint(endpoint("slow", "s1", "10.70.0.2/24")).await })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;

            // Another network goes on at once, and so does a new network.
            let started = Instant::now();
            driver.create_endpoint(endpoint("fast", "f1", "10.71.0.2/24")).await.unwrap();
            driver.create_network(network("third", "10.72.0.0/24")).await.unwrap();
            assert!(
                started.elapsed() < Duration::from_millis(250),
                "waited {:?} behind the stuck network",
                started.elapsed()
            );

            // The stuck network's next request gives up in bounded time, saying why.
            let started = Instant::now();
            let err =
                driver.delete_endpoint(request(json!({"NetworkID": "slow", "EndpointID": "s1"}))).await.unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(2));
            let message = err.message();
            assert!(
                message.contains(
                    "timed out after 300 ms waiting for loom-host network slow, held by CreateEndpoint of s1"
                ),
                "{message}"
            );

            // Once the store answers, the stuck request completes and the network is usable.
            store.release.notify_one();
            stuck.await.unwrap().unwrap();
            store.release.notify_one();
            driver
                .create_endpoint(endpoint("slow", "s2", "10.70.0.3/24"))
                .await
                .unwrap_or_else(|e| panic!("{}", e.message()));
        })
    });
}
