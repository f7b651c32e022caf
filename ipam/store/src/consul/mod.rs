//! Consul backend over its HTTP API: KV reads, `/v1/txn` for every write (check-and-set on
//! ModifyIndex), blocking queries for watches, and a session (behavior "delete") as the host lease.
//!
//! Tested against the documented API through a fake agent in `tests/`; not against a live Consul.

mod api;
mod base64;
mod http;
mod tls;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hyper::Method;
use tracing::{debug, info, warn};

use self::http::Http;
use crate::keyspace::KeySpace;
use crate::kv::{
    Condition, KeyValue, Revision, Store, StoreError, StoreOptions, StoreResult, Txn, TxnOutcome, WatchEvent,
    WatchStream,
};
use crate::leases::{LeaseBackend, Leases};
use crate::watch::{self, WatchSource};

pub use self::http::TOKEN_ENV;

/// How long one blocking query waits for a change before Consul answers anyway.
const WATCH_WAIT: Duration = Duration::from_secs(20);
/// Consul refuses session TTLs below 10 s.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);
/// The pause before the next blocking query when the last one came back at once without moving
/// the index forwards (reset, 0): Consul's docs ask clients to rate-limit that case.
const WATCH_PAUSE: Duration = Duration::from_millis(500);

pub struct ConsulStore {
    ctx: Arc<Ctx>,
    leases: Leases<Ctx>,
}

struct Ctx {
    http: Http,
    keys: KeySpace,
    session_ttl: Duration,
}

impl ConsulStore {
    /// [`ConsulStore::connect`], then one read that tells at start whether Consul takes the ACL
    /// token: a refusal is an error; an agent that does not answer is only logged, the store is
    /// used once it does.
    pub async fn open(endpoints: Vec<String>, options: &StoreOptions) -> StoreResult<Self> {
        let store = Self::connect(endpoints, options)?;
        let prefix = api::kv_path(&store.ctx.keys.full(""));
        match store.ctx.read(&prefix, Duration::ZERO).await {
            Ok(_) => {}
            Err(e @ (StoreError::Auth { .. } | StoreError::Tls { .. })) => return Err(e),
            // A TLS agent may drop a plain request without answering it.
            Err(e) if store.ctx.http.plain() && store.ctx.http.speaks_tls().await => {
                return Err(store
                    .ctx
                    .http
                    .tls_refused(format!("the agent answers in TLS; a plain HTTP request got no answer ({e})")));
            }
            Err(e) => warn!("consul is not answering yet: {e}; carrying on"),
        }
        Ok(store)
    }

    /// A store that sends nothing until it is used.
    pub fn connect(endpoints: Vec<String>, options: &StoreOptions) -> StoreResult<Self> {
        let ctx = Arc::new(Ctx {
            http: Http::new(endpoints, options)?,
            keys: KeySpace::new(&options.prefix),
            session_ttl: options.lease_ttl.max(MIN_SESSION_TTL),
        });
        Ok(Self { leases: Leases::new(ctx.clone()), ctx })
    }
}

