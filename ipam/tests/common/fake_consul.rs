//! A fake Consul agent on loopback speaking the subset of the documented HTTP API the store uses:
//! KV reads (recurse, blocking queries), `?acquire=`/`?release=` writes, `/v1/txn` (at most 64
//! operations), sessions with behavior "delete" and lock-delay, and ACL tokens. It checks the
//! client against our reading of the docs, not against Consul; the hooks below reproduce what a
//! real cluster does now and then (an index that goes backwards, an index of 0, a failing leader).

mod txn;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Consul refuses larger transactions with HTTP 413.
pub const MAX_TXN_OPS: usize = 64;

#[derive(Clone, Debug)]
struct Entry {
    value: Vec<u8>,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    session: Option<String>,
}

struct Session {
    ttl: Duration,
    expires: Instant,
    lock_delay: Duration,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<String, Entry>,
    index: u64,
    sessions: HashMap<String, Session>,
    next_session: u64,
    renewals: u64,
    /// Keys whose lock was lost with a session: no acquire succeeds before this instant.
    lock_delays: HashMap<String, Instant>,
    /// The ACL token every request must carry, when set.
    token: Option<String>,
    /// Bumped when blocking queries are abandoned (as on a snapshot restore): they answer at once.
    abandoned: u64,
    /// Answers KV reads with `X-Consul-Index: 0`, a Consul bug the docs tell clients to survive.
    zero_index: bool,
    kv_reads: u64,
    refused_txns: u64,
    /// Requests refused with 403.
    denied: u64,
    /// This many `?acquire=` writes fail with a 500, as while no leader is elected.
    failing_acquires: u32,
}

pub struct FakeConsul {
    addr: SocketAddr,
    /// Serves HTTPS when set, as an agent with `tls.https` configured.
    tls: Option<TlsAcceptor>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    server: Mutex<JoinHandle<()>>,
}

impl FakeConsul {
    pub async fn start() -> Self {
        Self::start_with_token(None).await
    }

    /// An agent with ACLs on: every request must send `token` as `X-Consul-Token`.
    pub async fn start_with_token(token: Option<&str>) -> Self {
        Self::start_with(token, None).await
    }

    /// An agent serving HTTPS only: a plain HTTP request is answered the way Go's TLS server
    /// answers it (HTTP 400, "Client sent an HTTP request to an HTTPS server.").
    pub async fn start_tls(tls: TlsAcceptor) -> Self {
        Self::start_with(None, Some(tls)).await
    }

    async fn start_with(token: Option<&str>, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake consul");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { index: 1, token: token.map(str::to_string), ..State::default() }));
        let changed = Arc::new(Notify::new());
        let server = Mutex::new(serve(listener, tls.clone(), state.clone(), changed.clone()));
        FakeConsul { addr, tls, state, changed, server }
    }

