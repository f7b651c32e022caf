//! DNS for the scenarios, through the `netloom-probe` binary: a stand-in for a site's upstream
//! resolver in the underlay namespace, and queries from a host, a neighbour or a container.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::cluster::Cluster;
use crate::host::Host;
use crate::util::{self, tail};

/// Docker's embedded resolver, as a container's processes reach it.
pub const EMBEDDED_RESOLVER: &str = "127.0.0.11:53";

/// A resolver on the underlay bridge's address, UDP port 53, answering A for its names and
/// NXDOMAIN for every other, plus a resolv.conf naming it (for loom-overlay's
/// `--dns-resolv-conf`). Killed with the cluster.
pub struct DnsUpstream {
    addr: SocketAddr,
    resolv_conf: PathBuf,
}

impl DnsUpstream {
    /// `probe`: the netloom-probe binary (`env!("CARGO_BIN_EXE_netloom-probe")` in a scenario).
    pub fn start(c: &Cluster, probe: &str, records: &[(&str, Ipv4Addr)]) -> Result<DnsUpstream> {
        let addr = SocketAddr::from((Cluster::gateway(), 53));
        let listen = addr.to_string();
        let mut argv = vec![probe.to_owned(), "dns-serve".to_owned(), listen.clone()];
        argv.extend(records.iter().map(|(name, ip)| format!("{name}={ip}")));
        c.spawn_underlay("dns-upstream", &argv)?;
        let log = c.dir().join("dns-upstream.log");
        util::wait_until(Duration::from_secs(10), Duration::from_millis(10), "the upstream DNS to listen", || {
            Ok(std::fs::read_to_string(&log).unwrap_or_default().contains(&format!("listening on {listen}")))
        })
        .with_context(|| format!("dns-upstream.log:\n{}", tail(&log, 10)))?;
        let resolv_conf = c.dir().join("upstream-resolv.conf");
        std::fs::write(&resolv_conf, format!("# the scenario's upstream resolver\nnameserver {}\n", addr.ip()))?;
        Ok(DnsUpstream { addr, resolv_conf })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A resolv.conf naming only this resolver (in the scenario dir, which every host sees).
    pub fn resolv_conf(&self) -> &Path {
        &self.resolv_conf
    }
}

/// Where a query is sent from.
#[derive(Clone, Copy)]
pub enum AskFrom<'a> {
    /// The host's (or a neighbour's) own network namespace.
    Host(&'a Host),
    /// A container's network namespace (its processes' view: 127.0.0.11 is Docker's resolver).
    Container(&'a Host, &'a str),
}

impl AskFrom<'_> {
    fn run(&self, argv: &[&str]) -> Result<String> {
        match self {
            AskFrom::Host(h) => h.exec(argv),
            AskFrom::Container(h, name) => h.exec_in_container_netns(name, argv),
        }
    }
}

/// One DNS reply: its rcode (`None`: nothing came back) and the addresses of its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsReply {
    pub rcode: Option<String>,
    pub addresses: Vec<IpAddr>,
}

impl DnsReply {
    /// From netloom-probe's `rcode=<code> answers=<n> <address>...`.
    fn parse(line: &str) -> Result<DnsReply> {
        let mut rcode = None;
        let mut count = None;
        let mut addresses = Vec::new();
        for word in line.split_whitespace() {
            if let Some(code) = word.strip_prefix("rcode=") {
                rcode = (code != "none").then(|| code.to_owned());
            } else if let Some(n) = word.strip_prefix("answers=") {
                count = n.parse::<usize>().ok();
            } else if let Ok(ip) = word.parse() {
                addresses.push(ip);
            }
        }
        match count {
            Some(n) if n == addresses.len() => Ok(DnsReply { rcode, addresses }),
            _ => bail!("not a DNS reply summary: {line:?}"),
        }
    }
}

/// A name that came or went (`DnsProbe::wait`): when, and the reply that showed it.
#[derive(Debug, Clone)]
pub struct Waited {
    /// Since the probe started asking.
    pub after: Duration,
    /// Wall clock when it was seen, milliseconds since the Unix epoch.
    pub at_unix_ms: u128,
    pub reply: DnsReply,
}

/// A name that came or went while something was done (`DnsProbe::during`).
#[derive(Debug, Clone)]
pub struct Arrival<T> {
    /// What the action returned.
    pub outcome: T,
    pub seen: Waited,
    /// From the action's start, and from its return, until the name answered as wanted.
    pub since_start: Duration,
    pub since_return: Duration,
}

