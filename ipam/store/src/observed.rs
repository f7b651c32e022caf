//! Every store this process opened, counted and checkable: each operation's outcome is counted in
//! one place (for `netloom_store_operations_total`), and a status call can ask whether each
//! store answers now.
//!
//! [`crate::open_with`] wraps what it opens in an [`Observed`] store and remembers it here, so no
//! backend and no caller has to count anything itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::kv::{KeyValue, Revision, Store, StoreError, StoreResult, Txn, TxnOutcome, WatchStream};

/// The operations of the [`Store`] trait, as counted.
pub const OPERATIONS: [&str; 7] = ["get", "list", "put", "delete", "txn", "watch", "put_leased"];

/// How an operation ended: `conflict` is a transaction whose condition failed (nothing wrong with
/// the store), `unavailable` a store that could not be reached in time, `error` anything else.
pub const OUTCOMES: [&str; 4] = ["ok", "conflict", "unavailable", "error"];

/// The key a health check reads; it never exists, so reading it costs one round trip.
const HEALTH_KEY: &str = "health/probe";

/// Counts of operations by kind and outcome, and the time they took.
pub struct OperationCounts {
    counts: [[AtomicU64; OUTCOMES.len()]; OPERATIONS.len()],
    micros: [AtomicU64; OPERATIONS.len()],
}

/// One row of [`OperationCounts::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationCount {
    pub op: &'static str,
    pub outcome: &'static str,
    pub count: u64,
}

impl OperationCounts {
    const fn new() -> Self {
        Self {
            counts: [const { [const { AtomicU64::new(0) }; OUTCOMES.len()] }; OPERATIONS.len()],
            micros: [const { AtomicU64::new(0) }; OPERATIONS.len()],
        }
    }

    fn record(&self, op: usize, outcome: usize, elapsed: Duration) {
        self.counts[op][outcome].fetch_add(1, Ordering::Relaxed);
        self.micros[op].fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Every operation and outcome seen at least once.
    pub fn snapshot(&self) -> Vec<OperationCount> {
        let mut rows = Vec::new();
        for (op, outcomes) in self.counts.iter().enumerate() {
            for (outcome, count) in outcomes.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    rows.push(OperationCount { op: OPERATIONS[op], outcome: OUTCOMES[outcome], count });
                }
            }
        }
        rows
    }

    /// Total seconds spent in each operation kind seen at least once.
    pub fn seconds(&self) -> Vec<(&'static str, f64)> {
        let seen = |op: usize| self.counts[op].iter().any(|c| c.load(Ordering::Relaxed) > 0);
        (0..OPERATIONS.len())
            .filter(|op| seen(*op))
            .map(|op| (OPERATIONS[op], self.micros[op].load(Ordering::Relaxed) as f64 / 1e6))
            .collect()
    }
}

static COUNTS: OperationCounts = OperationCounts::new();

/// The process's store operation counts.
pub fn operation_counts() -> &'static OperationCounts {
    &COUNTS
}

fn outcome_of<T>(result: &StoreResult<T>) -> usize {
    match result {
        Ok(_) => 0,
        Err(StoreError::Unavailable { .. }) => 2,
        Err(_) => 3,
    }
}

/// A store that counts what passes through it and remembers its last failure.
pub struct Observed {
    inner: Arc<dyn Store>,
    last_error: Mutex<Option<(Instant, String)>>,
}

impl Observed {
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<Observed> {
        let observed = Arc::new(Observed { inner, last_error: Mutex::new(None) });
        let weak: Weak<Observed> = Arc::downgrade(&observed);
        opened().push(weak);
        observed
    }

    async fn timed<T>(&self, op: usize, call: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.timed_as(op, outcome_of, call).await
    }

    async fn timed_as<T>(
        &self,
        op: usize,
        outcome: fn(&StoreResult<T>) -> usize,
        call: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let result = call.await;
        COUNTS.record(op, outcome(&result), started.elapsed());
        if let Err(e) = &result {
            *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), e.to_string()));
        }
        result
    }

    /// Whether the store answers a read within `limit`, now.
    pub async fn check(&self, limit: Duration) -> StoreHealth {
        let answer = tokio::time::timeout(limit, self.get(HEALTH_KEY)).await;
        let error = match answer {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("{} did not answer a read within {limit:?}", self.inner.describe())),
        };
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(at, e)| (at.elapsed().as_secs(), e.clone()));
        StoreHealth { store: self.inner.describe(), healthy: error.is_none(), error, last_error }
    }
}

/// What a health check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// The store as [`Store::describe`] names it (never with credentials: URLs cannot hold any).
    pub store: String,
    pub healthy: bool,
    /// Why the check failed.
    pub error: Option<String>,
    /// The last failed operation: seconds ago and the error.
    pub last_error: Option<(u64, String)>,
}

fn opened() -> std::sync::MutexGuard<'static, Vec<Weak<Observed>>> {
    static OPENED: Mutex<Vec<Weak<Observed>>> = Mutex::new(Vec::new());
    let mut list = OPENED.lock().unwrap_or_else(PoisonError::into_inner);
    list.retain(|w| w.strong_count() > 0);
    list
}

/// Checks every store this process holds open, side by side, each within `limit`.
pub async fn check_all(limit: Duration) -> Vec<StoreHealth> {
    let stores: Vec<Arc<Observed>> = opened().iter().filter_map(Weak::upgrade).collect();
    futures::future::join_all(stores.iter().map(|s| s.check(limit))).await
}

#[async_trait]
impl Store for Observed {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.timed(0, self.inner.get(key)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.timed(1, self.inner.list(prefix)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        self.timed(2, self.inner.put(key, value)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.timed(3, self.inner.delete(key)).await
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        let outcome = |result: &StoreResult<TxnOutcome>| match result {
            Ok(TxnOutcome::Conflict) => 1,
            other => outcome_of(other),
        };
        self.timed_as(4, outcome, self.inner.txn(txn)).await
    }

    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        self.timed(5, self.inner.watch(prefix)).await
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.timed(6, self.inner.put_leased(key, value)).await
    }
}

#[cfg(test)]
#[path = "observed_tests.rs"]
mod tests;
