//! The host's upstream resolvers, from its resolv.conf.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::{info, warn};

/// Docker's embedded resolver: forwarding to it from the host would come back here.
const DOCKER_EMBEDDED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
const DNS_PORT: u16 = 53;

/// The upstream resolvers, re-read from the file whenever it changes (checked by a stat per use).
pub struct Upstreams {
    source: Source,
}

enum Source {
    File {
        path: PathBuf,
        listen: SocketAddr,
        cache: Mutex<Cached>,
    },
    #[cfg(test)]
    Fixed(Arc<[SocketAddr]>),
}

#[derive(Default)]
struct Cached {
    /// What identified the file's content when it was read; None: not read yet, or unreadable.
    stamp: Option<Stamp>,
    servers: Arc<[SocketAddr]>,
    /// The last read failed (reported once).
    unreadable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Upstreams {
    /// The nameservers of `path`, without `listen` (this server) and Docker's embedded resolver.
    pub fn from_resolv_conf(path: PathBuf, listen: SocketAddr) -> Upstreams {
        Upstreams { source: Source::File { path, listen, cache: Mutex::new(Cached::default()) } }
    }

    /// Fixed upstreams on any port: resolv.conf has no port syntax, tests need stand-ins.
    #[cfg(test)]
    pub fn fixed(servers: Vec<SocketAddr>) -> Upstreams {
        Upstreams { source: Source::Fixed(servers.into()) }
    }

    /// The resolvers to try, in order (empty: none configured, or the file cannot be read).
    pub fn current(&self) -> Arc<[SocketAddr]> {
        match &self.source {
            Source::File { path, listen, cache } => {
                let mut cache = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                refresh(&mut cache, path, *listen);
                cache.servers.clone()
            }
            #[cfg(test)]
            Source::Fixed(servers) => servers.clone(),
        }
    }
}

fn refresh(cache: &mut Cached, path: &Path, listen: SocketAddr) {
    let stamp =
        std::fs::metadata(path).ok().map(|m| Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() });
    if stamp.is_some() && stamp == cache.stamp {
        return;
    }
    let first = cache.stamp.is_none() && !cache.unreadable;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            if !cache.unreadable {
                warn!(path = %path.display(), %error, "cannot read the upstream resolvers: names not ours get SERVFAIL");
            }
            *cache = Cached { unreadable: true, ..Cached::default() };
            return;
        }
    };
    let servers: Arc<[SocketAddr]> = nameservers(&text, listen).into();
    if first || cache.unreadable || *servers != *cache.servers {
        if servers.is_empty() {
            warn!(path = %path.display(), "no upstream resolver: names not ours get SERVFAIL");
        } else {
            info!(path = %path.display(), upstreams = ?servers, "upstream resolvers");
        }
    }
    *cache = Cached { stamp, servers, unreadable: false };
}

/// The `nameserver` lines of a resolv.conf, on port 53, in order, without `listen` and
/// Docker's embedded resolver. Lines that do not parse are skipped.
pub fn nameservers(text: &str, listen: SocketAddr) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(server) = words.next().and_then(parse_address) else {
            continue;
        };
        let ours = server == listen || server.ip().to_canonical() == DOCKER_EMBEDDED;
        if !ours && !servers.contains(&server) {
            servers.push(server);
        }
    }
    servers
}

/// An address as resolv.conf writes it: IPv4, IPv6, IPv6 with `%zone` (interface name or index).
fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    let (ip, zone) = text.split_once('%')?;
    let ip = ip.parse().ok()?;
    let scope = match zone.parse::<u32>() {
        Ok(index) => index,
        Err(_) => nix::net::if_::if_nametoindex(zone).ok()?,
    };
    Some(SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope)))
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
