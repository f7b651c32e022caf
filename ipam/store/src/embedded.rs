//! The single-host store: one redb file, `<state_dir>/store.redb`.
//!
//! Every write is one redb transaction committed with `Durability::Immediate` (fsync before the
//! call returns), so a process killed at any point loses nothing it acknowledged and never leaves
//! half a transaction behind. Revisions come from a counter stored in the same file; watches are
//! served in-process from a broadcast channel fed after each commit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

use crate::blocking::on_blocking_thread;
use crate::keyspace::KeySpace;
use crate::kv::{
    Condition, KeyValue, Op, Revision, Store, StoreError, StoreOptions, StoreResult, Txn, TxnOutcome, WatchEvent,
    WatchStream,
};
use crate::watch::{self, WatchSource};

/// Full key → (revision, value).
const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

const WATCH_BACKLOG: usize = 4096;

pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    keys: KeySpace,
    events: broadcast::Sender<Arc<Vec<WatchEvent>>>,
    /// Held from the start of a write until its events are sent, so watchers see commit order.
    write_order: Mutex<()>,
}

impl EmbeddedStore {
    pub async fn open(state_dir: &Path, options: &StoreOptions) -> StoreResult<Self> {
        let path = state_dir.join("store.redb");
        let keys = KeySpace::new(&options.prefix);
        let inner = tokio::task::spawn_blocking(move || Inner::open(path, keys))
            .await
            .map_err(|e| StoreError::Embedded { path: state_dir.display().to_string(), detail: e.to_string() })??;
        Ok(Self { inner: Arc::new(inner) })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        on_blocking_thread(&self.inner, f, |detail| self.inner.error(detail)).await
    }
}