    pub fn url(&self) -> String {
        format!("consul://{}", self.addr)
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn renewals(&self) -> u64 {
        self.state.lock().unwrap().renewals
    }

    pub fn session_count(&self) -> usize {
        self.state.lock().unwrap().sessions.len()
    }

    pub fn kv_reads(&self) -> u64 {
        self.state.lock().unwrap().kv_reads
    }

    pub fn refused_txns(&self) -> u64 {
        self.state.lock().unwrap().refused_txns
    }

    pub fn denied(&self) -> u64 {
        self.state.lock().unwrap().denied
    }

    /// The session holding `key` (a full key without the leading slash), if any.
    pub fn holder(&self, key: &str) -> Option<String> {
        self.state.lock().unwrap().kv.get(key).and_then(|e| e.session.clone())
    }

    /// Invalidates every session now, deleting the keys they hold (as Consul does on expiry).
    pub fn expire_sessions(&self) {
        let mut st = self.state.lock().unwrap();
        let ids: Vec<String> = st.sessions.keys().cloned().collect();
        for id in ids {
            invalidate(&mut st, &id);
        }
        self.changed.notify_waiters();
    }

    /// Invalidates the session holding `key`, if any.
    pub fn expire_holder(&self, key: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(id) = st.kv.get(key).and_then(|e| e.session.clone()) {
            invalidate(&mut st, &id);
        }
        self.changed.notify_waiters();
    }

    /// The cluster comes back from a snapshot taken at `index`: the Raft index goes backwards,
    /// entries keep their data, and blocking queries are answered at once with the lower index.
    pub fn restore_at_index(&self, index: u64) {
        let mut st = self.state.lock().unwrap();
        st.index = index;
        for e in st.kv.values_mut() {
            e.create_index = e.create_index.min(index);
            e.modify_index = e.modify_index.min(index);
        }
        st.abandoned += 1;
        self.changed.notify_waiters();
    }

    pub fn answer_index_zero(&self, on: bool) {
        self.state.lock().unwrap().zero_index = on;
        self.changed.notify_waiters();
    }

    pub fn fail_acquires(&self, count: u32) {
        self.state.lock().unwrap().failing_acquires = count;
    }

    /// Stops answering: new connections are refused.
    pub fn stop(&self) {
        self.server.lock().unwrap().abort();
    }

    /// Serves again on the same address with the same data, as an agent back from a restart.
    pub async fn restart(&self) {
        self.stop();
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        *self.server.lock().unwrap() = serve(listener, self.tls.clone(), self.state.clone(), self.changed.clone());
    }
}

/// One HTTP/1.1 request to `endpoint`, for tests that speak to the agent directly: (status, body).
pub async fn request(endpoint: &str, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(endpoint).await.expect("connect to the fake consul");
    let token = token.map(|t| format!("X-Consul-Token: {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\n{token}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Owned here, so stopping the server also drops every open connection.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (st, ch, tls) = (state.clone(), changed.clone(), tls.clone());
            connections.spawn(async move {
                let svc = service_fn(move |req| handle(req, st.clone(), ch.clone()));
                match tls {
                    None => {
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(tls) => {
                        let Some(stream) = accept_tls(stream, &tls).await else { return };
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    })
}

/// The TLS handshake, or Go's answer to a plain request on a TLS port (then `None`).
async fn accept_tls(
    mut stream: tokio::net::TcpStream,
    tls: &TlsAcceptor,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    let peeked = stream.peek(&mut first).await.ok()?;
    if peeked == 1 && first[0] != 0x16 {
        let answer = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
        let _ = stream.write_all(answer.as_bytes()).await;
        return None;
    }
    tls.accept(stream).await.ok()
}

fn invalidate(st: &mut State, id: &str) {
    let Some(session) = st.sessions.remove(id) else { return };
    let held: Vec<String> =
        st.kv.iter().filter(|(_, e)| e.session.as_deref() == Some(id)).map(|(k, _)| k.clone()).collect();
    if !held.is_empty() {
        st.index += 1;
    }
    for k in held {
        st.kv.remove(&k);
        if !session.lock_delay.is_zero() {
            st.lock_delays.insert(k, Instant::now() + session.lock_delay);
        }
    }
}

fn reap(st: &mut State) {
    let now = Instant::now();
    let dead: Vec<String> = st.sessions.iter().filter(|(_, s)| s.expires <= now).map(|(k, _)| k.clone()).collect();
    for id in dead {
        invalidate(st, &id);
    }
}

/// "10s", "0s", "1m": the durations session bodies carry.
fn parse_duration(text: &str) -> Option<Duration> {
    if let Some(m) = text.strip_suffix('m') {
        return m.parse().ok().map(|m: u64| Duration::from_secs(m * 60));
    }
    text.strip_suffix('s')?.parse().ok().map(Duration::from_secs)
}

fn reply(status: u16, index: u64, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("X-Consul-Index", index.to_string())
        .header("Content-Type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn decode_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let n = q.iter().take(4 - pad).fold(0u32, |n, &c| n << 6 | val(c) as u32) << (6 * pad);
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..3 - pad]);
    }
    out
}

fn entry_json(key: &str, e: &Entry) -> Value {
    let mut v = json!({
        "Key": key,
        "Value": if e.value.is_empty() { Value::Null } else { Value::String(b64(&e.value)) },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
        "LockIndex": e.lock_index,
        "Flags": 0,
    });
    if let Some(s) = &e.session {
        v["Session"] = Value::String(s.clone());
    }
    v
}

/// Consul's ACL check: no token is the anonymous one, which may do nothing here; an unknown
/// token is "ACL not found".
fn denied(st: &mut State, sent: Option<&str>) -> Option<Response<Full<Bytes>>> {
    let wanted = st.token.as_deref()?;
    let text = match sent {
        Some(t) if t == wanted => return None,
        Some(_) => "ACL not found",
        None => "Permission denied",
    };
    st.denied += 1;
    Some(reply(403, 0, text))
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(&req);
    let token = req.headers().get("X-Consul-Token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    {
        let mut st = state.lock().unwrap();
        if let Some(refusal) = denied(&mut st, token.as_deref()) {
            return Ok(refusal);
        }
        reap(&mut st);
    }

    if let Some(key) = path.strip_prefix("/v1/kv/") {
        let key = decode_path(key);
        if method == Method::GET {
            return Ok(kv_get(&key, &q, &state, &changed).await);
        }
        if method == Method::PUT {
            let resp = kv_put(key, &q, body.to_vec(), &mut state.lock().unwrap());
            changed.notify_waiters();
            return Ok(resp);
        }
    }
    if path == "/v1/txn" && method == Method::PUT {
        let resp = txn::apply(&body, &mut state.lock().unwrap());
        changed.notify_waiters();
        return Ok(resp);
    }
    if path == "/v1/session/create" && method == Method::PUT {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(v["Behavior"], "delete", "netloom sessions must delete their keys");
        let ttl = parse_duration(v["TTL"].as_str().unwrap_or("10s")).expect("a TTL like 10s");
        assert!(ttl >= Duration::from_secs(10), "Consul refuses TTLs under 10s");
        // Consul's default lock-delay is 15 s.
        let lock_delay = parse_duration(v["LockDelay"].as_str().unwrap_or("15s")).expect("a lock delay like 0s");
        let mut st = state.lock().unwrap();
        st.next_session += 1;
        let id = format!("00000000-0000-0000-0000-{:012x}", st.next_session);
        st.sessions.insert(id.clone(), Session { ttl, expires: Instant::now() + ttl, lock_delay });
        return Ok(reply(200, st.index, json!({"ID": id}).to_string()));
    }
    if let Some(id) = path.strip_prefix("/v1/session/renew/") {
        let mut st = state.lock().unwrap();
        st.renewals += 1;
        let index = st.index;
        return Ok(match st.sessions.get_mut(id) {
            Some(s) => {
                s.expires = Instant::now() + s.ttl;
                reply(200, index, json!([{"ID": id}]).to_string())
            }
            None => reply(404, index, format!("Session id '{id}' not found")),
        });
    }
    Ok(reply(404, 0, "not implemented by the fake"))
}

/// `PUT /v1/kv/<key>[?acquire=<session>|?release=<session>]`, answering `true` or `false`.
fn kv_put(key: String, q: &HashMap<String, String>, value: Vec<u8>, st: &mut State) -> Response<Full<Bytes>> {
    let old = st.kv.get(&key).cloned();
    let (session, lock_index) = if let Some(s) = q.get("acquire") {
        if st.failing_acquires > 0 {
            st.failing_acquires -= 1;
            return reply(500, st.index, "No cluster leader");
        }
        if !st.sessions.contains_key(s) {
            return reply(500, st.index, format!("invalid session {s:?}"));
        }
        let delayed = st.lock_delays.get(&key).is_some_and(|until| *until > Instant::now());
        let held = old.as_ref().and_then(|e| e.session.clone());
        match held {
            Some(h) if h == *s => (Some(h), old.as_ref().map_or(0, |e| e.lock_index)),
            Some(_) => return reply(200, st.index, "false"),
            None if delayed => return reply(200, st.index, "false"),
            None => (Some(s.clone()), old.as_ref().map_or(0, |e| e.lock_index) + 1),
        }
    } else if let Some(s) = q.get("release") {
        match old.as_ref().and_then(|e| e.session.as_ref()) {
            Some(h) if h == s => (None, old.as_ref().map_or(0, |e| e.lock_index)),
            _ => return reply(200, st.index, "false"),
        }
    } else {
        // A plain write keeps the key's lock.
        (old.as_ref().and_then(|e| e.session.clone()), old.as_ref().map_or(0, |e| e.lock_index))
    };
    st.index += 1;
    let index = st.index;
    let create_index = old.map_or(index, |e| e.create_index);
    st.kv.insert(key, Entry { value, create_index, modify_index: index, lock_index, session });
    reply(200, index, "true")
}

async fn kv_get(
    key: &str,
    q: &HashMap<String, String>,
    state: &Mutex<State>,
    changed: &Notify,
) -> Response<Full<Bytes>> {
    if let Some(index) = q.get("index").and_then(|i| i.parse::<u64>().ok()) {
        let wait = q.get("wait").and_then(|w| parse_duration(w)).unwrap_or(Duration::from_secs(300));
        let deadline = tokio::time::Instant::now() + wait;
        let abandoned = state.lock().unwrap().abandoned;
        loop {
            let notified = changed.notified();
            {
                let st = state.lock().unwrap();
                if st.index > index || st.abandoned != abandoned || st.zero_index {
                    break;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
    let mut st = state.lock().unwrap();
    st.kv_reads += 1;
    let index = if st.zero_index { 0 } else { st.index };
    let recurse = q.contains_key("recurse");
    let found: Vec<Value> = if recurse {
        st.kv.range(key.to_string()..).take_while(|(k, _)| k.starts_with(key)).map(|(k, e)| entry_json(k, e)).collect()
    } else {
        st.kv.get(key).map(|e| vec![entry_json(key, e)]).unwrap_or_default()
    };
    if found.is_empty() {
        reply(404, index, "")
    } else {
        reply(200, index, Value::Array(found).to_string())
    }
}
