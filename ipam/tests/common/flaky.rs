//! A store whose transactions touching a chosen key fail the way a timeout does: after the store
//! applied them (the answer was lost) or before (the request was). Reads can be made to fail too.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use netloom_ipam::store::{KeyValue, Op, Revision, Store, StoreResult, Txn, TxnOutcome, WatchStream};
use netloom_ipam::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The transaction is applied, then the caller gets a timeout.
    Answer,
    /// The caller gets a timeout and nothing is applied.
    Request,
}

pub struct FlakyStore {
    inner: Arc<dyn Store>,
    key: String,
    lost: Lost,
    /// How many of the next matching transactions fail.
    failing_txns: AtomicU32,
    /// How many of the next reads fail.
    failing_reads: AtomicU32,
    /// Every transaction that touched the key, failed or not.
    pub sent: AtomicU32,
}

impl FlakyStore {
    pub fn new(inner: Arc<dyn Store>, key: impl Into<String>, lost: Lost) -> Self {
        Self {
            inner,
            key: key.into(),
            lost,
            failing_txns: AtomicU32::new(0),
            failing_reads: AtomicU32::new(0),
            sent: AtomicU32::new(0),
        }
    }

    /// The next `txns` transactions on the key time out; once they have, so do the next `reads`
    /// reads of any key.
    pub fn fail(&self, txns: u32, reads: u32) {
        self.failing_txns.store(txns, Ordering::SeqCst);
        self.failing_reads.store(reads, Ordering::SeqCst);
        self.sent.store(0, Ordering::SeqCst);
    }

    pub fn sent(&self) -> u32 {
        self.sent.load(Ordering::SeqCst)
    }

    fn timeout() -> StoreError {
        StoreError::Unavailable {
            backend: "flaky",
            endpoints: "test".into(),
            detail: "request timed out after 3s".into(),
        }
    }

    fn take(counter: &AtomicU32) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    fn touches(&self, txn: &Txn) -> bool {
        txn.ops.iter().any(|op| match op {
            Op::Put(k, _) | Op::Delete(k) | Op::DeletePrefix(k) => k.contains(&self.key),
        })
    }

    fn read_fails(&self) -> bool {
        self.failing_txns.load(Ordering::SeqCst) == 0 && Self::take(&self.failing_reads)
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        if self.read_fails() {
            return Err(Self::timeout());
        }
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        if self.read_fails() {
            return Err(Self::timeout());
        }
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        if !self.touches(&txn) {
            return self.inner.txn(txn).await;
        }
        self.sent.fetch_add(1, Ordering::SeqCst);
        if !Self::take(&self.failing_txns) {
            return self.inner.txn(txn).await;
        }
        if self.lost == Lost::Answer {
            self.inner.txn(txn).await?;
        }
        Err(Self::timeout())
    }
    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        self.inner.watch(prefix).await
    }
    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.inner.put_leased(key, value).await
    }
}
