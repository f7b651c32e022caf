//! What every store backend must do, checked the same way against each.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use netloom_ipam::store::{Condition, KeyValue, Store, Txn, TxnOutcome, WatchEvent, WatchStream};

async fn next_event(watch: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch is still open")
        .expect("a watch event, not an error")
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

pub async fn basics(store: Arc<dyn Store>) {
    assert!(store.get("c/a").await.unwrap().is_none());
    let r1 = store.put("c/a", b"1".to_vec()).await.unwrap();
    assert!(r1 > 0);
    let kv = store.get("c/a").await.unwrap().unwrap();
    assert_eq!((kv.key.as_str(), kv.value.as_slice(), kv.revision), ("c/a", &b"1"[..], r1));
    let r2 = store.put("c/a", b"2".to_vec()).await.unwrap();
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    assert_eq!(store.get("c/a").await.unwrap().unwrap().revision, r2);

    // Values are bytes; empty and binary survive.
    let binary: Vec<u8> = (0..=255u8).collect();
    store.put("c/b", binary.clone()).await.unwrap();
    assert_eq!(store.get("c/b").await.unwrap().unwrap().value, binary);
    store.put("c/b/x", Vec::new()).await.unwrap();
    assert_eq!(store.get("c/b/x").await.unwrap().unwrap().value, Vec::<u8>::new());
    store.put("cx", b"outside".to_vec()).await.unwrap();
    store.put("c/fd00::1%z", b"v6".to_vec()).await.unwrap();

    let listed = store.list("c/").await.unwrap();
    assert_eq!(keys(&listed), vec!["c/a", "c/b", "c/b/x", "c/fd00::1%z"]);
    assert_eq!(keys(&store.list("c/b").await.unwrap()), vec!["c/b", "c/b/x"]);
    assert!(store.list("nothing/").await.unwrap().is_empty());

    assert!(store.delete("c/a").await.unwrap());
    assert!(!store.delete("c/a").await.unwrap());
    assert!(store.get("c/a").await.unwrap().is_none());
}

pub async fn transactions(store: Arc<dyn Store>) {
    let rev = store.put("t/a", b"a".to_vec()).await.unwrap();

    // Each kind of failed condition writes nothing, whatever the other ops.
    for failing in [
        Condition::Absent("t/a".into()),
        Condition::Exists("t/missing".into()),
        Condition::Revision("t/a".into(), rev + 1000),
        Condition::Revision("t/missing".into(), rev),
    ] {
        let txn = Txn::new()
            .when(Condition::Revision("t/a".into(), rev))
            .when(failing.clone())
            .put("t/new", b"x".to_vec())
            .delete("t/a");
        assert_eq!(store.txn(txn).await.unwrap(), TxnOutcome::Conflict, "{failing:?}");
        assert!(store.get("t/new").await.unwrap().is_none(), "{failing:?} wrote t/new");
        assert_eq!(store.get("t/a").await.unwrap().unwrap().revision, rev, "{failing:?} touched t/a");
    }

    store.put("t/tree/1", b"1".to_vec()).await.unwrap();
    store.put("t/tree/2", b"2".to_vec()).await.unwrap();
    store.put("t/treehouse", b"keep".to_vec()).await.unwrap();
    let txn = Txn::new()
        .when(Condition::Revision("t/a".into(), rev))
        .when(Condition::Absent("t/new".into()))
        .when(Condition::Exists("t/tree/1".into()))
        .put("t/new", b"x".to_vec())
        .put("t/other", b"y".to_vec())
        .delete("t/a")
        .delete_prefix("t/tree/");
    let TxnOutcome::Committed(committed) = store.txn(txn).await.unwrap() else { panic!("conditions held") };
    assert!(committed > rev);
    assert_eq!(store.get("t/new").await.unwrap().unwrap().revision, committed);
    assert_eq!(store.get("t/other").await.unwrap().unwrap().revision, committed);
    assert!(store.get("t/a").await.unwrap().is_none());
    assert_eq!(keys(&store.list("t/").await.unwrap()), vec!["t/new", "t/other", "t/treehouse"]);
}

/// Many writers racing on one key with compare-and-swap: every increment lands exactly once.
pub async fn cas_counter(store: Arc<dyn Store>, writers: usize, increments: usize) {
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..increments {
                loop {
                    let cur = store.get("cas/counter").await.unwrap();
                    let n: u64 =
                        cur.as_ref().map(|kv| String::from_utf8_lossy(&kv.value).parse().unwrap()).unwrap_or(0);
                    let txn = Txn::new()
                        .when(Condition::unchanged("cas/counter", cur.map(|kv| kv.revision)))
                        .put("cas/counter", (n + 1).to_string());
                    if store.txn(txn).await.unwrap().committed() {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = store.get("cas/counter").await.unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&total.value), (writers * increments).to_string());
}

pub async fn watches(store: Arc<dyn Store>) {
    store.put("w/before", b"0".to_vec()).await.unwrap();
    let mut watch = store.watch("w/").await.unwrap();
    let rev = store.put("w/1", b"1".to_vec()).await.unwrap();
    match next_event(&mut watch).await {
        WatchEvent::Put(kv) => assert_eq!((kv.key.as_str(), kv.value.as_slice(), kv.revision), ("w/1", &b"1"[..], rev)),
        other => panic!("expected a put of w/1, got {other:?}"),
    }
    store.put("elsewhere/x", b"x".to_vec()).await.unwrap();
    store.delete("w/before").await.unwrap();
    assert!(matches!(next_event(&mut watch).await, WatchEvent::Delete { key, .. } if key == "w/before"));
    store.txn(Txn::new().delete_prefix("w/")).await.unwrap();
    assert!(matches!(next_event(&mut watch).await, WatchEvent::Delete { key, .. } if key == "w/1"));
}
