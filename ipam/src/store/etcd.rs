//! etcd v3 backend: every read-modify-write is one etcd Txn; watches are etcd watches; leased keys
//! hang off one etcd lease per process, kept alive by a background task.
//!
//! Every call is bounded by `request_timeout`: with every endpoint down a call fails within that
//! time with an error naming the endpoints. There is one client per endpoint; a call goes to the
//! endpoint that answered last and moves on to the next one when it can't connect (any endpoint
//! for reads), so one endpoint down is not an error and a write is never sent twice.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, TxnOp, WatchOptions,
};
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{
    write_past_leases, Condition, KeySpace, KeyValue, LeasedKeys, Op, Revision, Store, StoreError, StoreOptions,
    StoreResult, Txn, TxnOutcome, WatchEvent, WatchStream,
};

const BACKEND: &str = "etcd";

pub struct EtcdStore {
    ctx: Ctx,
    leases: Arc<Mutex<LeaseState>>,
    keeper: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// What a request needs; cheap to clone into background tasks.
#[derive(Clone)]
struct Ctx {
    /// One per endpoint, in the order given.
    clients: Arc<Vec<Client>>,
    names: Arc<Vec<String>>,
    /// The endpoint that answered last; tried first.
    preferred: Arc<AtomicUsize>,
    keys: KeySpace,
    endpoints: String,
    timeout: Duration,
    lease_ttl: Duration,
}

#[derive(Default)]
struct LeaseState {
    id: Option<i64>,
    /// Everything written with `put_leased`, rewritten on a new lease.
    keys: LeasedKeys,
}

/// Whether a failed call may be sent to another endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any "unavailable" answer.
    Idempotent,
    /// Writes: only when no connection could be made, so the request never left.
    ConnectOnly,
}

impl EtcdStore {
    pub async fn connect(endpoints: Vec<String>, options: &StoreOptions) -> StoreResult<Self> {
        let joined = endpoints.join(",");
        let mut clients = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let connect = ConnectOptions::new()
                .with_connect_timeout(options.connect_timeout)
                .with_timeout(options.request_timeout)
                .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
                .with_keep_alive_while_idle(true);
            // Connecting is lazy: an unreachable etcd shows up on the first request, not here.
            let client = Client::connect([format!("http://{endpoint}")], Some(connect))
                .await
                .map_err(|e| classify(&joined, e))?;
            clients.push(client);
        }
        Ok(Self {
            ctx: Ctx {
                clients: Arc::new(clients),
                names: Arc::new(endpoints),
                preferred: Arc::new(AtomicUsize::new(0)),
                keys: KeySpace::new(&options.prefix),
                endpoints: joined,
                timeout: options.request_timeout,
                lease_ttl: options.lease_ttl.max(Duration::from_secs(2)),
            },
            leases: Arc::new(Mutex::new(LeaseState::default())),
            keeper: std::sync::Mutex::new(None),
        })
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(task) = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl Ctx {
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        let keys = &self.keys;
        let compares: Vec<Compare> = txn
            .conditions
            .iter()
            .map(|c| match c {
                Condition::Absent(k) => Compare::version(keys.full(k), CompareOp::Equal, 0),
                Condition::Exists(k) => Compare::version(keys.full(k), CompareOp::Greater, 0),
                Condition::Revision(k, rev) => Compare::mod_revision(keys.full(k), CompareOp::Equal, *rev as i64),
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put(k, v) => TxnOp::put(keys.full(&k), v, None),
                Op::Delete(k) => TxnOp::delete(keys.full(&k), None),
                Op::DeletePrefix(p) => TxnOp::delete(keys.full(&p), Some(DeleteOptions::new().with_prefix())),
            })
            .collect();
        let request = etcd_client::Txn::new().when(compares).and_then(ops);
        let resp = self
            .call(Retry::ConnectOnly, |mut c| {
                let request = request.clone();
                async move { c.txn(request).await }
            })
            .await?;
        Ok(if resp.succeeded() {
            TxnOutcome::Committed(resp.header().map(|h| h.revision() as Revision).unwrap_or(0))
        } else {
            TxnOutcome::Conflict
        })
    }

    fn unavailable(&self, detail: String) -> StoreError {
        StoreError::Unavailable { backend: BACKEND, endpoints: self.endpoints.clone(), detail }
    }

