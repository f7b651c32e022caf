//! `loomctl status` as JSON and as tables.

use std::path::Path;

use serde_json::{json, Value};

use crate::gather::Driver;

/// `{"drivers": [{"name", "up", "version", "networks": [{"id", "name", "endpoints", "subnets"}], ...}]}`.
pub fn json(drivers: &[Driver]) -> Value {
    let drivers: Vec<Value> = drivers.iter().map(driver_json).collect();
    json!({ "drivers": drivers })
}

fn driver_json(driver: &Driver) -> Value {
    let status = match &driver.status {
        Ok(status) => status,
        Err(error) => return json!({ "name": driver.name, "up": false, "error": error }),
    };
    let names = driver.docker_names();
    let networks: Vec<Value> = status
        .networks
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "name": names.get(n.id.as_str()),
                "endpoints": n.endpoints,
                "subnets": n.subnets,
                "local_name": n.local_name,
            })
        })
        .collect();
    let mut out = json!({
        "name": driver.name,
        "docker_driver_name": driver.docker_driver(),
        "up": true,
        "version": status.version,
        "pid": status.pid,
        "uptime_seconds": status.uptime_seconds,
        "firewall": status.firewall,
        "store": status.store,
        "networks": networks,
    });
    if let Some(Err(e)) = &driver.docker {
        out["docker_error"] = json!(e);
    }
    if let Some(peers) = status.details.get("peers") {
        out["peers"] = peers.clone();
    }
    if !status.details.is_null() {
        out["details"] = status.details.clone();
    }
    out
}

/// One block per driver: its line, its networks, and loom-overlay's peer hosts.
pub fn tables(dir: &Path, drivers: &[Driver]) -> String {
    if drivers.is_empty() {
        return format!("no netloom driver socket (loom-*.sock) in {}\n", dir.display());
    }
    let mut out = String::new();
    for driver in drivers {
        out.push_str(&driver_block(driver));
        out.push('\n');
    }
    out
}

fn driver_block(driver: &Driver) -> String {
    let status = match &driver.status {
        Ok(status) => status,
        Err(error) => return format!("{}  DOWN  {error}\n", driver.name),
    };
    let mut head = vec![
        driver.name.clone(),
        "up".to_string(),
        format!("version {}", status.version),
        format!("pid {}", status.pid),
        format!("uptime {}", duration(status.uptime_seconds)),
    ];
    if let Some(firewall) = &status.firewall {
        head.push(format!("firewall {firewall}"));
    }
    match &status.store {
        Some(store) if store.healthy => head.push(format!("store {} (healthy)", store.url)),
        Some(store) => {
            head.push(format!("store {} (UNHEALTHY: {})", store.url, store.error.as_deref().unwrap_or("no answer")))
        }
        None => head.push("store none".to_string()),
    }
    let mut out = head.join("  ") + "\n";
    if let Some(Err(e)) = &driver.docker {
        out.push_str(&format!("  (no Docker names: {e})\n"));
    }
    if !status.networks.is_empty() {
        let names = driver.docker_names();
        let knows_docker = matches!(driver.docker, Some(Ok(_)));
        let mut rows = vec![row(&["NETWORK", "NAME", "SUBNETS", "ENDPOINTS", "ON THIS HOST"])];
        for network in &status.networks {
            let name = match names.get(network.id.as_str()) {
                Some(name) => name.to_string(),
                None if knows_docker => "(not in Docker)".to_string(),
                None => "-".to_string(),
            };
            rows.push(vec![
                short(&network.id),
                name,
                or_dash(&network.subnets.join(",")),
                network.endpoints.to_string(),
                or_dash(&network.local_name),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }
    if let Some(Value::Array(peers)) = status.details.get("peers") {
        let mut rows = vec![row(&["PEER HOST", "VTEP", "STATE", "LAST SEEN"])];
        for peer in peers {
            let text = |key: &str| peer.get(key).and_then(Value::as_str).map(str::to_string).unwrap_or("-".into());
            let seen = match peer.get("last_seen_seconds_ago").and_then(Value::as_u64) {
                Some(ago) => format!("{} ago", duration(ago)),
                None => "-".to_string(),
            };
            rows.push(vec![text("host"), text("vtep"), text("state"), seen]);
        }
        if rows.len() > 1 {
            out.push_str(&table(&rows, "  "));
        }
    }
    if let Some(Value::Array(pools)) = status.details.get("pools") {
        let mut rows = vec![row(&["POOL", "SUBNET", "ADDRESSES"])];
        for pool in pools {
            let text = |key: &str| pool.get(key).and_then(Value::as_str).unwrap_or("-").to_string();
            let count = pool.get("addresses").and_then(Value::as_array).map_or(0, Vec::len);
            rows.push(vec![text("pool_id"), text("subnet"), count.to_string()]);
        }
        if rows.len() > 1 {
            out.push_str(&table(&rows, "  "));
        }
    }
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Columns padded to their widest cell, each line indented.
pub fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(indent);
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `42s`, `5m3s`, `2h7m`, `3d4h`.
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
pub(crate) mod tests;
