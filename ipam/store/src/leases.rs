//! Host leases, for the backends that have them (etcd leases, Consul sessions): keys written with
//! `put_leased` hang off one lease per process, kept alive by a background task and written again
//! under a new lease when the store has lost the old one (a long partition).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
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
    keeper: std::sync::Mutex<Option<JoinHandle<()>>>,
}

struct LeaseState<Id> {
    id: Option<Id>,
    keys: LeasedKeys,
}

impl<B: LeaseBackend> Leases<B> {
    pub(crate) fn new(backend: Arc<B>) -> Self {
        let state = LeaseState { id: None, keys: LeasedKeys::default() };
        Self { backend, state: Arc::new(Mutex::new(state)), keeper: std::sync::Mutex::new(None) }
    }

    /// `Store::put_leased`: takes the lease on first use and starts
    /// the task that keeps it alive.
    pub(crate) async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        let mut st = self.state.lock().await;
        st.keys.remember(key, value.clone());
        {
            let mut keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner());
            if keeper.is_none() {
                *keeper = Some(tokio::spawn(keep_alive(self.backend.clone(), self.state.clone())));
            }
        }
        // On failure the key stays remembered: the keep-alive task writes it once the store answers.
        let lease = match &st.id {
            Some(id) => id.clone(),
            None => {
                let id = self.backend.take().await?;
                st.id = Some(id.clone());
                id
            }
        };
        self.backend.attach(&lease, key, value).await
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

async fn keep_alive<B: LeaseBackend>(backend: Arc<B>, state: Arc<Mutex<LeaseState<B::Id>>>) {
    loop {
        tokio::time::sleep(backend.refresh_period()).await;
        let lease = state.lock().await.id.clone();
        let alive = match &lease {
            Some(id) => backend.refresh(id).await,
            None => Ok(false),
        };
        match alive {
            Ok(true) => debug!("{} refreshed", B::KIND),
            Ok(false) => {
                match &lease {
                    Some(id) => warn!(lease = %id, "{} lost; taking a new one and rewriting leased keys", B::KIND),
                    None => info!("taking a new {} for the leased keys", B::KIND),
                }
                if let Err(e) = renew_all(&*backend, &state).await {
                    warn!("rewriting leased keys: {e}");
                }
            }
            Err(e) => warn!("refreshing the {}: {e}", B::KIND),
        }
    }
}

/// Takes a new lease and writes every leased key again.
async fn renew_all<B: LeaseBackend>(backend: &B, state: &Mutex<LeaseState<B::Id>>) -> StoreResult<()> {
    let mut st = state.lock().await;
    let lease = backend.take().await?;
    st.id = Some(lease.clone());
    for (key, value) in st.keys.snapshot() {
        backend.attach(&lease, &key, value).await?;
    }
    Ok(())
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
