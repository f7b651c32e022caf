//! `--dns-addr` and `--dns-resolv-conf`: where loom-overlay answers container names (local scope),
//! and starting that server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use tracing::{info, warn};

use crate::dns::{DnsConfig, DnsServer};
use crate::overlay::Overlay;
use crate::records::Mode;

/// The port Docker's `--dns` servers are asked on (it takes no port).
pub const DNS_PORT: u16 = 53;
/// Names change as containers come and go: resolvers keep answers only briefly.
const ANSWER_TTL: Duration = Duration::from_secs(1);

/// `--dns-addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsListen {
    /// The advertise address, port 53; when it cannot be bound, no DNS (said once).
    Advertise,
    Off,
    /// Given by the user: not being able to bind it stops the driver.
    At(SocketAddr),
}

impl std::str::FromStr for DnsListen {
    type Err = String;

    /// `none`, `ADDR` (port 53), `ADDR:PORT` or `[IPv6]:PORT`.
    fn from_str(text: &str) -> Result<DnsListen, String> {
        let text = text.trim();
        if text == "none" {
            return Ok(DnsListen::Off);
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(DnsListen::At(addr));
        }
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Ok(DnsListen::At(SocketAddr::new(ip, DNS_PORT))),
            Err(_) => Err(format!("{text:?} is not ADDR, ADDR:PORT, [IPv6]:PORT or none")),
        }
    }
}

/// `--dns-addr` and `--dns-resolv-conf` together.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub listen: DnsListen,
    pub resolv_conf: PathBuf,
}

impl Overlay {
    /// Local scope with a shared store: the DNS server on its address. Only an explicit
    /// `--dns-addr` that cannot be served is an error (it stops the driver).
    pub async fn start_dns(&self) -> Result<()> {
        if self.config.mode == Mode::Global {
            info!("global scope: Docker answers container names itself (from its cluster store); no DNS here");
            return Ok(());
        }
        let Some(directory) = &self.directory else {
            if self.config.dns.listen == DnsListen::Off {
                info!("--dns-addr none: names of containers on other hosts are not answered here");
            }
            return Ok(());
        };
        let explicit = match self.config.dns.listen {
            DnsListen::At(addr) => Some(addr),
            DnsListen::Advertise | DnsListen::Off => None,
        };
        let listen = match explicit {
            Some(addr) => addr,
            None => match self.state().underlay.as_ref() {
                Some(underlay) => SocketAddr::new(underlay.vtep, DNS_PORT),
                None => {
                    warn!("no DNS for container names: the advertise address is not known yet (give --dns-addr)");
                    return Ok(());
                }
            },
        };
        let config = DnsConfig { listen, resolv_conf: self.config.dns.resolv_conf.clone(), ttl: ANSWER_TTL };
        let server = match DnsServer::start(config, directory.clone()).await {
            Ok(server) => server,
            Err(e) if explicit.is_some() => bail!("--dns-addr {listen}: {e:#}"),
            Err(e) => {
                warn!("no DNS for container names: {listen}: {e:#} (choose another address with --dns-addr, or none)");
                return Ok(());
            }
        };
        let at = server.local_addr;
        if at.port() == DNS_PORT {
            info!(dns = %at, "container names of every host answered on {at}: start dockerd with --dns {} \
                  (\"dns\": [\"{}\"] in daemon.json)", at.ip(), at.ip());
        } else {
            info!(dns = %at, "container names answered on {at}; dockerd's --dns asks port {DNS_PORT} only, \
                  so forward {}:{DNS_PORT} here", at.ip());
        }
        *self.dns_server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_addresses() {
        let at = |text: &str| text.parse::<DnsListen>();
        assert_eq!(at("none"), Ok(DnsListen::Off));
        assert_eq!(at("10.0.0.1"), Ok(DnsListen::At("10.0.0.1:53".parse().unwrap())));
        assert_eq!(at("10.0.0.1:5353"), Ok(DnsListen::At("10.0.0.1:5353".parse().unwrap())));
        assert_eq!(at("fd00::1"), Ok(DnsListen::At("[fd00::1]:53".parse().unwrap())));
        assert_eq!(at("[fd00::1]"), Ok(DnsListen::At("[fd00::1]:53".parse().unwrap())));
        assert_eq!(at("[fd00::1]:5353"), Ok(DnsListen::At("[fd00::1]:5353".parse().unwrap())));
        assert!(at("eth0").unwrap_err().contains("eth0"));
        assert!(at("10.0.0.1:99999").is_err());
    }
}
