//! etcd v3 backend: every read-modify-write is one etcd Txn; watches are etcd watches; leased keys
//! hang off one etcd lease per process, kept alive by a background task.
//!
//! Every call is bounded by `request_timeout`: with every endpoint down a call fails within that
//! time with an error naming the endpoints. There is one client per endpoint; a call goes to the
//! endpoint that answered last and moves on to the next one when it can't connect (any endpoint
//! for reads), so one endpoint down is not an error and a write is never sent twice.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, TxnOp, WatchOptions,
};
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use crate::keyspace::KeySpace;
use crate::kv::{
    Condition, KeyValue, Op, Revision, Store, StoreError, StoreOptions, StoreResult, Txn, TxnOutcome, WatchEvent,
    WatchStream,
};
use crate::leases::{LeaseBackend, Leases};
use crate::tls_sniff;
use crate::watch::{self, WatchSource};

const BACKEND: &str = "etcd";

pub struct EtcdStore {
    ctx: Arc<Ctx>,
    leases: Leases<Ctx>,
}

/// What a request needs, shared with the lease keeper and watches.
struct Ctx {
    /// One per endpoint, in the order given, made on first use: with a user, making one
    /// authenticates, which needs etcd up.
    clients: Vec<OnceCell<Client>>,
    connect: ConnectOptions,
    tls: bool,
    names: Vec<String>,
    /// The endpoint that answered last; tried first.
    preferred: AtomicUsize,
    keys: KeySpace,
    endpoints: String,
    timeout: Duration,
    lease_ttl: Duration,
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
    /// Checks once that etcd takes our TLS settings and credentials: a refusal of either is an
    /// error here, so a misconfigured binary stops at start; an etcd that cannot be reached is
    /// only logged, as requests retry it.
    pub async fn connect(endpoints: Vec<String>, options: &StoreOptions) -> StoreResult<Self> {
        let joined = endpoints.join(",");
        let connect = connect_options(&joined, options)?;
        let ctx = Arc::new(Ctx {
            clients: endpoints.iter().map(|_| OnceCell::new()).collect(),
            connect,
            tls: options.credentials.tls.is_some(),
            names: endpoints,
            preferred: AtomicUsize::new(0),
            keys: KeySpace::new(&options.prefix),
            endpoints: joined,
            timeout: options.request_timeout,
            lease_ttl: options.lease_ttl.max(Duration::from_secs(2)),
        });
        let has_client_certificate = options.credentials.tls.as_ref().is_some_and(|t| t.client.is_some());
        ctx.probe(options.connect_timeout, has_client_certificate).await?;
        Ok(Self { leases: Leases::new(ctx.clone()), ctx })
    }
}

fn connect_options(endpoints: &str, options: &StoreOptions) -> StoreResult<ConnectOptions> {
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(options.connect_timeout)
        .with_timeout(options.request_timeout)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    let credentials = &options.credentials;
    if let Some(tls) = &credentials.tls {
        let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some(client) = &tls.client {
            config = config.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
        }
        connect = connect.with_tls(config);
    }
    if let Some(user) = &credentials.user {
        // etcd's tokens expire (5 minutes by default): take a new one when refused.
        connect = connect.with_user(&user.user, &user.password).with_auto_token_refresh(true);
    }
    if credentials.token.is_some() {
        return Err(StoreError::Auth {
            backend: BACKEND,
            endpoints: endpoints.to_string(),
            detail: "an ACL token is for Consul; etcd takes --store-user and --store-password-file".into(),
        });
    }
    Ok(connect)
}

