//! `PUT /v1/txn` of the fake agent: KV verbs applied in order to a copy of the store, committed
//! only when every check held, and Consul's documented limit of 64 operations per transaction.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};

use super::{entry_json, reply, unb64, Entry, State, MAX_TXN_OPS};

pub fn apply(body: &[u8], st: &mut State) -> Response<Full<Bytes>> {
    let ops: Vec<Value> = match serde_json::from_slice(body) {
        Ok(ops) => ops,
        Err(e) => return reply(400, 0, format!("Failed to parse body: {e}")),
    };
    if ops.len() > MAX_TXN_OPS {
        st.refused_txns += 1;
        let text = format!("Transaction contains too many operations ({} > {MAX_TXN_OPS})", ops.len());
        return reply(413, st.index, text);
    }
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
                // As in Consul, a plain set keeps the key's lock: its session and lock index.
                let e = match kv.get(&key) {
                    Some(old) => Entry { value, modify_index: index, ..old.clone() },
                    None => Entry { value, create_index: index, modify_index: index, lock_index: 0, session: None },
                };
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