    /// Runs `f` against the preferred endpoint, failing over as `retry` allows, all within one
    /// `timeout`. A read gets an equal share of the remaining time per endpoint, so one hung member
    /// doesn't use up the whole budget.
    async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> StoreResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let first = self.preferred.load(Ordering::Relaxed);
        let count = self.clients.len();
        let mut last = None;
        for i in 0..count {
            let idx = (first + i) % count;
            let now = tokio::time::Instant::now();
            let attempt_deadline = match retry {
                Retry::Idempotent => now + deadline.saturating_duration_since(now) / (count - i) as u32,
                Retry::ConnectOnly => deadline,
            };
            let err = match tokio::time::timeout_at(attempt_deadline, f(self.clients[idx].clone())).await {
                Ok(Ok(value)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(e)) => {
                    let may_retry = match retry {
                        Retry::Idempotent => is_unavailable(&e),
                        Retry::ConnectOnly => is_connect_failure(&e),
                    };
                    let err = classify(&self.endpoints, e);
                    if !may_retry {
                        return Err(err);
                    }
                    err
                }
                Err(_) if retry == Retry::Idempotent => {
                    self.unavailable(format!("{} did not answer in time", self.names[idx]))
                }
                Err(_) => {
                    return Err(self.unavailable(format!("no answer within {} ms", self.timeout.as_millis())));
                }
            };
            debug!(endpoint = %self.names[idx], "etcd endpoint failed, trying the next: {err}");
            last = Some(err);
        }
        Err(last.unwrap_or_else(|| self.unavailable("no endpoint".into())))
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        let full = std::str::from_utf8(kv.key()).ok()?;
        Some(KeyValue {
            key: self.keys.relative(full)?.to_string(),
            value: kv.value().to_vec(),
            revision: kv.mod_revision() as Revision,
        })
    }

    async fn grant(&self) -> StoreResult<i64> {
        let ttl = self.lease_ttl.as_secs() as i64;
        let resp = self.call(Retry::ConnectOnly, |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        info!(lease = resp.id(), ttl, "etcd lease granted");
        Ok(resp.id())
    }

    async fn put_with_lease(&self, key: &str, value: Vec<u8>, lease: i64) -> StoreResult<()> {
        let full = self.keys.full(key);
        self.call(Retry::ConnectOnly, |mut c| {
            let (full, value) = (full.clone(), value.clone());
            async move { c.put(full, value, Some(PutOptions::new().with_lease(lease))).await }
        })
        .await?;
        Ok(())
    }

    /// Refreshes the lease once; returns the remaining TTL (0: the lease is gone).
    async fn refresh(&self, lease: i64) -> StoreResult<i64> {
        self.call(Retry::Idempotent, |mut c| async move {
            let answer = async {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map(|r| r.ttl()).unwrap_or(0))
            };
            match answer.await {
                // etcd answers TTL 0 for an unknown lease; the client turns that into this error.
                Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => Ok(0),
                Err(etcd_client::Error::GRpcStatus(s)) if s.code() as i32 == 5 => Ok(0),
                other => other,
            }
        })
        .await
    }

    /// Takes a new lease and writes every leased key again.
    async fn renew_all(&self, state: &Mutex<LeaseState>) -> StoreResult<()> {
        let mut st = state.lock().await;
        let lease = self.grant().await?;
        st.id = Some(lease);
        for (key, value) in st.keys.snapshot() {
            self.put_with_lease(&key, value, lease).await?;
        }
        Ok(())
    }

    async fn keep_alive_loop(self, state: Arc<Mutex<LeaseState>>) {
        let period = self.lease_ttl / 3;
        loop {
            tokio::time::sleep(period).await;
            let lease = state.lock().await.id;
            let ttl = match lease {
                Some(id) => self.refresh(id).await,
                None => Ok(0),
            };
            match ttl {
                Ok(ttl) if ttl > 0 => debug!(lease = ?lease, ttl, "etcd lease refreshed"),
                Ok(_) => {
                    match lease {
                        Some(id) => warn!(lease = id, "etcd lease lost; taking a new one and rewriting leased keys"),
                        None => info!("taking an etcd lease for the leased keys"),
                    }
                    if let Err(e) = self.renew_all(&state).await {
                        warn!("rewriting leased keys: {e}");
                    }
                }
                Err(e) => warn!("refreshing etcd lease: {e}"),
            }
        }
    }
}

/// gRPC CANCELLED, UNKNOWN, DEADLINE_EXCEEDED and UNAVAILABLE, or no connection at all.
fn is_unavailable(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => matches!(status.code() as i32, 1 | 2 | 4 | 14),
        E::TransportError(_) | E::IoError(_) => true,
        _ => false,
    }
}

/// The request never reached etcd: the connection could not be made.
fn is_connect_failure(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => status.code() as i32 == 14 && status.message().contains("connect"),
        E::TransportError(_) => true,
        _ => false,
    }
}

