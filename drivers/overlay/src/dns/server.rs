//! The DNS server: UDP and TCP on one address, answers from the directory, the rest forwarded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::directory::Directory;

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    /// Where the upstream resolvers are read from (re-read when it changes).
    pub resolv_conf: PathBuf,
    /// TTL of the answers from the directory.
    pub ttl: Duration,
}

/// A running server; dropping it stops it.
pub struct DnsServer {
    pub local_addr: SocketAddr,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` (an error when either cannot be bound) and serves
    /// in the background.
    pub async fn start(config: DnsConfig, directory: Directory) -> Result<DnsServer> {
        let _ = (config, directory);
        todo!("DNS")
    }
}
