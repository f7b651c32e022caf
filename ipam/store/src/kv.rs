//! The key-value interface every backend implements, and the types it speaks.
//!
//! Keys given to a [`Store`] are relative: the store puts its prefix (default `/netloom/v1/`) in
//! front of every key it writes and strips it from every key it returns, so callers never see it.
//! Every read-modify-write goes through [`Store::txn`]: read the keys with their revisions, then
//! write on the condition that none of them changed.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::credentials::Credentials;

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
    /// The store wants TLS, or refused the certificates given: retrying does not help.
    #[error("TLS with the {backend} store at {endpoints} failed: {detail}")]
    Tls { backend: &'static str, endpoints: String, detail: String },
    /// The store refused the user, password or token given: retrying does not help.
    #[error("authentication to the {backend} store at {endpoints} failed: {detail}")]
    Auth { backend: &'static str, endpoints: String, detail: String },
    #[error("{backend} store at {endpoints} answered unexpectedly: {detail}")]
    Protocol { backend: &'static str, endpoints: String, detail: String },
    #[error("watch on {prefix:?} ended: {detail}; list again and re-watch")]
    WatchEnded { prefix: String, detail: String },
    /// The URL is fine, but its backend was left out of this build (a cargo feature).
    #[error("{what} needs the {backend} backend, which this binary was built without; use another --store or build netloom-store with its `{backend}` feature")]
    NotBuilt { what: String, backend: &'static str },
    #[error("invalid record key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("records in {path}: {detail}")]
    Files { path: String, detail: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A TLS or authentication failure: the store is reachable but will not talk to us as
    /// configured, so a binary should stop at start rather than retry.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, StoreError::Tls { .. } | StoreError::Auth { .. })
    }
}

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
    /// TLS material, user and password, or token; see [`crate::CredentialFiles::load`].
    pub credentials: Credentials,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(3),
            lease_ttl: Duration::from_secs(15),
            credentials: Credentials::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_condition() {
        assert_eq!(Condition::unchanged("k", None), Condition::Absent("k".into()));
        assert_eq!(Condition::unchanged("k", Some(7)), Condition::Revision("k".into(), 7));
    }
}