fn classify(endpoints: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let protocol = |detail: String| StoreError::Protocol { backend: BACKEND, endpoints: endpoints.to_string(), detail };
    let unavailable =
        |detail: String| StoreError::Unavailable { backend: BACKEND, endpoints: endpoints.to_string(), detail };
    match e {
        E::GRpcStatus(ref status) if is_unavailable(&e) => unavailable(status.message().to_string()),
        E::GRpcStatus(status) => protocol(format!("{:?}: {}", status.code(), status.message())),
        other @ (E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_)) => {
            unavailable(other.to_string())
        }
        other => protocol(other.to_string()),
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd://{}", self.ctx.endpoints)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let full = self.ctx.keys.full(key);
        let resp = self
            .ctx
            .call(Retry::Idempotent, |mut c| {
                let full = full.clone();
                async move { c.get(full, None).await }
            })
            .await?;
        Ok(resp.kvs().first().and_then(|kv| self.ctx.kv(kv)))
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        let full = self.ctx.keys.full(prefix);
        let resp = self
            .ctx
            .call(Retry::Idempotent, |mut c| {
                let full = full.clone();
                async move { c.get(full, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok(resp.kvs().iter().filter_map(|kv| self.ctx.kv(kv)).collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        let full = self.ctx.keys.full(key);
        let write = async {
            let resp = self
                .ctx
                .call(Retry::ConnectOnly, |mut c| {
                    let (full, value) = (full.clone(), value.clone());
                    async move { c.put(full, value, None).await }
                })
                .await?;
            Ok(resp.header().map(|h| h.revision() as Revision).unwrap_or(0))
        };
        let ops = [Op::Put(key.to_string(), Vec::new())];
        write_past_leases(&self.leases, |st| &mut st.keys, &ops, |_| true, write).await
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        let full = self.ctx.keys.full(key);
        let write = async {
            let resp = self
                .ctx
                .call(Retry::ConnectOnly, |mut c| {
                    let full = full.clone();
                    async move { c.delete(full, None).await }
                })
                .await?;
            Ok(resp.deleted() > 0)
        };
        let ops = [Op::Delete(key.to_string())];
        write_past_leases(&self.leases, |st| &mut st.keys, &ops, |_| true, write).await
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        let ops = txn.ops.clone();
        write_past_leases(&self.leases, |st| &mut st.keys, &ops, |o| o.committed(), self.ctx.txn(txn)).await
    }

    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        let full = self.ctx.keys.full(prefix);
        // Waiting for etcd to confirm the watch makes every write after this call returns visible.
        let stream = self
            .ctx
            .call(Retry::Idempotent, |mut c| {
                let full = full.clone();
                async move {
                    let mut stream = c.watch(full, Some(WatchOptions::new().with_prefix())).await?;
                    match stream.message().await? {
                        Some(resp) if resp.created() => Ok(stream),
                        _ => Err(etcd_client::Error::WatchError("etcd did not create the watch".into())),
                    }
                }
            })
            .await?;
        let state = WatchState {
            stream,
            ctx: self.ctx.clone(),
            prefix: prefix.to_string(),
            pending: VecDeque::new(),
            done: false,
        };
        Ok(futures::stream::unfold(state, WatchState::next).boxed())
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        let mut st = self.leases.lock().await;
        st.keys.remember(key, value.clone());
        {
            let mut keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner());
            if keeper.is_none() {
                *keeper = Some(tokio::spawn(self.ctx.clone().keep_alive_loop(self.leases.clone())));
            }
        }
        // On failure the key stays remembered: the keep-alive task writes it once etcd answers.
        let lease = match st.id {
            Some(id) => id,
            None => {
                let id = self.ctx.grant().await?;
                st.id = Some(id);
                id
            }
        };
        self.ctx.put_with_lease(key, value, lease).await
    }
}

struct WatchState {
    stream: etcd_client::WatchStream,
    ctx: Ctx,
    prefix: String,
    pending: VecDeque<WatchEvent>,
    done: bool,
}

impl WatchState {
    fn ended(&mut self, detail: String) -> StoreError {
        self.done = true;
        StoreError::WatchEnded { prefix: self.prefix.clone(), detail: format!("etcd {}: {detail}", self.ctx.endpoints) }
    }

    async fn next(mut self) -> Option<(StoreResult<WatchEvent>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let err = match self.stream.message().await {
                Ok(Some(resp)) if resp.canceled() => self.ended(format!("watch canceled: {}", resp.cancel_reason())),
                Ok(Some(resp)) => {
                    for event in resp.events() {
                        let Some(kv) = event.kv().and_then(|kv| self.ctx.kv(kv)) else { continue };
                        self.pending.push_back(match event.event_type() {
                            EventType::Put => WatchEvent::Put(kv),
                            EventType::Delete => WatchEvent::Delete { key: kv.key, revision: kv.revision },
                        });
                    }
                    continue;
                }
                Ok(None) => self.ended("stream closed".into()),
                Err(e) => self.ended(e.to_string()),
            };
            return Some((Err(err), self));
        }
    }
}
