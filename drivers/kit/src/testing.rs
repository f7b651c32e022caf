//! Helpers for the drivers' own tests: a store whose calls on one key wait until released (a
//! stuck etcd, say), and a scratch network namespace to run a driver in.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use netloom_store::{KeyValue, Revision, Store, StoreResult, Txn, TxnOutcome, WatchStream};
use tokio::sync::Notify;

/// Which calls on the stuck keys wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Reads,
    Writes,
}

/// A store whose reads or writes of keys containing `stuck` wait for [`HeldStore::release`].
pub struct HeldStore {
    inner: Arc<dyn Store>,
    stuck: String,
    hold: Hold,
    release: Notify,
}

impl HeldStore {
    pub fn new(inner: Arc<dyn Store>, stuck: impl Into<String>, hold: Hold) -> Self {
        Self { inner, stuck: stuck.into(), hold, release: Notify::new() }
    }

    /// Lets one held call through.
    pub fn release(&self) {
        self.release.notify_one();
    }

    async fn wait(&self, hold: Hold, key: &str) {
        if hold == self.hold && key.contains(&self.stuck) {
            self.release.notified().await;
        }
    }
}

#[async_trait]
impl Store for HeldStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.wait(Hold::Reads, key).await;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        self.wait(Hold::Writes, key).await;
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

/// Runs `test` on a current-thread runtime in a thread of its own moved into a new network
/// namespace (needs root), so the driver under test touches nothing of the host's.
pub fn in_new_netns(test: impl FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(test());
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// A request as Docker would send it, from its JSON.
pub fn request<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}