impl Ctx {
    async fn read(&self, path: &str, extra: Duration) -> StoreResult<(Vec<KeyValue>, Option<u64>)> {
        let resp = self.http.send(Method::GET, path, None, extra).await?;
        match resp.status {
            200 => {
                let kvs = api::parse_kv_list(&resp.body, &self.keys).map_err(|e| self.http.protocol(e))?;
                Ok((kvs, resp.index))
            }
            404 => Ok((Vec::new(), resp.index)),
            s => {
                Err(self.http.protocol(format!("GET {path}: HTTP {s}: {}", String::from_utf8_lossy(&resp.body).trim())))
            }
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<(Vec<KeyValue>, Option<u64>)> {
        let path = format!("{}?recurse=true", api::kv_path(&self.keys.full(prefix)));
        self.read(&path, Duration::ZERO).await
    }

    /// One `/v1/txn` per body; more than one only for a transaction without conditions that is
    /// over Consul's limit (see [`api::txn_bodies`]).
    async fn txn(&self, txn: &Txn) -> StoreResult<TxnOutcome> {
        let bodies = api::txn_bodies(txn, &self.keys).map_err(|e| self.http.protocol(format!("not sent: {e}")))?;
        if bodies.len() > 1 {
            debug!(
                parts = bodies.len(),
                ops = txn.ops.len(),
                "unconditional write split at Consul's transaction limit"
            );
        }
        let mut outcome = TxnOutcome::Conflict;
        for body in bodies {
            let body = serde_json::to_vec(&body).map_err(|e| self.http.protocol(e.to_string()))?;
            let resp = self.http.send(Method::PUT, "/v1/txn", Some(body), Duration::ZERO).await?;
            outcome =
                api::parse_txn_response(resp.status, &resp.body, resp.index).map_err(|e| self.http.protocol(e))?;
            if !outcome.committed() {
                break;
            }
        }
        Ok(outcome)
    }
}

/// The host lease is a Consul session with behavior "delete": keys acquired by it go with it.
#[async_trait]
impl LeaseBackend for Ctx {
    type Id = String;
    const KIND: &'static str = "consul session";

    async fn take(&self) -> StoreResult<String> {
        let name = format!("netloom {}", self.keys);
        let body = api::session_body(&name, self.session_ttl.as_secs()).to_string().into_bytes();
        let resp = self.http.send(Method::PUT, "/v1/session/create", Some(body), Duration::ZERO).await?;
        if resp.status != 200 {
            return Err(self.http.protocol(format!("session create: HTTP {}", resp.status)));
        }
        let id = api::parse_session_id(&resp.body).map_err(|e| self.http.protocol(e))?;
        info!(session = %id, ttl_s = self.session_ttl.as_secs(), "consul session created");
        Ok(id)
    }

    async fn attach(&self, session: &String, key: &str, value: Vec<u8>) -> StoreResult<()> {
        let path = format!("{}?acquire={session}", api::kv_path(&self.keys.full(key)));
        let resp = self.http.send(Method::PUT, &path, Some(value), Duration::ZERO).await?;
        match (resp.status, api::parse_bool(&resp.body)) {
            (200, Ok(true)) => Ok(()),
            // Held by another session, or in the lock-delay after one.
            (200, Ok(false)) => Err(self.http.protocol(format!(
                "{key} is locked by another consul session (this host's previous run, until its session \
                 expires, or another host with the same id); session {session} takes it once it is free"
            ))),
            (status, _) => Err(self.http.protocol(format!(
                "acquiring {key} with session {session}: HTTP {status}: {}",
                String::from_utf8_lossy(&resp.body).trim()
            ))),
        }
    }

    async fn refresh(&self, session: &String) -> StoreResult<bool> {
        let resp = self.http.send(Method::PUT, &format!("/v1/session/renew/{session}"), None, Duration::ZERO).await?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            s => Err(self.http.protocol(format!("session renew: HTTP {s}"))),
        }
    }

    fn refresh_period(&self) -> Duration {
        self.session_ttl / 3
    }
}

#[async_trait]
impl Store for ConsulStore {
    fn describe(&self) -> String {
        format!("consul://{}", self.ctx.http.endpoints())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let full = self.ctx.keys.full(key);
        let (kvs, _) = self.ctx.read(&api::kv_path(&full), Duration::ZERO).await?;
        Ok(kvs.into_iter().find(|kv| kv.key == key))
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        Ok(self.ctx.list(prefix).await?.0)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        match self.txn(Txn::new().put(key, value)).await? {
            TxnOutcome::Committed(rev) => Ok(rev),
            TxnOutcome::Conflict => {
                Err(self.ctx.http.protocol(format!("unconditional write of {key} was rolled back")))
            }
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let txn = Txn::new().when(Condition::Exists(key.to_string())).delete(key);
        Ok(self.txn(txn).await?.committed())
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        self.leases.write(&txn.ops, |o: &TxnOutcome| o.committed(), self.ctx.txn(&txn)).await
    }

    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        let (kvs, index) = self.ctx.list(prefix).await?;
        Ok(watch::stream(Watch {
            ctx: self.ctx.clone(),
            prefix: prefix.to_string(),
            index: index.unwrap_or(0),
            snapshot: kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
        }))
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.leases.put(key, value).await
    }
}

/// Watches by repeating a blocking recursive read and diffing it against the previous one.
struct Watch {
    ctx: Arc<Ctx>,
    prefix: String,
    index: u64,
    snapshot: BTreeMap<String, KeyValue>,
}

#[async_trait]
impl WatchSource for Watch {
    async fn next_batch(&mut self) -> StoreResult<Option<Vec<WatchEvent>>> {
        let path = format!(
            "{}?recurse=true&index={}&wait={}s",
            api::kv_path(&self.ctx.keys.full(&self.prefix)),
            self.index,
            WATCH_WAIT.as_secs()
        );
        let started = tokio::time::Instant::now();
        let (kvs, index) = self
            .ctx
            .read(&path, WATCH_WAIT)
            .await
            .map_err(|e| StoreError::WatchEnded { prefix: self.prefix.clone(), detail: e.to_string() })?;
        let index = index.unwrap_or(self.index);
        let previous = self.index;
        self.index = next_index(previous, index);
        if index <= previous && started.elapsed() < WATCH_PAUSE {
            debug!(previous, answered = index, "consul index did not move forwards; pausing before the next query");
            tokio::time::sleep(WATCH_PAUSE).await;
        }
        let current: BTreeMap<String, KeyValue> = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let events = diff(&self.snapshot, &current, index);
        self.snapshot = current;
        Ok(Some(events))
    }
}

/// The index of the next blocking query, after Consul's "Blocking Queries" rules: an index that
/// went backwards starts over from 0 (a full read that answers at once), and 0 itself, which
/// would make every query return at once, becomes 1.
fn next_index(previous: u64, answered: u64) -> u64 {
    if answered < previous {
        0
    } else {
        answered.max(1)
    }
}

/// Events that turn `before` into `after`.
fn diff(before: &BTreeMap<String, KeyValue>, after: &BTreeMap<String, KeyValue>, index: u64) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    for (key, kv) in after {
        if before.get(key).map(|old| old.revision) != Some(kv.revision) {
            events.push(WatchEvent::Put(kv.clone()));
        }
    }
    for key in before.keys() {
        if !after.contains_key(key) {
            events.push(WatchEvent::Delete { key: key.clone(), revision: index });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: u64) -> (String, KeyValue) {
        (key.to_string(), KeyValue { key: key.into(), value: vec![rev as u8], revision: rev })
    }

    #[test]
    fn blocking_query_index() {
        assert_eq!(next_index(0, 12), 12);
        assert_eq!(next_index(12, 12), 12);
        assert_eq!(next_index(12, 30), 30);
        assert_eq!(next_index(30, 7), 0, "backwards: start over");
        assert_eq!(next_index(0, 0), 1, "0 is never waited on");
        assert_eq!(next_index(30, 0), 0);
    }

    #[test]
    fn diff_finds_puts_and_deletes() {
        let before: BTreeMap<_, _> = [kv("a", 1), kv("b", 2), kv("c", 3)].into();
        let after: BTreeMap<_, _> = [kv("a", 1), kv("b", 5), kv("d", 5)].into();
        let events = diff(&before, &after, 5);
        assert_eq!(
            events,
            vec![
                WatchEvent::Put(kv("b", 5).1),
                WatchEvent::Put(kv("d", 5).1),
                WatchEvent::Delete { key: "c".into(), revision: 5 },
            ]
        );
        assert!(diff(&after, &after, 9).is_empty());
    }
}
