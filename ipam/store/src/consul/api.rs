//! Consul HTTP API requests and responses, as pure functions: key paths, `/v1/txn` bodies and the
//! JSON Consul answers with. Follows Consul's documented KV, transaction and session endpoints.

use serde::Deserialize;
use serde_json::{json, Value};

use super::base64;
use crate::escape::percent_encode;
use crate::keyspace::KeySpace;
use crate::kv::{Condition, KeyValue, Op, Revision, Txn, TxnOutcome};

/// `/v1/kv/<key>` for an absolute netloom key. Consul keys carry no leading slash.
pub fn kv_path(full_key: &str) -> String {
    format!("/v1/kv/{}", encode_path(full_key.trim_start_matches('/')))
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn encode_path(s: &str) -> String {
    percent_encode(s, b"-._~/")
}

/// One entry of a KV read (`GET /v1/kv/<key>[?recurse]`).
#[derive(Debug, Deserialize)]
struct ConsulKv {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: Option<String>,
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
}

/// Parses a KV read into relative keys; entries outside `keys` (and folders) are skipped.
pub fn parse_kv_list(body: &[u8], keys: &KeySpace) -> Result<Vec<KeyValue>, String> {
    let entries: Vec<ConsulKv> = serde_json::from_slice(body).map_err(|e| format!("bad KV listing: {e}"))?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let full = format!("/{}", entry.key);
        let Some(rel) = keys.relative(&full) else { continue };
        let value = match entry.value {
            Some(v) => base64::decode(&v).map_err(|e| format!("key {}: {e}", entry.key))?,
            None => Vec::new(),
        };
        out.push(KeyValue { key: rel.to_string(), value, revision: entry.modify_index });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Consul's documented limit of operations in one `/v1/txn`; it answers HTTP 413 beyond it.
pub const MAX_TXN_OPS: usize = 64;

/// The `PUT /v1/txn` bodies for `txn`, sent in order: conditions first (Consul checks and applies
/// in order and rolls everything back on the first failure), then the writes. A transaction over
/// [`MAX_TXN_OPS`] is split only when it has no conditions (its writes then land in several
/// steps); one with conditions must stay atomic and is refused, naming the limit.
pub fn txn_bodies(txn: &Txn, keys: &KeySpace) -> Result<Vec<Value>, String> {
    let key = |k: &str| keys.full(k).trim_start_matches('/').to_string();
    let checks: Vec<Value> = txn
        .conditions
        .iter()
        .map(|c| match c {
            Condition::Absent(k) => json!({"KV": {"Verb": "check-not-exists", "Key": key(k)}}),
            // "get" fails the transaction when the key is missing.
            Condition::Exists(k) => json!({"KV": {"Verb": "get", "Key": key(k)}}),
            Condition::Revision(k, rev) => json!({"KV": {"Verb": "check-index", "Key": key(k), "Index": rev}}),
        })
        .collect();
    let writes: Vec<Vec<Value>> = txn
        .ops
        .iter()
        .map(|op| match op {
            // A plain "set" keeps the session lock a key has, and the key would go with that
            // session: deleting first makes the written key plain, as a put is in etcd.
            Op::Put(k, v) => vec![
                json!({"KV": {"Verb": "delete", "Key": key(k)}}),
                json!({"KV": {"Verb": "set", "Key": key(k), "Value": base64::encode(v)}}),
            ],
            Op::Delete(k) => vec![json!({"KV": {"Verb": "delete", "Key": key(k)}})],
            Op::DeletePrefix(p) => vec![json!({"KV": {"Verb": "delete-tree", "Key": key(p)}})],
        })
        .collect();
    let total = checks.len() + writes.iter().map(Vec::len).sum::<usize>();
    if total <= MAX_TXN_OPS {
        return Ok(vec![Value::Array(checks.into_iter().chain(writes.into_iter().flatten()).collect())]);
    }
    if !checks.is_empty() {
        return Err(format!(
            "a conditional transaction of {total} Consul operations ({} checks, {} writes) is over Consul's \
             limit of {MAX_TXN_OPS} operations per transaction, and splitting it would lose its atomicity",
            checks.len(),
            txn.ops.len()
        ));
    }
    // A put's delete and set stay in one body.
    let mut bodies = Vec::new();
    let mut body: Vec<Value> = Vec::new();
    for write in writes {
        if body.len() + write.len() > MAX_TXN_OPS {
            bodies.push(Value::Array(std::mem::take(&mut body)));
        }
        body.extend(write);
    }
    bodies.push(Value::Array(body));
    Ok(bodies)
}

#[derive(Debug, Deserialize)]
struct TxnResponse {
    #[serde(rename = "Results", default)]
    results: Option<Vec<TxnResult>>,
    #[serde(rename = "Errors", default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Debug, Deserialize)]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: Option<TxnKv>,
}

#[derive(Debug, Deserialize)]
struct TxnKv {
    #[serde(rename = "ModifyIndex", default)]
    modify_index: u64,
}

#[derive(Debug, Deserialize)]
struct TxnError {
    #[serde(rename = "OpIndex", default)]
    op_index: usize,
    #[serde(rename = "What", default)]
    what: String,
}

/// Reads a `/v1/txn` answer: 200 is committed, 409 rolled back (a check failed).
pub fn parse_txn_response(status: u16, body: &[u8], index_header: Option<u64>) -> Result<TxnOutcome, String> {
    match status {
        200 => {
            let resp: TxnResponse = serde_json::from_slice(body).map_err(|e| format!("bad txn answer: {e}"))?;
            let written =
                resp.results.unwrap_or_default().iter().filter_map(|r| r.kv.as_ref()).map(|kv| kv.modify_index).max();
            Ok(TxnOutcome::Committed(written.or(index_header).unwrap_or(0) as Revision))
        }
        409 => {
            if let Ok(resp) = serde_json::from_slice::<TxnResponse>(body) {
                for e in resp.errors.unwrap_or_default() {
                    tracing::debug!(op = e.op_index, what = %e.what, "consul txn rolled back");
                }
            }
            Ok(TxnOutcome::Conflict)
        }
        other => Err(format!("txn answered HTTP {other}: {}", String::from_utf8_lossy(body).trim())),
    }
}

/// `PUT /v1/session/create` body: keys acquired by the session are deleted when it expires.
pub fn session_body(name: &str, ttl_secs: u64) -> Value {
    json!({"Name": name, "TTL": format!("{ttl_secs}s"), "Behavior": "delete", "LockDelay": "0s"})
}

pub fn parse_session_id(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Created {
        #[serde(rename = "ID")]
        id: String,
    }
    let created: Created = serde_json::from_slice(body).map_err(|e| format!("bad session answer: {e}"))?;
    if created.id.is_empty() || !created.id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(format!("unexpected session id {:?}", created.id));
    }
    Ok(created.id)
}

/// Consul answers `true` or `false` to KV writes.
pub fn parse_bool(body: &[u8]) -> Result<bool, String> {
    match String::from_utf8_lossy(body).trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks() -> KeySpace {
        KeySpace::new("/netloom/v1/")
    }

    #[test]
    fn paths_are_escaped() {
        assert_eq!(kv_path("/netloom/v1/ipam/pools/a"), "/v1/kv/netloom/v1/ipam/pools/a");
        assert_eq!(kv_path("/n/fd00::_64"), "/v1/kv/n/fd00%3A%3A_64");
        assert_eq!(encode_path("a b?c#d%"), "a%20b%3Fc%23d%25");
    }

    #[test]
    fn kv_listing() {
        let body = br#"[
            {"Key":"netloom/v1/b","Value":"Zm9v","ModifyIndex":7,"CreateIndex":5,"Flags":0,"LockIndex":0},
            {"Key":"netloom/v1/a","Value":null,"ModifyIndex":9,"CreateIndex":9,"Flags":0,"LockIndex":0},
            {"Key":"other/x","Value":"Zm9v","ModifyIndex":3}
        ]"#;
        let kvs = parse_kv_list(body, &ks()).unwrap();
        assert_eq!(
            kvs,
            vec![
                KeyValue { key: "a".into(), value: vec![], revision: 9 },
                KeyValue { key: "b".into(), value: b"foo".to_vec(), revision: 7 },
            ]
        );
        assert!(parse_kv_list(b"{}", &ks()).is_err());
        assert!(parse_kv_list(br#"[{"Key":"netloom/v1/a","Value":"!!","ModifyIndex":1}]"#, &ks()).is_err());
    }

    #[test]
    fn txn_request() {
        let txn = Txn::new()
            .when(Condition::Absent("a".into()))
            .when(Condition::Exists("b".into()))
            .when(Condition::Revision("c".into(), 42))
            .put("d", b"hi".to_vec())
            .delete("e")
            .delete_prefix("f/");
        let bodies = txn_bodies(&txn, &ks()).unwrap();
        let expected = json!([
            {"KV": {"Verb": "check-not-exists", "Key": "netloom/v1/a"}},
            {"KV": {"Verb": "get", "Key": "netloom/v1/b"}},
            {"KV": {"Verb": "check-index", "Key": "netloom/v1/c", "Index": 42}},
            {"KV": {"Verb": "delete", "Key": "netloom/v1/d"}},
            {"KV": {"Verb": "set", "Key": "netloom/v1/d", "Value": "aGk="}},
            {"KV": {"Verb": "delete", "Key": "netloom/v1/e"}},
            {"KV": {"Verb": "delete-tree", "Key": "netloom/v1/f/"}},
        ]);
        assert_eq!(bodies, vec![expected]);
    }

    fn sizes(bodies: &[Value]) -> Vec<usize> {
        bodies.iter().map(|b| b.as_array().unwrap().len()).collect()
    }

    #[test]
    fn large_transactions_are_split_only_without_conditions() {
        let puts = |n: usize, txn: Txn| (0..n).fold(txn, |t, i| t.put(format!("k{i}"), b"v".to_vec()));
        // 32 puts are 64 operations: one body.
        assert_eq!(sizes(&txn_bodies(&puts(32, Txn::new()), &ks()).unwrap()), [64]);
        // 33 puts are split between a put's delete and set never.
        let split = txn_bodies(&puts(33, Txn::new()), &ks()).unwrap();
        assert_eq!(sizes(&split), [64, 2]);
        assert_eq!(split[1][0]["KV"]["Verb"], "delete");
        assert_eq!(split[1][1]["KV"]["Key"], "netloom/v1/k32");
        let deletes = (0..200).fold(Txn::new(), |t, i| t.delete(format!("k{i}")));
        assert_eq!(sizes(&txn_bodies(&deletes, &ks()).unwrap()), [64, 64, 64, 8]);
        // With a condition it must stay one transaction.
        let guarded = puts(32, Txn::new().when(Condition::Absent("g".into())));
        let err = txn_bodies(&guarded, &ks()).unwrap_err();
        assert!(err.contains("65 Consul operations") && err.contains("limit of 64"), "{err}");
        let fits = puts(31, Txn::new().when(Condition::Absent("g".into())));
        assert_eq!(sizes(&txn_bodies(&fits, &ks()).unwrap()), [63]);
    }

    #[test]
    fn txn_answers() {
        let ok =
            br#"{"Results":[{"KV":{"Key":"k","ModifyIndex":12}},{"KV":{"Key":"j","ModifyIndex":12}}],"Errors":null}"#;
        assert_eq!(parse_txn_response(200, ok, Some(3)).unwrap(), TxnOutcome::Committed(12));
        let deletes_only = br#"{"Results":null,"Errors":null}"#;
        assert_eq!(parse_txn_response(200, deletes_only, Some(30)).unwrap(), TxnOutcome::Committed(30));
        let rolled_back = br#"{"Results":null,"Errors":[{"OpIndex":0,"What":"key \"k\" exists"}]}"#;
        assert_eq!(parse_txn_response(409, rolled_back, None).unwrap(), TxnOutcome::Conflict);
        assert!(parse_txn_response(500, b"No cluster leader", None).unwrap_err().contains("No cluster leader"));
        assert!(parse_txn_response(200, b"nope", None).is_err());
    }

    #[test]
    fn sessions() {
        let body = session_body("netloom", 15);
        assert_eq!(body["TTL"], "15s");
        assert_eq!(body["Behavior"], "delete");
        assert_eq!(
            parse_session_id(br#"{"ID":"adf4238a-882b-9ddc-4a9d-5b6758e4159e"}"#).unwrap(),
            "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
        );
        assert!(parse_session_id(br#"{"ID":"../x"}"#).is_err());
        assert!(parse_session_id(b"[]").is_err());
    }

    #[test]
    fn bools() {
        assert!(parse_bool(b"true\n").unwrap());
        assert!(!parse_bool(b"false").unwrap());
        assert!(parse_bool(b"maybe").is_err());
    }
}