impl Inner {
    fn open(path: PathBuf, keys: KeySpace) -> StoreResult<Self> {
        let fail = |detail: String| StoreError::Embedded { path: path.display().to_string(), detail };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(format!("creating {}: {e}", dir.display())))?;
        }
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => fail(
                "the file is open in another process; is another instance running with the same --state-dir?".into(),
            ),
            other => fail(format!("opening: {other}")),
        })?;
        let (events, _) = broadcast::channel(WATCH_BACKLOG);
        let inner = Inner { db, path, keys, events, write_order: Mutex::new(()) };
        // Creating the tables up front lets reads assume they exist.
        inner.write(&Txn::new())?;
        Ok(inner)
    }

    fn error(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Embedded { path: self.path.display().to_string(), detail: detail.into() }
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> StoreError {
        self.error(e.into().to_string())
    }

    fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let rtx = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = rtx.open_table(KV).map_err(|e| self.db_error(e))?;
        let found = table.get(self.keys.full(key).as_str()).map_err(|e| self.db_error(e))?;
        Ok(found.map(|guard| {
            let (revision, value) = guard.value();
            KeyValue { key: key.to_string(), value: value.to_vec(), revision }
        }))
    }

    fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        let rtx = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = rtx.open_table(KV).map_err(|e| self.db_error(e))?;
        let start = self.keys.full(prefix);
        let mut out = Vec::new();
        for entry in table.range(start.as_str()..).map_err(|e| self.db_error(e))? {
            let (k, v) = entry.map_err(|e| self.db_error(e))?;
            let full = k.value();
            if !full.starts_with(start.as_str()) {
                break;
            }
            let (revision, value) = v.value();
            if let Some(rel) = self.keys.relative(full) {
                out.push(KeyValue { key: rel.to_string(), value: value.to_vec(), revision });
            }
        }
        Ok(out)
    }

    /// Applies `txn` atomically; returns the outcome and, if committed, what changed.
    fn write(&self, txn: &Txn) -> StoreResult<(TxnOutcome, Vec<WatchEvent>)> {
        let _order = self.write_order.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let wtx = self.db.begin_write().map_err(|e| self.db_error(e))?;
        let mut events = Vec::new();
        let revision = {
            let mut kv = wtx.open_table(KV).map_err(|e| self.db_error(e))?;
            if !self.conditions_hold(&kv, &txn.conditions)? {
                drop(kv);
                wtx.abort().map_err(|e| self.db_error(e))?;
                return Ok((TxnOutcome::Conflict, Vec::new()));
            }
            let mut meta = wtx.open_table(META).map_err(|e| self.db_error(e))?;
            let current = meta.get(REVISION).map_err(|e| self.db_error(e))?.map(|g| g.value()).unwrap_or(0);
            let revision = current + 1;
            meta.insert(REVISION, revision).map_err(|e| self.db_error(e))?;
            for op in &txn.ops {
                self.apply(&mut kv, op, revision, &mut events)?;
            }
            revision
        };
        wtx.commit().map_err(|e| self.db_error(e))?;
        if !events.is_empty() {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(Arc::new(events.clone()));
        }
        Ok((TxnOutcome::Committed(revision), events))
    }

    fn conditions_hold(&self, kv: &redb::Table<&str, (u64, &[u8])>, conditions: &[Condition]) -> StoreResult<bool> {
        for condition in conditions {
            let (key, wanted) = match condition {
                Condition::Absent(k) => (k, None),
                Condition::Exists(k) => (k, Some(None)),
                Condition::Revision(k, rev) => (k, Some(Some(*rev))),
            };
            let current = kv.get(self.keys.full(key).as_str()).map_err(|e| self.db_error(e))?.map(|g| g.value().0);
            let holds = match (wanted, current) {
                (None, cur) => cur.is_none(),
                (Some(None), cur) => cur.is_some(),
                (Some(Some(rev)), cur) => cur == Some(rev),
            };
            if !holds {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn apply(
        &self,
        kv: &mut redb::Table<&str, (u64, &[u8])>,
        op: &Op,
        revision: Revision,
        events: &mut Vec<WatchEvent>,
    ) -> StoreResult<()> {
        match op {
            Op::Put(key, value) => {
                kv.insert(self.keys.full(key).as_str(), (revision, value.as_slice())).map_err(|e| self.db_error(e))?;
                events.push(WatchEvent::Put(KeyValue { key: key.clone(), value: value.clone(), revision }));
            }
            Op::Delete(key) => {
                if kv.remove(self.keys.full(key).as_str()).map_err(|e| self.db_error(e))?.is_some() {
                    events.push(WatchEvent::Delete { key: key.clone(), revision });
                }
            }
            Op::DeletePrefix(prefix) => {
                let start = self.keys.full(prefix);
                let mut doomed = Vec::new();
                for entry in kv.range(start.as_str()..).map_err(|e| self.db_error(e))? {
                    let (k, _) = entry.map_err(|e| self.db_error(e))?;
                    if !k.value().starts_with(start.as_str()) {
                        break;
                    }
                    doomed.push(k.value().to_string());
                }
                for full in doomed {
                    kv.remove(full.as_str()).map_err(|e| self.db_error(e))?;
                    if let Some(rel) = self.keys.relative(&full) {
                        events.push(WatchEvent::Delete { key: rel.to_string(), revision });
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded:{}", self.inner.path.display())
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_string();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        let prefix = prefix.to_string();
        self.blocking(move |inner| inner.list(&prefix)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        let txn = Txn::new().put(key, value);
        match self.blocking(move |inner| inner.write(&txn)).await?.0 {
            TxnOutcome::Committed(rev) => Ok(rev),
            TxnOutcome::Conflict => Err(self.inner.error("unconditional put reported a conflict")),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let txn = Txn::new().delete(key);
        let (_, events) = self.blocking(move |inner| inner.write(&txn)).await?;
        Ok(!events.is_empty())
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        Ok(self.blocking(move |inner| inner.write(&txn)).await?.0)
    }

    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        Ok(watch::stream(Commits { rx: self.inner.events.subscribe(), prefix: prefix.to_string() }))
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        // One host: nobody else could notice this host is gone.
        self.put(key, value).await.map(|_| ())
    }
}

/// The commits after the watch started, as they are sent to the broadcast channel.
struct Commits {
    rx: broadcast::Receiver<Arc<Vec<WatchEvent>>>,
    prefix: String,
}

#[async_trait]
impl WatchSource for Commits {
    async fn next_batch(&mut self) -> StoreResult<Option<Vec<WatchEvent>>> {
        match self.rx.recv().await {
            Ok(batch) => {
                Ok(Some(batch.iter().filter(|e| e.key().starts_with(self.prefix.as_str())).cloned().collect()))
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(StoreError::WatchEnded {
                prefix: self.prefix.clone(),
                detail: format!("the watcher fell {missed} commits behind"),
            }),
            Err(broadcast::error::RecvError::Closed) => Ok(None),
        }
    }
}
