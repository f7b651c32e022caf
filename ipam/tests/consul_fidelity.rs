//! Where Consul differs from a plain key-value store, against the fake agent (tests/common/
//! fake_consul.rs): first that the fake behaves as Consul's API documents it, then that the
//! client copes: the 64-operation transaction limit, session locks that plain writes keep,
//! blocking-query indexes that go backwards or are 0, ACL tokens, and locks left by a previous run.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_consul::{request, FakeConsul, MAX_TXN_OPS};
use common::unique_prefix;
use futures::StreamExt;
use netloom_ipam::store::consul::ConsulStore;
use netloom_ipam::store::{Condition, Credentials, Store, StoreOptions, Txn, WatchEvent, WatchStream};
use netloom_ipam::StoreError;
use serde_json::{json, Value};

fn options(prefix: &str) -> StoreOptions {
    StoreOptions { prefix: prefix.to_string(), ..StoreOptions::default() }
}

fn with_token(prefix: &str, token: &str) -> StoreOptions {
    let credentials = Credentials { token: Some(token.to_string()), ..Credentials::default() };
    StoreOptions { credentials, ..options(prefix) }
}

async fn open(consul: &FakeConsul, options: StoreOptions) -> Arc<dyn Store> {
    Arc::new(ConsulStore::open(vec![consul.endpoint()], &options).await.unwrap())
}

/// The Consul key of a relative key under `prefix`.
fn consul_key(prefix: &str, key: &str) -> String {
    format!("{}{key}", prefix.trim_start_matches('/'))
}

fn sets(n: usize) -> Value {
    Value::Array((0..n).map(|i| json!({"KV": {"Verb": "set", "Key": format!("raw/{i}"), "Value": "eA=="}})).collect())
}

