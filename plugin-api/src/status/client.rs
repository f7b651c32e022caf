//! Asking a plugin socket for netloom's own calls, each bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use super::{StatusReply, INSPECT, STATUS};
use crate::client::PluginClient;

/// The netloom sockets (`loom-*.sock`) in `dir` and in its subdirectories (a managed plugin's
/// socket is in `<dir>/<plugin id>/`), by path.
pub fn sockets_in(dir: &Path) -> Vec<PathBuf> {
    let entries = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir).map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
    };
    let is_socket = |p: &PathBuf| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("loom-") && n.ends_with(".sock"))
    };
    let top = entries(dir);
    let nested = top.iter().filter(|p| p.is_dir()).flat_map(|sub| entries(sub));
    let mut sockets: Vec<PathBuf> = top.iter().cloned().chain(nested).filter(is_socket).collect();
    sockets.sort();
    sockets
}

async fn call(socket: &Path, method: &str, body: &Value, limit: Duration) -> Result<Value> {
    let asked = async {
        let mut client = PluginClient::connect(socket).await?;
        client.call(method, body).await
    };
    tokio::time::timeout(limit, asked)
        .await
        .map_err(|_| anyhow!("{} did not answer {method} within {limit:?}", socket.display()))?
}

pub async fn ask_status(socket: &Path, limit: Duration) -> Result<StatusReply> {
    let reply = call(socket, STATUS, &Value::Null, limit).await?;
    serde_json::from_value(reply).with_context(|| format!("reading {STATUS} from {}", socket.display()))
}

pub async fn ask_inspect(socket: &Path, network: &str, limit: Duration) -> Result<Value> {
    call(socket, INSPECT, &json!({ "Network": network }), limit).await
}

/// `Netloom.<call>` with `body` (`Null`: no body).
pub async fn ask_control(socket: &Path, call_name: &str, body: &Value, limit: Duration) -> Result<Value> {
    call(socket, &format!("Netloom.{call_name}"), body, limit).await
}
