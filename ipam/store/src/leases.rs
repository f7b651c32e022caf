//! Host leases, for the backends that have them (etcd leases, Consul sessions): keys written with
//! `put_leased` hang off one lease per process, kept alive by a background task and written again
//! under a new lease when the store has lost the old one (a long partition). A leased key whose
//! write failed (the store unreachable, or the key still locked by this host's previous run) is
//! written again, with backoff, until it is in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::kv::{Op, StoreResult};

/// The lease calls of one backend.
#[async_trait]
pub(crate) trait LeaseBackend: Send + Sync + 'static {
    type Id: Clone + Display + Send + Sync + 'static;

    /// What a lease is called in this backend, for log lines: "etcd lease", "consul session".
    const KIND: &'static str;

    async fn take(&self) -> StoreResult<Self::Id>;

    /// Writes `key` attached to `lease`, so that it goes when the lease does.
    async fn attach(&self, lease: &Self::Id, key: &str, value: Vec<u8>) -> StoreResult<()>;

    /// Refreshes `lease` once; `false` means the store no longer knows it.
    async fn refresh(&self, lease: &Self::Id) -> StoreResult<bool>;

    fn refresh_period(&self) -> Duration;
}

/// This process's lease and the keys hanging off it.
pub(crate) struct Leases<B: LeaseBackend> {
    backend: Arc<B>,
    state: Arc<Mutex<LeaseState<B::Id>>>,
    /// Tells the keep-alive task that a leased key is missing from the store.
    missing_key: Arc<Notify>,
    keeper: std::sync::Mutex<Option<JoinHandle<()>>>,
}

struct LeaseState<Id> {
    id: Option<Id>,
    keys: LeasedKeys,
    /// Leased keys not known to be in the store under the current lease: written again, with
    /// backoff, until they are.
    missing: BTreeSet<String>,
}

/// Bounds of the wait between attempts to write missing leased keys.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl<B: LeaseBackend> Leases<B> {
    pub(crate) fn new(backend: Arc<B>) -> Self {
        let state = LeaseState { id: None, keys: LeasedKeys::default(), missing: BTreeSet::new() };
        Self {
            backend,
            state: Arc::new(Mutex::new(state)),
            missing_key: Arc::new(Notify::new()),
            keeper: std::sync::Mutex::new(None),
        }
    }

    /// `Store::put_leased`: takes the lease on first use and starts the task that keeps it
    /// alive. On failure the key stays remembered and the task writes it once the store takes it.
    pub(crate) async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        let mut st = self.state.lock().await;
        st.keys.remember(key, value.clone());
        st.missing.insert(key.to_string());
        {
            let mut keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner());
            if keeper.is_none() {
                let task = keep_alive(self.backend.clone(), self.state.clone(), self.missing_key.clone());
                *keeper = Some(tokio::spawn(task));
            }
        }
        let written = async {
            let lease = lease_of(&*self.backend, &mut st).await?;
            self.backend.attach(&lease, key, value).await
        }
        .await;
        match written {
            Ok(()) => {
                st.missing.remove(key);
            }
            Err(_) => self.missing_key.notify_one(),
        }
        written
    }

    /// Runs a write of `ops` so that a lease renewal cannot rewrite a key it replaces or deletes:
    /// when the ops touch a leased key, the lease state stays locked across the write and the keys
    /// are forgotten once it commits. Other writes don't wait for the lock.
    pub(crate) async fn write<T>(
        &self,
        ops: &[Op],
        committed: impl FnOnce(&T) -> bool,
        write: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let mut st = self.state.lock().await;
        if !st.keys.touches(ops) {
            drop(st);
            return write.await;
        }
        let out = write.await?;
        if committed(&out) {
            st.keys.forget(ops);
        }
        Ok(out)
    }
}

