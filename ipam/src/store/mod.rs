//! A small key-value store interface shared by every host, with three backends: the embedded redb
//! file (one host), etcd v3 and Consul.
//!
//! Keys given to a [`Store`] are relative: the store puts its prefix (default `/netloom/v1/`) in
//! front of every key it writes and strips it from every key it returns, so callers never see it.
//! Every read-modify-write goes through [`Store::txn`]: read the keys with their revisions, then
//! write on the condition that none of them changed.

mod embedded;
mod etcd;
mod records;
mod url;

pub mod consul;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use self::records::{DriverRecords, EndpointRecord, NetworkRecord};
pub use self::url::StoreUrl;

/// The prefix every netloom key lives under; `v1` is the layout version in KEYS.md.
pub const DEFAULT_PREFIX: &str = "/netloom/v1/";

/// A key's modification revision: it changes on every write of that key. Never 0 for a key that
/// exists.
pub type Revision = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: Revision,
}

/// A condition of a [`Txn`]; the transaction writes nothing unless all of them hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Absent(String),
    Exists(String),
    /// The key exists and was last written at this revision.
    Revision(String, Revision),
}

impl Condition {
    /// "The key is still as I read it": absent if it was absent, else unchanged since `revision`.
    pub fn unchanged(key: impl Into<String>, revision: Option<Revision>) -> Self {
        match revision {
            Some(rev) => Condition::Revision(key.into(), rev),
            None => Condition::Absent(key.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    /// Deletes every key starting with this (relative) prefix.
    DeletePrefix(String),
}

/// An atomic multi-key write: either every op is applied or none is.
///
/// A key may appear in at most one op (etcd refuses duplicates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub conditions: Vec<Condition>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, condition: Condition) -> Self {
        self.conditions.push(condition);
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put(key.into(), value.into()));
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }

    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(Op::DeletePrefix(prefix.into()));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every op was applied; keys written got this revision.
    Committed(Revision),
    /// A condition failed and nothing was written.
    Conflict,
}

impl TxnOutcome {
    pub fn committed(self) -> bool {
        matches!(self, TxnOutcome::Committed(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: String, revision: Revision },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

/// Changes under a prefix made after the watch started. The stream ends after yielding an error
/// (store unreachable, or the watcher fell behind); the caller then lists again and re-watches.
pub type WatchStream = BoxStream<'static, StoreResult<WatchEvent>>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{backend} store at {endpoints} is unavailable: {detail}")]
    Unavailable { backend: &'static str, endpoints: String, detail: String },
    #[error("embedded store {path}: {detail}")]
    Embedded { path: String, detail: String },
    #[error("{backend} store at {endpoints} answered unexpectedly: {detail}")]
    Protocol { backend: &'static str, endpoints: String, detail: String },
    #[error("watch on {prefix:?} ended: {detail}; list again and re-watch")]
    WatchEnded { prefix: String, detail: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Where the data lives, for logs and error messages: `etcd://h1:2379`, a file path, ...
    fn describe(&self) -> String;

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Every key starting with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>>;

    /// Unconditional write; returns the key's new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision>;

    /// Returns whether the key existed.
    async fn delete(&self, key: &str) -> StoreResult<bool>;

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome>;

    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream>;

    /// Writes `key` attached to this process's host lease: the store keeps the lease alive while
    /// the process runs, and deletes the key about `lease_ttl` after the process stops doing so
    /// (etcd lease, Consul session). If the lease is lost (long partition), the store takes a new
    /// one and writes its leased keys again. The embedded store serves one host and keeps the key.
    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()>;
}

/// Tuning shared by the backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Prepended to every key; must start and end with `/`.
    pub prefix: String,
    pub connect_timeout: Duration,
    /// Upper bound for one request, so a call against an unreachable store fails instead of hanging.
    pub request_timeout: Duration,
    /// How long leased keys outlive their process.
    pub lease_ttl: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            lease_ttl: Duration::from_secs(15),
        }
    }
}

/// Opens the store named by `url`: `None` is the embedded store in `<state_dir>/store.redb`,
/// `etcd://h1:2379,h2:2379` or `consul://host:8500` a shared one.
pub async fn open(url: Option<&str>, state_dir: &Path, prefix: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, state_dir, StoreOptions { prefix: prefix.to_string(), ..StoreOptions::default() }).await
}

pub async fn open_with(url: Option<&str>, state_dir: &Path, options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
    let url_text = url.unwrap_or("");
    let parsed = match url {
        None => StoreUrl::Embedded,
        Some(u) => StoreUrl::parse(u)?,
    };
    validate_prefix(&options.prefix).map_err(|reason| StoreError::InvalidUrl { url: url_text.to_string(), reason })?;
    let store: Arc<dyn Store> = match parsed {
        StoreUrl::Embedded => Arc::new(embedded::EmbeddedStore::open(state_dir, &options).await?),
        StoreUrl::Etcd(endpoints) => Arc::new(etcd::EtcdStore::connect(endpoints, &options).await?),
        StoreUrl::Consul(endpoints) => Arc::new(consul::ConsulStore::connect(endpoints, &options)?),
    };
    tracing::info!(store = %store.describe(), prefix = %options.prefix, "store opened");
    Ok(store)
}

fn validate_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
        return Err(format!("key prefix {prefix:?} must start and end with '/', e.g. {DEFAULT_PREFIX:?}"));
    }
    if prefix.contains("//") || prefix.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("key prefix {prefix:?} must not contain empty segments, spaces or control characters"));
    }
    Ok(())
}

