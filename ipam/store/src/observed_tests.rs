use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::kv::{Condition, Txn};

fn count(op: &str, outcome: &str) -> u64 {
    operation_counts().snapshot().iter().filter(|r| r.op == op && r.outcome == outcome).map(|r| r.count).sum()
}

#[tokio::test]
async fn operations_are_counted_by_outcome_and_the_store_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::open(None, dir.path(), crate::DEFAULT_PREFIX).await.unwrap();
    let (puts, gets, conflicts) = (count("put", "ok"), count("get", "ok"), count("txn", "conflict"));
    store.put("a", b"1".to_vec()).await.unwrap();
    store.get("a").await.unwrap();
    let refused = store.txn(Txn::new().when(Condition::Absent("a".into())).put("a", b"2".to_vec())).await.unwrap();
    assert!(!refused.committed());
    assert!(count("put", "ok") > puts);
    assert!(count("get", "ok") > gets);
    assert!(count("txn", "conflict") > conflicts);
    assert!(operation_counts().seconds().iter().any(|(op, _)| *op == "put"));

    let health = check_all(Duration::from_secs(2)).await;
    let ours = health.iter().find(|h| h.store.contains(&dir.path().display().to_string())).expect("store listed");
    assert!(ours.healthy && ours.error.is_none(), "{ours:?}");
    drop(store);
    let health = check_all(Duration::from_secs(2)).await;
    assert!(!health.iter().any(|h| h.store.contains(&dir.path().display().to_string())), "a closed store is forgotten");
}

/// A store that never answers: the check says so within its limit instead of hanging.
struct Silent;

#[async_trait]
impl Store for Silent {
    fn describe(&self) -> String {
        "etcd://192.0.2.1:2379".into()
    }
    async fn get(&self, _: &str) -> StoreResult<Option<KeyValue>> {
        std::future::pending().await
    }
    async fn list(&self, _: &str) -> StoreResult<Vec<KeyValue>> {
        Err(StoreError::Unavailable { backend: "etcd", endpoints: "192.0.2.1:2379".into(), detail: "down".into() })
    }
    async fn put(&self, _: &str, _: Vec<u8>) -> StoreResult<Revision> {
        unreachable!()
    }
    async fn delete(&self, _: &str) -> StoreResult<bool> {
        unreachable!()
    }
    async fn txn(&self, _: Txn) -> StoreResult<TxnOutcome> {
        unreachable!()
    }
    async fn watch(&self, _: &str) -> StoreResult<WatchStream> {
        unreachable!()
    }
    async fn put_leased(&self, _: &str, _: Vec<u8>) -> StoreResult<()> {
        unreachable!()
    }
}

#[tokio::test]
async fn an_unreachable_store_is_reported_unhealthy_in_time() {
    let store = Observed::wrap(Arc::new(Silent));
    let unavailable = count("list", "unavailable");
    assert!(store.list("x").await.is_err());
    assert_eq!(count("list", "unavailable"), unavailable + 1);
    let started = std::time::Instant::now();
    let health = store.check(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!health.healthy);
    assert!(health.error.unwrap().contains("did not answer"));
    assert!(health.last_error.unwrap().1.contains("down"));
}