impl<B: LeaseBackend> Drop for Leases<B> {
    fn drop(&mut self) {
        if let Some(task) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// The current lease, taken first if there is none.
async fn lease_of<B: LeaseBackend>(backend: &B, st: &mut LeaseState<B::Id>) -> StoreResult<B::Id> {
    if let Some(id) = &st.id {
        return Ok(id.clone());
    }
    let id = backend.take().await?;
    st.id = Some(id.clone());
    Ok(id)
}

/// Refreshes the lease every period and, while a leased key is missing from the store, writes
/// it again with a backoff between attempts.
async fn keep_alive<B: LeaseBackend>(backend: Arc<B>, state: Arc<Mutex<LeaseState<B::Id>>>, missing_key: Arc<Notify>) {
    let mut next_refresh = Instant::now() + backend.refresh_period();
    let mut retry = RETRY_FIRST;
    loop {
        let missing = !state.lock().await.missing.is_empty();
        let until = if missing { next_refresh.min(Instant::now() + retry) } else { next_refresh };
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = missing_key.notified() => {}
        }
        if Instant::now() >= next_refresh {
            next_refresh = Instant::now() + backend.refresh_period();
            refresh(&*backend, &state).await;
        }
        match write_missing(&*backend, &state).await {
            Ok(0) => {}
            Ok(written) => {
                info!(keys = written, "leased keys written under the {}", B::KIND);
                retry = RETRY_FIRST;
            }
            Err(e) => {
                warn!(retry_in_ms = retry.as_millis() as u64, "writing leased keys: {e}");
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Refreshes the lease once; a lease the store lost leaves every leased key to be written again
/// under a new one.
async fn refresh<B: LeaseBackend>(backend: &B, state: &Mutex<LeaseState<B::Id>>) {
    let lease = state.lock().await.id.clone();
    let Some(id) = lease else { return };
    match backend.refresh(&id).await {
        Ok(true) => debug!("{} refreshed", B::KIND),
        Ok(false) => {
            warn!(lease = %id, "{} lost; taking a new one and rewriting leased keys", B::KIND);
            let mut st = state.lock().await;
            st.id = None;
            st.missing = st.keys.names();
        }
        Err(e) => warn!("refreshing the {}: {e}", B::KIND),
    }
}

/// Writes the missing leased keys; returns how many. Keys forgotten meanwhile are dropped.
async fn write_missing<B: LeaseBackend>(backend: &B, state: &Mutex<LeaseState<B::Id>>) -> StoreResult<usize> {
    let mut st = state.lock().await;
    if st.missing.is_empty() {
        return Ok(0);
    }
    let lease = lease_of(backend, &mut st).await?;
    let mut written = 0;
    for key in st.missing.clone() {
        if let Some(value) = st.keys.value(&key) {
            backend.attach(&lease, &key, value).await?;
            written += 1;
        }
        st.missing.remove(&key);
    }
    Ok(written)
}

/// What a backend with leases remembers of the keys written by `put_leased`, to write them
/// again under a new lease. A later plain write or delete of such a key ends its lease: it is
/// forgotten, so that a lease loss never brings back a key that was deleted meanwhile.
#[derive(Debug, Default)]
struct LeasedKeys {
    keys: BTreeMap<String, Vec<u8>>,
}

impl LeasedKeys {
    fn remember(&mut self, key: &str, value: Vec<u8>) {
        self.keys.insert(key.to_string(), value);
    }

    /// Forgets the keys these (committed) ops wrote or deleted.
    fn forget(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Put(key, _) | Op::Delete(key) => {
                    self.keys.remove(key);
                }
                Op::DeletePrefix(prefix) => self.keys.retain(|key, _| !key.starts_with(prefix.as_str())),
            }
        }
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.keys.get(key).cloned()
    }

    fn names(&self) -> BTreeSet<String> {
        self.keys.keys().cloned().collect()
    }

    #[cfg(test)]
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        self.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn touches(&self, ops: &[Op]) -> bool {
        ops.iter().any(|op| match op {
            Op::Put(key, _) | Op::Delete(key) => self.keys.contains_key(key),
            Op::DeletePrefix(prefix) => self.keys.keys().any(|key| key.starts_with(prefix.as_str())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