async fn session(consul: &FakeConsul) -> String {
    let body = json!({"TTL": "10s", "Behavior": "delete", "LockDelay": "0s"}).to_string();
    let (status, answer) = request(&consul.endpoint(), "PUT", "/v1/session/create", &body, None).await;
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str::<Value>(&answer).unwrap()["ID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_agent_refuses_transactions_over_64_operations() {
    let consul = FakeConsul::start().await;
    let (status, body) = request(&consul.endpoint(), "PUT", "/v1/txn", &sets(MAX_TXN_OPS).to_string(), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(&consul.endpoint(), "PUT", "/v1/txn", &sets(MAX_TXN_OPS + 1).to_string(), None).await;
    assert_eq!((status, body.as_str()), (413, "Transaction contains too many operations (65 > 64)"));
    assert_eq!(consul.refused_txns(), 1);
}

#[tokio::test]
async fn the_client_splits_plain_writes_and_refuses_large_conditional_ones() {
    let consul = FakeConsul::start().await;
    let store = open(&consul, options(&unique_prefix("split"))).await;
    // 40 puts are 80 Consul operations (each a delete and a set).
    let puts = |txn: Txn, value: u8| (0..40).fold(txn, |t, i| t.put(format!("many/{i:02}"), vec![value, i]));
    assert!(store.txn(puts(Txn::new(), 1)).await.unwrap().committed());
    assert_eq!(store.list("many/").await.unwrap().len(), 40);

    let err = store.txn(puts(Txn::new().when(Condition::Absent("guard".into())), 2)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("limit of 64") && text.contains("atomicity"), "{text}");
    // Refused before anything was sent: the agent refused nothing and nothing changed.
    assert_eq!(consul.refused_txns(), 0);
    let values: Vec<Vec<u8>> = store.list("many/").await.unwrap().into_iter().map(|kv| kv.value).collect();
    assert_eq!(values, (0..40).map(|i| vec![1, i]).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_agent_keeps_a_lock_across_plain_writes_and_refuses_a_second_holder() {
    let consul = FakeConsul::start().await;
    let (first, second) = (session(&consul).await, session(&consul).await);
    let put = |query: String, value: &'static str| {
        let endpoint = consul.endpoint();
        async move { request(&endpoint, "PUT", &format!("/v1/kv/lock{query}"), value, None).await.1 }
    };
    assert_eq!(put(format!("?acquire={first}"), "a").await, "true");
    assert_eq!(put(format!("?acquire={second}"), "b").await, "false");
    assert_eq!(put(String::new(), "plain").await, "true");
    assert_eq!(consul.holder("lock"), Some(first.clone()), "a plain write keeps the lock");
    assert_eq!(put(format!("?acquire={second}"), "b").await, "false");
    assert_eq!(put(format!("?release={second}"), "b").await, "false", "only the holder releases");
    assert_eq!(put(format!("?release={first}"), "a").await, "true");
    assert_eq!(put(format!("?acquire={second}"), "b").await, "true");
    assert_eq!(consul.holder("lock"), Some(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_key_overwritten_by_another_writer_outlives_the_first_session() {
    let consul = FakeConsul::start().await;
    let prefix = unique_prefix("overwritten");
    let leased = open(&consul, options(&prefix)).await;
    let writer = open(&consul, options(&prefix)).await;
    leased.put_leased("hosts/x", b"leased".to_vec()).await.unwrap();
    assert!(consul.holder(&consul_key(&prefix, "hosts/x")).is_some());
    writer.put("hosts/x", b"plain".to_vec()).await.unwrap();
    assert_eq!(consul.holder(&consul_key(&prefix, "hosts/x")), None, "another writer's put makes the key plain");

    // The first process is gone and its session expires: the other writer's key stays.
    drop(leased);
    consul.expire_sessions();
    assert_eq!(writer.get("hosts/x").await.unwrap().unwrap().value, b"plain");
}

/// Keeps the watch's blocking query in flight, as a long-running watcher does, and hands out the
/// keys of its puts.
fn drain(mut watch: WatchStream) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(event)) = watch.next().await {
            if let WatchEvent::Put(kv) = event {
                let _ = tx.send(kv.key);
            }
        }
    });
    rx
}

async fn next_put(puts: &mut tokio::sync::mpsc::UnboundedReceiver<String>, key: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, puts.recv()).await.unwrap_or_else(|_| panic!("no event for {key}"));
        if got.expect("the watch ended") == key {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_follows_an_index_that_goes_backwards() {
    let consul = FakeConsul::start().await;
    let store = open(&consul, options(&unique_prefix("backwards"))).await;
    for i in 0..20 {
        store.put(&format!("w/old{i}"), b"1".to_vec()).await.unwrap();
    }
    let mut puts = drain(store.watch("w/").await.unwrap());
    store.put("w/before", b"1".to_vec()).await.unwrap();
    next_put(&mut puts, "w/before", Duration::from_secs(5)).await;

    // Restored from a snapshot: the index is lower than the one the watch waits past, and
    // Consul answers the queries in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    consul.restore_at_index(3);
    store.put("w/after", b"1".to_vec()).await.unwrap();
    next_put(&mut puts, "w/after", Duration::from_secs(5)).await;
    store.put("w/later", b"1".to_vec()).await.unwrap();
    next_put(&mut puts, "w/later", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_zero_does_not_spin_the_watch() {
    let consul = FakeConsul::start().await;
    let store = open(&consul, options(&unique_prefix("zero"))).await;
    let mut puts = drain(store.watch("w/").await.unwrap());
    consul.answer_index_zero(true);
    let reads = consul.kv_reads();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let spun = consul.kv_reads() - reads;
    assert!(spun <= 10, "{spun} reads in 3 s");
    store.put("w/seen", b"1".to_vec()).await.unwrap();
    next_put(&mut puts, "w/seen", Duration::from_secs(3)).await;
}

#[tokio::test]
async fn requests_without_the_acl_token_are_refused_naming_authentication() {
    let consul = FakeConsul::start_with_token(Some("s3cret")).await;
    let prefix = unique_prefix("acl");
    // The right token works...
    let allowed = open(&consul, with_token(&prefix, "s3cret")).await;
    allowed.put("k", b"v".to_vec()).await.unwrap();
    assert_eq!(allowed.get("k").await.unwrap().unwrap().value, b"v");
    assert_eq!(consul.denied(), 0);

    // ...no token and a wrong one fail at open, fast, naming authentication and the token.
    for (options, says) in [(options(&prefix), "no ACL token"), (with_token(&prefix, "guess"), "was refused")] {
        let started = Instant::now();
        let err = ConsulStore::open(vec![consul.endpoint()], &options).await.err().expect("refused at open");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(matches!(err, StoreError::Auth { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("authentication") && text.contains("403") && text.contains(says), "{text}");
    }
    // Nothing a tokenless client tries gets through.
    let intruder = ConsulStore::connect(vec![consul.endpoint()], &options(&prefix)).unwrap();
    let attempts = [
        intruder.put("k", b"evil".to_vec()).await.err(),
        intruder.delete("k").await.err(),
        intruder.put_leased("hosts/evil", b"1".to_vec()).await.err(),
        intruder.get("k").await.err(),
    ];
    let through = attempts.iter().filter(|e| !matches!(e, Some(StoreError::Auth { .. }))).count();
    assert_eq!(through, 0, "{attempts:?}");
    assert_eq!(allowed.get("k").await.unwrap().unwrap().value, b"v");
    assert!(allowed.get("hosts/evil").await.unwrap().is_none());
    assert!(consul.denied() >= 6, "{}", consul.denied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_the_previous_run_is_waited_out_and_retaken() {
    let consul = FakeConsul::start().await;
    let prefix = unique_prefix("restart");
    let key = consul_key(&prefix, "hosts/h");
    let previous = open(&consul, options(&prefix)).await;
    previous.put_leased("hosts/h", b"previous".to_vec()).await.unwrap();
    let old_session = consul.holder(&key).unwrap();
    // Killed: nothing renews its session any more, but Consul keeps it until its TTL runs out.
    drop(previous);

    let restarted = open(&consul, options(&prefix)).await;
    let err = restarted.put_leased("hosts/h", b"restarted".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("locked by another consul session"), "{err}");
    let started = Instant::now();
    loop {
        if let Some(holder) = consul.holder(&key) {
            if holder != old_session {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(25), "the lock was never retaken");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("retaken {:?} after the restart", started.elapsed());
    assert_eq!(restarted.get("hosts/h").await.unwrap().unwrap().value, b"restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_write_that_failed_is_retried_until_present() {
    let consul = FakeConsul::start().await;
    let store = open(&consul, options(&unique_prefix("retry"))).await;
    consul.fail_acquires(3);
    let err = store.put_leased("hosts/r", b"1".to_vec()).await.unwrap_err();
    assert!(err.to_string().contains("No cluster leader"), "{err}");
    let started = Instant::now();
    while store.get("hosts/r").await.unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(6), "leased key never written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(consul.session_count(), 1, "one session for all attempts");
}