/// Latencies of a burst of queries (`DnsProbe::burst`), over the answered ones.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    pub count: usize,
    /// Queries without an address in their answer (or without an answer).
    pub failed: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Runs netloom-probe's DNS commands.
pub struct DnsProbe {
    probe: String,
}

fn field<'a>(line: &'a str, key: &str) -> Result<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .with_context(|| format!("no {key}= in {line:?}"))
}

fn number<T: std::str::FromStr>(line: &str, key: &str) -> Result<T> {
    field(line, key)?.parse().ok().with_context(|| format!("{key} in {line:?}"))
}

impl DnsProbe {
    pub fn new(probe: &str) -> DnsProbe {
        DnsProbe { probe: probe.to_owned() }
    }

    /// One A query for `name` to `server` (3 tries, 1 s each).
    pub fn ask(&self, from: AskFrom, server: &str, name: &str) -> Result<DnsReply> {
        let out = from.run(&[&self.probe, "dns-ask", server, name])?;
        DnsReply::parse(out.trim())
    }

    /// Asks every 10 ms until `name` has an address (`present`) or has none; an error after `limit`.
    pub fn wait(&self, from: AskFrom, server: &str, name: &str, present: bool, limit: Duration) -> Result<Waited> {
        let (want, ms) = (if present { "present" } else { "absent" }, limit.as_millis().to_string());
        let out = from.run(&[&self.probe, "dns-wait", server, name, want, &ms])?;
        let line = out.trim();
        let rest = line.split_once(" rcode=").map(|(_, r)| format!("rcode={r}")).unwrap_or_default();
        Ok(Waited {
            after: Duration::from_millis(number(line, "after_ms")?),
            at_unix_ms: number(line, "at_unix_ms")?,
            reply: DnsReply::parse(&rest)?,
        })
    }

    /// Starts asking for `name` from `from`, runs `act` (e.g. `docker run` or `docker rm` of that
    /// name on another host), and waits until the name has an address (`present`) or has none:
    /// when, relative to the action.
    pub fn during<T>(
        &self,
        from: AskFrom,
        server: &str,
        (name, present): (&str, bool),
        limit: Duration,
        act: impl FnOnce() -> Result<T>,
    ) -> Result<Arrival<T>> {
        std::thread::scope(|s| {
            let waiter = s.spawn(|| self.wait(from, server, name, present, limit));
            // The probe is asking (and told the name is not there yet, or still is) before the
            // action starts.
            std::thread::sleep(Duration::from_millis(300));
            let started = SystemTime::now();
            let outcome = act();
            let returned = SystemTime::now();
            let seen = waiter.join().map_err(|_| anyhow::anyhow!("the waiting probe panicked"))?;
            let (outcome, seen) = (outcome?, seen?);
            let since = |t: SystemTime| {
                let t = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
                Duration::from_millis(seen.at_unix_ms.saturating_sub(t) as u64)
            };
            Ok(Arrival { since_start: since(started), since_return: since(returned), outcome, seen })
        })
    }

    /// `count` A queries for `name` one after the other.
    pub fn burst(&self, from: AskFrom, server: &str, name: &str, count: usize) -> Result<Burst> {
        let out = from.run(&[&self.probe, "dns-burst", server, name, &count.to_string()])?;
        let line = out.trim();
        let us = |key| -> Result<Duration> { Ok(Duration::from_micros(number(line, key)?)) };
        Ok(Burst {
            count: number(line, "count")?,
            failed: number(line, "failed")?,
            p50: us("p50_us")?,
            p99: us("p99_us")?,
            max: us("max_us")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_summaries_parse() {
        let r = DnsReply::parse("rcode=NoError answers=2 10.77.0.3").unwrap_err();
        assert!(r.to_string().contains("not a DNS reply"), "{r}");
        let r = DnsReply::parse("rcode=NoError answers=2 10.77.0.3 fd00::3").unwrap();
        assert_eq!(r.rcode.as_deref(), Some("NoError"));
        assert_eq!(r.addresses, vec![IpAddr::from([10, 77, 0, 3]), "fd00::3".parse::<IpAddr>().unwrap()]);
        assert_eq!(DnsReply::parse("rcode=none answers=0").unwrap(), DnsReply { rcode: None, addresses: vec![] });
        assert!(DnsReply::parse("rcode=Refused answers=1").is_err());
    }
}