/// What a backend with leases remembers of the keys written by `put_leased`, to write them
/// again under a new lease. A later plain write or delete of such a key ends its lease: it is
/// forgotten, so that a lease loss never brings back a key that was deleted meanwhile.
#[derive(Debug, Default)]
pub(crate) struct LeasedKeys {
    keys: std::collections::BTreeMap<String, Vec<u8>>,
}

impl LeasedKeys {
    pub(crate) fn remember(&mut self, key: &str, value: Vec<u8>) {
        self.keys.insert(key.to_string(), value);
    }

    /// Forgets the keys these (committed) ops wrote or deleted.
    pub(crate) fn forget(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Put(key, _) | Op::Delete(key) => {
                    self.keys.remove(key);
                }
                Op::DeletePrefix(prefix) => self.keys.retain(|key, _| !key.starts_with(prefix.as_str())),
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        self.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn touches(&self, ops: &[Op]) -> bool {
        ops.iter().any(|op| match op {
            Op::Put(key, _) | Op::Delete(key) => self.keys.contains_key(key),
            Op::DeletePrefix(prefix) => self.keys.keys().any(|key| key.starts_with(prefix.as_str())),
        })
    }
}

/// Runs a write of `ops` so that a lease renewal cannot rewrite a key it replaces or deletes:
/// when the ops touch a leased key, the lease state stays locked across the write and the keys
/// are forgotten once it commits. Other writes don't wait for the lock.
pub(crate) async fn write_past_leases<S, T>(
    state: &tokio::sync::Mutex<S>,
    leased: impl FnOnce(&mut S) -> &mut LeasedKeys,
    ops: &[Op],
    committed: impl FnOnce(&T) -> bool,
    write: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let mut guard = state.lock().await;
    let keys = leased(&mut guard);
    if !keys.touches(ops) {
        drop(guard);
        return write.await;
    }
    let out = write.await?;
    if committed(&out) {
        keys.forget(ops);
    }
    Ok(out)
}

/// Maps relative keys to absolute ones and back.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    pub(crate) fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub(crate) fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.prefix.as_str())
    }
}

impl fmt::Display for KeySpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(validate_prefix("/netloom/v1/").is_ok());
        assert!(validate_prefix("/a/").is_ok());
        assert!(validate_prefix("netloom/").is_err());
        assert!(validate_prefix("/netloom").is_err());
        assert!(validate_prefix("/").is_err());
        assert!(validate_prefix("/a//b/").is_err());
    }

    #[test]
    fn leased_keys_written_or_deleted_otherwise_are_forgotten() {
        let mut leased = LeasedKeys::default();
        for key in ["hosts/a", "hosts/b", "other/c", "other/d"] {
            leased.remember(key, key.as_bytes().to_vec());
        }
        leased.forget(&[Op::Delete("hosts/a".into()), Op::Put("other/c".into(), vec![]), Op::Delete("absent".into())]);
        let keys = |l: &LeasedKeys| l.snapshot().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(&leased), ["hosts/b", "other/d"]);
        leased.forget(&[Op::DeletePrefix("hosts/".into())]);
        assert_eq!(keys(&leased), ["other/d"]);
    }

    #[test]
    fn keyspace_round_trip() {
        let ks = KeySpace::new("/netloom/v1/");
        assert_eq!(ks.full("ipam/x"), "/netloom/v1/ipam/x");
        assert_eq!(ks.relative("/netloom/v1/ipam/x"), Some("ipam/x"));
        assert_eq!(ks.relative("/other/ipam/x"), None);
    }

    #[test]
    fn unchanged_condition() {
        assert_eq!(Condition::unchanged("k", None), Condition::Absent("k".into()));
        assert_eq!(Condition::unchanged("k", Some(7)), Condition::Revision("k".into(), 7));
    }
}
