//! What `loomctl` shows of loom-ipam: the pools and addresses this host holds, grouped by pool,
//! and the same list flat (`allocations`), which `loomctl doctor` judges against Docker.

use std::collections::BTreeMap;

use netloom_plugin_api::engine::HeldAllocation;
use serde_json::{json, Value};

use crate::ipam::Ipam;

pub async fn details(ipam: &Ipam) -> Value {
    match ipam.held_by_this_host().await {
        Ok(held) => describe(ipam.host_id(), &held),
        Err(e) => json!({ "host_id": ipam.host_id(), "error": format!("listing this host's pools: {e}") }),
    }
}

fn describe(host_id: &str, held: &[HeldAllocation]) -> Value {
    let mut pools: BTreeMap<&str, Value> = BTreeMap::new();
    let mut allocations = Vec::new();
    for allocation in held {
        let (kind, pool_id, subnet, address) = match allocation {
            HeldAllocation::Pool { pool_id, subnet } => ("pool", pool_id, subnet, None),
            HeldAllocation::Address { pool_id, subnet, address } => ("address", pool_id, subnet, Some(address)),
            HeldAllocation::Gateway { pool_id, subnet, address } => ("gateway", pool_id, subnet, Some(address)),
        };
        allocations.push(json!({
            "kind": kind,
            "pool_id": pool_id,
            "subnet": subnet.to_string(),
            "address": address.map(ToString::to_string),
        }));
        let pool = pools.entry(pool_id).or_insert_with(
            || json!({ "pool_id": pool_id, "subnet": subnet.to_string(), "gateway": null, "addresses": [] }),
        );
        match (kind, address) {
            ("gateway", Some(address)) => pool["gateway"] = json!(address.to_string()),
            (_, Some(address)) => {
                if let Some(list) = pool["addresses"].as_array_mut() {
                    list.push(json!(address.to_string()));
                }
            }
            _ => {}
        }
    }
    json!({ "host_id": host_id, "pools": pools.into_values().collect::<Vec<_>>(), "allocations": allocations })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_gather_their_gateway_and_addresses() {
        let pool_id = "LocalDefault/10.9.0.0/24".to_string();
        let subnet = "10.9.0.0/24".parse().unwrap();
        let held = [
            HeldAllocation::Pool { pool_id: pool_id.clone(), subnet },
            HeldAllocation::Gateway { pool_id: pool_id.clone(), subnet, address: "10.9.0.1".parse().unwrap() },
            HeldAllocation::Address { pool_id: pool_id.clone(), subnet, address: "10.9.0.2".parse().unwrap() },
        ];
        let out = describe("h1", &held);
        assert_eq!(
            out["pools"],
            json!([{ "pool_id": pool_id, "subnet": "10.9.0.0/24", "gateway": "10.9.0.1", "addresses": ["10.9.0.2"] }])
        );
        assert_eq!(out["allocations"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            out["allocations"][1],
            json!({ "kind": "gateway", "pool_id": pool_id, "subnet": "10.9.0.0/24", "address": "10.9.0.1" })
        );
        assert_eq!(out["allocations"][0]["address"], Value::Null);
    }
}
