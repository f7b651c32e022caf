//! The subnets other netloom drivers on this host hold, asked over their plugin sockets: a
//! loom-host network with no container yet has no route the kernel could show, so a new
//! loom-bridge network learns about it from loom-host itself (and the other way round).
//!
//! `Netloom.Subnets` is netloom's own method, next to Docker's; dockerd never calls it. Every
//! `loom-*.sock` in the directory of this driver's socket is asked, each bounded; a driver that
//! is down, slow or does not know the method is skipped (its kernel routes are still checked).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::debug;

use crate::client::PluginClient;
use crate::error::{PluginError, PluginResult};

pub const METHOD: &str = "Netloom.Subnets";

/// How long one sibling may take to answer.
pub const SIBLING_LIMIT: Duration = Duration::from_secs(1);

/// One network of a driver and its subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedSubnets {
    /// The driver's name, e.g. `loom-host`.
    #[serde(rename = "Driver")]
    pub driver: String,
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// What else names the network on the host, e.g. `bridge web0`; may be empty.
    #[serde(rename = "Detail", default)]
    pub detail: String,
    #[serde(rename = "Subnets")]
    pub subnets: Vec<IpNetwork>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubnetsResponse {
    #[serde(rename = "Networks", default)]
    pub networks: Vec<ClaimedSubnets>,
}

static OWN_SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Records the socket this process serves (set once, before the driver is built).
pub fn set_own_socket(path: &Path) {
    let _ = OWN_SOCKET.set(path.to_path_buf());
}

/// What the other netloom drivers next to this process's socket hold.
pub async fn sibling_claims() -> Vec<ClaimedSubnets> {
    match OWN_SOCKET.get() {
        Some(own) => claims_next_to(own, SIBLING_LIMIT).await,
        None => Vec::new(),
    }
}

/// What the drivers serving `loom-*.sock` next to `own` (other than `own`) hold.
pub async fn claims_next_to(own: &Path, limit: Duration) -> Vec<ClaimedSubnets> {
    let Some(dir) = own.parent() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let siblings: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p != own)
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("loom-") && n.ends_with(".sock"))
        })
        .collect();
    let asked = siblings.iter().map(|path| async move {
        match tokio::time::timeout(limit, ask(path)).await {
            Ok(Ok(claims)) => claims,
            Ok(Err(e)) => {
                debug!(socket = %path.display(), "no subnets from a sibling driver: {e:#}");
                Vec::new()
            }
            Err(_) => {
                debug!(socket = %path.display(), "a sibling driver did not say its subnets in time");
                Vec::new()
            }
        }
    });
    futures::future::join_all(asked).await.into_iter().flatten().collect()
}

async fn ask(path: &Path) -> anyhow::Result<Vec<ClaimedSubnets>> {
    let mut client = PluginClient::connect(path).await?;
    let reply = client.call(METHOD, &Value::Null).await?;
    Ok(serde_json::from_value::<SubnetsResponse>(reply)?.networks)
}

/// Refuses `ours` when it overlaps a subnet of one of `own` (this driver's other networks) or of
/// a network another netloom driver on this host holds; the error names that network.
pub async fn refuse_overlap(ours: &[IpNetwork], own: Vec<ClaimedSubnets>) -> PluginResult<()> {
    if let Some(err) = overlap_error(ours, &own) {
        return Err(err);
    }
    match overlap_error(ours, &sibling_claims().await) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

fn overlap_error(ours: &[IpNetwork], claims: &[ClaimedSubnets]) -> Option<PluginError> {
    claims.iter().find_map(|claim| {
        let (mine, theirs) =
            claim.subnets.iter().find_map(|theirs| ours.iter().find(|s| overlaps(s, theirs)).map(|s| (*s, *theirs)))?;
        let detail = if claim.detail.is_empty() { String::new() } else { format!(" ({})", claim.detail) };
        let network: String = claim.network_id.chars().take(12).collect();
        Some(PluginError::new(format!(
            "subnet {mine} overlaps subnet {theirs} of {} network {network}{detail} on this host; one subnet serves \
             one network per host: remove that network or choose another --subnet",
            claim.driver
        )))
    })
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

#[cfg(test)]
mod overlap_tests {
    use super::*;

    fn claim(driver: &str, id: &str, detail: &str, subnets: &[&str]) -> ClaimedSubnets {
        ClaimedSubnets {
            driver: driver.into(),
            network_id: id.into(),
            detail: detail.into(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn the_overlapped_network_is_named() {
        let ours: Vec<IpNetwork> = vec!["10.1.0.0/24".parse().unwrap()];
        let claims = [
            claim("loom-host", "aaaaaaaaaaaaaaaa", "", &["10.2.0.0/16", "fd00::/64"]),
            claim("loom-bridge", "bbbbbbbbbbbbbbbbbb", "bridge web0", &["10.0.0.0/8"]),
        ];
        let err = overlap_error(&ours, &claims).expect("overlap").to_string();
        assert!(
            err.contains(
                "subnet 10.1.0.0/24 overlaps subnet 10.0.0.0/8 of loom-bridge network bbbbbbbbbbbb (bridge web0)"
            ),
            "{err}"
        );
        assert!(overlap_error(&ours, &claims[..1]).is_none());
        let v6: Vec<IpNetwork> = vec!["fd00::/48".parse().unwrap()];
        assert!(overlap_error(&v6, &claims)
            .unwrap()
            .to_string()
            .contains("of loom-host network aaaaaaaaaaaa on this host"));
    }
}