impl Ctx {
    /// One read at start, repeated while etcd accepts connections but drops them: a TLS server
    /// refusing our certificate sometimes closes the connection before its alert is read.
    async fn probe(&self, connect_timeout: Duration, has_client_certificate: bool) -> StoreResult<()> {
        let mut last = None;
        for _ in 0..5 {
            match self.read("", None).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_misconfiguration() => return Err(e),
                Err(e) => last = Some(e),
            }
            if !tls_sniff::any_accepts(&self.names, connect_timeout).await {
                break;
            }
        }
        let Some(e) = last else { return Ok(()) };
        let accepts = tls_sniff::any_accepts(&self.names, connect_timeout).await;
        let refusal = |detail: String| StoreError::Tls { backend: BACKEND, endpoints: self.endpoints.clone(), detail };
        if !self.tls && accepts && tls_sniff::any_speaks_tls(&self.names, connect_timeout).await {
            return Err(refusal(format!("etcd answers in TLS but no --store-ca was given ({e})")));
        }
        if self.tls && accepts && !has_client_certificate {
            return Err(refusal(format!(
                "etcd closes every TLS connection: it likely wants a client certificate (--store-cert and \
                 --store-key) ({e})"
            )));
        }
        warn!("etcd is not reachable yet; requests that need it fail until it is: {e}");
        Ok(())
    }

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

    async fn client(&self, idx: usize) -> Result<Client, etcd_client::Error> {
        let scheme = if self.tls { "https" } else { "http" };
        let url = format!("{scheme}://{}", self.names[idx]);
        let client = self.clients[idx].get_or_try_init(|| Client::connect([url], Some(self.connect.clone()))).await?;
        Ok(client.clone())
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
            let attempt = async { f(self.client(idx).await?).await };
            let err = match tokio::time::timeout_at(attempt_deadline, attempt).await {
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

    /// One key, or with a prefix option every key under it.
    async fn read(&self, key: &str, options: Option<GetOptions>) -> StoreResult<Vec<KeyValue>> {
        let full = self.keys.full(key);
        let resp = self
            .call(Retry::Idempotent, |mut c| {
                let (full, options) = (full.clone(), options.clone());
                async move { c.get(full, options).await }
            })
            .await?;
        Ok(resp.kvs().iter().filter_map(|kv| self.kv(kv)).collect())
    }

    fn kv(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        let full = std::str::from_utf8(kv.key()).ok()?;
        Some(KeyValue {
            key: self.keys.relative(full)?.to_string(),
            value: kv.value().to_vec(),
            revision: kv.mod_revision() as Revision,
        })
    }
}

#[async_trait]
impl LeaseBackend for Ctx {
    type Id = i64;
    const KIND: &'static str = "etcd lease";

    async fn take(&self) -> StoreResult<i64> {
        let ttl = self.lease_ttl.as_secs() as i64;
        let resp = self.call(Retry::ConnectOnly, |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        info!(lease = resp.id(), ttl, "etcd lease granted");
        Ok(resp.id())
    }

    async fn attach(&self, lease: &i64, key: &str, value: Vec<u8>) -> StoreResult<()> {
        let (full, lease) = (self.keys.full(key), *lease);
        self.call(Retry::ConnectOnly, |mut c| {
            let (full, value) = (full.clone(), value.clone());
            async move { c.put(full, value, Some(PutOptions::new().with_lease(lease))).await }
        })
        .await?;
        Ok(())
    }

    async fn refresh(&self, lease: &i64) -> StoreResult<bool> {
        let lease = *lease;
        let ttl = self
            .call(Retry::Idempotent, |mut c| async move {
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
            .await?;
        Ok(ttl > 0)
    }

    fn refresh_period(&self) -> Duration {
        self.lease_ttl / 3
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
    if let Some(refusal) = misconfiguration(endpoints, &e) {
        return refusal;
    }
    match e {
        E::GRpcStatus(ref status) if is_unavailable(&e) => {
            unavailable(format!("{} [{}]", status.message(), error_chain(&e)))
        }
        E::GRpcStatus(status) => protocol(format!("{:?}: {}", status.code(), status.message())),
        other @ (E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_)) => {
            unavailable(other.to_string())
        }
        other => protocol(other.to_string()),
    }
}

/// etcd reached but refusing us: TLS (handshake, certificates, plain text to a TLS port) or
/// authentication (no user, wrong password, no permission).
fn misconfiguration(endpoints: &str, e: &etcd_client::Error) -> Option<StoreError> {
    let text = error_chain(e);
    let lower = text.to_lowercase();
    let endpoints = endpoints.to_string();
    if let etcd_client::Error::GRpcStatus(status) = e {
        let auth = |detail: String| Some(StoreError::Auth { backend: BACKEND, endpoints: endpoints.clone(), detail });
        let message = status.message();
        match status.code() as i32 {
            16 => return auth(format!("{message} (check --store-user and --store-password-file)")),
            7 => return auth(format!("{message}: the --store-user has no access to netloom's keys")),
            3 if message.contains("authentication failed") => {
                return auth(format!("{message} (check --store-user and --store-password-file)"))
            }
            3 if message.contains("user name is empty") || message.contains("invalid auth token") => {
                return auth(format!(
                    "{message}: etcd has authentication enabled; give --store-user and --store-password-file"
                ))
            }
            _ => {}
        }
    }
    let tls = |detail: String| Some(StoreError::Tls { backend: BACKEND, endpoints: endpoints.clone(), detail });
    const TLS_WORDS: [&str; 7] =
        ["certificate", "handshake", "tls", "alert", "unknownissuer", "invalid peer", "corrupt message"];
    if TLS_WORDS.iter().any(|w| lower.contains(w)) {
        return tls(text);
    }
    None
}

/// The error and every cause under it: tonic keeps the TLS reason several levels down, and
/// etcd-client's error does not link its causes.
fn error_chain(e: &etcd_client::Error) -> String {
    use etcd_client::Error as E;
    let mut text = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        E::TransportError(inner) => std::error::Error::source(inner),
        E::GRpcStatus(status) => std::error::Error::source(status),
        E::IoError(inner) => std::error::Error::source(inner),
        _ => None,
    };
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd://{}", self.ctx.endpoints)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        Ok(self.ctx.read(key, None).await?.into_iter().next())
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.ctx.read(prefix, Some(GetOptions::new().with_prefix())).await
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
        self.leases.write(&[Op::Put(key.to_string(), Vec::new())], |_| true, write).await
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
        self.leases.write(&[Op::Delete(key.to_string())], |_| true, write).await
    }

    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        let ops = txn.ops.clone();
        self.leases.write(&ops, |o: &TxnOutcome| o.committed(), self.ctx.txn(txn)).await
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
        Ok(watch::stream(Watch { stream, ctx: self.ctx.clone(), prefix: prefix.to_string() }))
    }

    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.leases.put(key, value).await
    }
}

struct Watch {
    stream: etcd_client::WatchStream,
    ctx: Arc<Ctx>,
    prefix: String,
}

impl Watch {
    fn ended(&self, detail: String) -> StoreError {
        StoreError::WatchEnded { prefix: self.prefix.clone(), detail: format!("etcd {}: {detail}", self.ctx.endpoints) }
    }
}

#[async_trait]
impl WatchSource for Watch {
    async fn next_batch(&mut self) -> StoreResult<Option<Vec<WatchEvent>>> {
        match self.stream.message().await {
            Ok(Some(resp)) if resp.canceled() => Err(self.ended(format!("watch canceled: {}", resp.cancel_reason()))),
            Ok(Some(resp)) => {
                let events = resp.events().iter().filter_map(|event| {
                    let kv = self.ctx.kv(event.kv()?)?;
                    Some(match event.event_type() {
                        EventType::Put => WatchEvent::Put(kv),
                        EventType::Delete => WatchEvent::Delete { key: kv.key, revision: kv.revision },
                    })
                });
                Ok(Some(events.collect()))
            }
            Ok(None) => Err(self.ended("stream closed".into())),
            Err(e) => Err(self.ended(e.to_string())),
        }
    }
}
