//! A fake Consul agent on loopback speaking the subset of the documented HTTP API the store uses:
//! KV reads (recurse, blocking queries), `?acquire=` writes, `/v1/txn`, and sessions with
//! behavior "delete". It checks the client against our reading of the docs, not against Consul.

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

#[derive(Clone, Debug)]
struct Entry {
    value: Vec<u8>,
    create_index: u64,
    modify_index: u64,
    session: Option<String>,
}

struct Session {
    ttl: Duration,
    expires: Instant,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<String, Entry>,
    index: u64,
    sessions: HashMap<String, Session>,
    next_session: u64,
    renewals: u64,
}

pub struct FakeConsul {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    server: JoinHandle<()>,
}

impl FakeConsul {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake consul");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { index: 1, ..State::default() }));
        let changed = Arc::new(Notify::new());
        let (st, ch) = (state.clone(), changed.clone());
        let server = tokio::spawn(async move {
            // Owned here, so stopping the server also drops every open connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (st, ch) = (st.clone(), ch.clone());
                connections.spawn(async move {
                    let svc = service_fn(move |req| handle(req, st.clone(), ch.clone()));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        FakeConsul { addr, state, changed, server }
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

    /// Invalidates every session now, deleting the keys they hold (as Consul does on expiry).
    pub fn expire_sessions(&self) {
        let mut st = self.state.lock().unwrap();
        let ids: Vec<String> = st.sessions.keys().cloned().collect();
        for id in ids {
            invalidate(&mut st, &id);
        }
        self.changed.notify_waiters();
    }

    /// Stops answering: new connections are refused.
    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn invalidate(st: &mut State, id: &str) {
    st.sessions.remove(id);
    let held: Vec<String> =
        st.kv.iter().filter(|(_, e)| e.session.as_deref() == Some(id)).map(|(k, _)| k.clone()).collect();
    if !held.is_empty() {
        st.index += 1;
    }
    for k in held {
        st.kv.remove(&k);
    }
}

fn reap(st: &mut State) {
    let now = Instant::now();
    let dead: Vec<String> = st.sessions.iter().filter(|(_, s)| s.expires <= now).map(|(k, _)| k.clone()).collect();
    for id in dead {
        invalidate(st, &id);
    }
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
        "LockIndex": 0,
        "Flags": 0,
    });
    if let Some(s) = &e.session {
        v["Session"] = Value::String(s.clone());
    }
    v
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(&req);
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    reap(&mut state.lock().unwrap());

    if let Some(key) = path.strip_prefix("/v1/kv/") {
        let key = decode_path(key);
        if method == Method::GET {
            return Ok(kv_get(&key, &q, &state, &changed).await);
        }
        if method == Method::PUT {
            let mut st = state.lock().unwrap();
            let session = q.get("acquire").cloned();
            if let Some(s) = &session {
                if !st.sessions.contains_key(s) {
                    return Ok(reply(500, st.index, format!("invalid session {s:?}")));
                }
            }
            st.index += 1;
            let index = st.index;
            let create = st.kv.get(&key).map(|e| e.create_index).unwrap_or(index);
            st.kv.insert(key, Entry { value: body.to_vec(), create_index: create, modify_index: index, session });
            drop(st);
            changed.notify_waiters();
            return Ok(reply(200, index, "true"));
        }
    }
    if path == "/v1/txn" && method == Method::PUT {
        let resp = txn(&body, &state);
        changed.notify_waiters();
        return Ok(resp);
    }
    if path == "/v1/session/create" && method == Method::PUT {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(v["Behavior"], "delete", "netloom sessions must delete their keys");
        let ttl_text = v["TTL"].as_str().unwrap_or("10s");
        let ttl = Duration::from_secs(ttl_text.trim_end_matches('s').parse().unwrap());
        assert!(ttl >= Duration::from_secs(10), "Consul refuses TTLs under 10s");
        let mut st = state.lock().unwrap();
        st.next_session += 1;
        let id = format!("00000000-0000-0000-0000-{:012x}", st.next_session);
        st.sessions.insert(id.clone(), Session { ttl, expires: Instant::now() + ttl });
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

async fn kv_get(
    key: &str,
    q: &HashMap<String, String>,
    state: &Mutex<State>,
    changed: &Notify,
) -> Response<Full<Bytes>> {
    if let Some(index) = q.get("index").and_then(|i| i.parse::<u64>().ok()) {
        let wait = q.get("wait").and_then(|w| w.trim_end_matches('s').parse::<u64>().ok()).unwrap_or(300);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        loop {
            let notified = changed.notified();
            if state.lock().unwrap().index > index {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
    let st = state.lock().unwrap();
    let recurse = q.contains_key("recurse");
    let found: Vec<Value> = if recurse {
        st.kv.range(key.to_string()..).take_while(|(k, _)| k.starts_with(key)).map(|(k, e)| entry_json(k, e)).collect()
    } else {
        st.kv.get(key).map(|e| vec![entry_json(key, e)]).unwrap_or_default()
    };
    if found.is_empty() {
        reply(404, st.index, "")
    } else {
        reply(200, st.index, Value::Array(found).to_string())
    }
}

fn txn(body: &[u8], state: &Mutex<State>) -> Response<Full<Bytes>> {
    let ops: Vec<Value> = match serde_json::from_slice(body) {
        Ok(ops) => ops,
        Err(e) => return reply(400, 0, format!("bad txn body: {e}")),
    };
    let mut st = state.lock().unwrap();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    // Checks run against the state as the ops before them left it, so work on a copy.
    let mut kv = st.kv.clone();
    let index = st.index + 1;
    for (i, op) in ops.iter().enumerate() {
        let op = &op["KV"];
        let key = op["Key"].as_str().unwrap_or_default().to_string();
        match op["Verb"].as_str().unwrap_or_default() {
            "check-not-exists" => {
                if kv.contains_key(&key) {
                    errors.push(json!({"OpIndex": i, "What": format!("key {key:?} exists")}));
                }
            }
            "check-index" => {
                let want = op["Index"].as_u64().unwrap_or(0);
                match kv.get(&key) {
                    Some(e) if e.modify_index == want => {}
                    Some(e) => errors.push(
                        json!({"OpIndex": i, "What": format!("current modify index {} != {want}", e.modify_index)}),
                    ),
                    None => errors.push(json!({"OpIndex": i, "What": format!("key {key:?} doesn't exist")})),
                }
            }
            "get" => match kv.get(&key) {
                Some(e) => results.push(json!({"KV": entry_json(&key, e)})),
                None => errors.push(json!({"OpIndex": i, "What": format!("key {key:?} doesn't exist")})),
            },
            "set" => {
                let value = unb64(op["Value"].as_str().unwrap_or_default());
                let create = kv.get(&key).map(|e| e.create_index).unwrap_or(index);
                let e = Entry { value, create_index: create, modify_index: index, session: None };
                results.push(json!({"KV": entry_json(&key, &Entry { value: vec![], ..e.clone() })}));
                kv.insert(key, e);
            }
            "delete" => {
                kv.remove(&key);
            }
            "delete-tree" => kv.retain(|k, _| !k.starts_with(&key)),
            other => return reply(400, st.index, format!("verb {other:?} not supported by the fake")),
        }
    }
    if !errors.is_empty() {
        return reply(409, st.index, json!({"Results": null, "Errors": errors}).to_string());
    }
    st.kv = kv;
    st.index = index;
    reply(
        200,
        index,
        json!({"Results": if results.is_empty() { Value::Null } else { Value::Array(results) }, "Errors": null})
            .to_string(),
    )
}
