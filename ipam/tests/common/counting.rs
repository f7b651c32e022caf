//! A store wrapper that counts the calls the IPAM makes, to check how many round-trips an
//! operation costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use netloom_ipam::store::{KeyValue, Revision, Store, StoreResult, Txn, TxnOutcome, WatchStream};

#[derive(Debug, Default)]
pub struct Calls {
    reads: AtomicU64,
    txns: AtomicU64,
    conflicts: AtomicU64,
}

/// Calls since the last [`Calls::take`]: (gets and listings, transactions, of which conflicts).
impl Calls {
    pub fn take(&self) -> (u64, u64, u64) {
        (
            self.reads.swap(0, Ordering::SeqCst),
            self.txns.swap(0, Ordering::SeqCst),
            self.conflicts.swap(0, Ordering::SeqCst),
        )
    }
}

struct Counting {
    inner: Arc<dyn Store>,
    calls: Arc<Calls>,
}

pub fn wrap(inner: Arc<dyn Store>) -> (Arc<dyn Store>, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    (Arc::new(Counting { inner, calls: calls.clone() }), calls)
}

#[async_trait]
impl Store for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.calls.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.calls.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        self.calls.txns.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.calls.txns.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        self.calls.txns.fetch_add(1, Ordering::SeqCst);
        let outcome = self.inner.txn(txn).await?;
        if outcome == TxnOutcome::Conflict {
            self.calls.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        Ok(outcome)
    }
    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        self.inner.watch(prefix).await
    }
    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.inner.put_leased(key, value).await
    }
}
