//! Real etcd for the scenarios: members in the underlay namespace (reachable from every host and
//! from Docker 20.10's cluster store), or one member per host, each in that host's namespaces, so
//! that stopping a member is stopping a "machine".

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::proc::NsProc;
use crate::util::wait_until;
use crate::{Cluster, Host};

pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

struct Member {
    name: String,
    ip: Ipv4Addr,
    host: Arc<Host>,
    process: Option<NsProc>,
}

/// An etcd cluster whose members live on harness hosts.
pub struct Etcd {
    members: Vec<Member>,
    dir: std::path::PathBuf,
}

impl Etcd {
    /// One member per host, listening on the host's underlay address.
    pub fn on_hosts(c: &Cluster, hosts: &[Arc<Host>]) -> Result<Etcd> {
        let members = hosts
            .iter()
            .map(|h| Member { name: format!("e-{}", h.name()), ip: h.underlay_ip(), host: h.clone(), process: None })
            .collect();
        let mut etcd = Etcd { members, dir: c.dir().join("etcd") };
        for i in 0..etcd.members.len() {
            etcd.start(i)?;
        }
        etcd.wait_healthy(0, Duration::from_secs(30))?;
        Ok(etcd)
    }

    /// `etcd://ip1:2379,ip2:2379,…`, the form netloom's `--store` takes.
    pub fn url(&self) -> String {
        let endpoints: Vec<String> = self.members.iter().map(|m| format!("{}:{CLIENT_PORT}", m.ip)).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    /// The endpoint list in etcdctl's form.
    pub fn endpoints(&self) -> String {
        let endpoints: Vec<String> = self.members.iter().map(|m| format!("http://{}:{CLIENT_PORT}", m.ip)).collect();
        endpoints.join(",")
    }

    fn initial_cluster(&self) -> String {
        let peers: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://{}:{PEER_PORT}", m.name, m.ip)).collect();
        peers.join(",")
    }

    /// (Re)starts member `i` on its data directory.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let initial_cluster = self.initial_cluster();
        let member = &mut self.members[i];
        if member.process.as_mut().is_some_and(NsProc::is_running) {
            return Ok(());
        }
        let data_dir = self.dir.join(&member.name);
        std::fs::create_dir_all(&self.dir)?;
        let client = format!("http://{}:{CLIENT_PORT}", member.ip);
        let peer = format!("http://{}:{PEER_PORT}", member.ip);
        let data_dir = data_dir.display().to_string();
        let argv = [
            "etcd",
            "--name",
            &member.name,
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &initial_cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            "netloom-test",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--log-level",
            "warn",
        ];
        let process =
            member.host.spawn(&member.name, &argv).with_context(|| format!("starting etcd member {}", member.name))?;
        member.process = Some(process);
        Ok(())
    }

    /// Stops member `i` hard, as a crashed machine would.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// Waits until member `i` answers a health check through etcdctl on its own host.
    pub fn wait_healthy(&self, i: usize, limit: Duration) -> Result<()> {
        let member = &self.members[i];
        let endpoint = format!("http://{}:{CLIENT_PORT}", member.ip);
        let mut last = String::new();
        let ok = wait_until(limit, Duration::from_millis(100), "etcd health", || {
            match member.host.exec(&["etcdctl", "--endpoints", &endpoint, "--command-timeout=1s", "endpoint", "health"])
            {
                Ok(_) => Ok(true),
                Err(e) => {
                    last = format!("{e:#}");
                    Ok(false)
                }
            }
        });
        if ok.is_err() {
            bail!("etcd member {} not healthy within {limit:?}: {last}", member.name);
        }
        Ok(())
    }
}

/// etcd members in the underlay namespace, all on its address, on ports 2379/2380 + 10000·i,
/// with the v2 API that Docker 20.10's cluster store uses. The cluster owns the processes.
pub struct UnderlayEtcd {
    names: Vec<String>,
    pids: Vec<Option<i32>>,
    starts: Vec<usize>,
    tls: Option<UnderlayTls>,
}

/// Certificates for an etcd that serves clients over TLS and wants their certificates.
struct UnderlayTls {
    server_args: Vec<String>,
    ca: String,
    cert: String,
    key: String,
}

#[path = "../../ipam/store/tests/common/pki.rs"]
mod pki;

impl UnderlayEtcd {
    fn client_port(i: usize) -> u16 {
        CLIENT_PORT + 10000 * i as u16
    }

    fn peer_port(i: usize) -> u16 {
        PEER_PORT + 10000 * i as u16
    }

    /// Starts `members` etcd processes forming one cluster and waits until each is healthy.
    pub fn start(c: &Cluster, members: usize) -> Result<UnderlayEtcd> {
        Self::start_with(c, members, None)
    }

    /// Like `start`, serving clients over TLS with certificates from a CA made for the test, and
    /// accepting only clients with a certificate from it ([`Self::store_tls_args`]).
    pub fn start_tls(c: &Cluster, members: usize) -> Result<UnderlayEtcd> {
        let pki = pki::TestPki::new(&c.dir().join("pki"), "store")?;
        let server = pki.server("etcd", &[std::net::IpAddr::V4(c.underlay_ip())])?;
        let client = pki.client("root")?;
        let text = |p: &std::path::Path| p.display().to_string();
        let tls = UnderlayTls {
            server_args: pki.etcd_client_tls_args(&server),
            ca: text(&pki.ca()),
            cert: text(&client.cert),
            key: text(&client.key),
        };
        Self::start_with(c, members, Some(tls))
    }

    /// netloom's options to reach a [`Self::start_tls`] etcd (none for a plain one).
    pub fn store_tls_args(&self) -> Vec<String> {
        match &self.tls {
            Some(t) => ["--store-ca", &t.ca, "--store-cert", &t.cert, "--store-key", &t.key].map(String::from).to_vec(),
            None => Vec::new(),
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// etcdctl against `endpoints` (`ip:port,…`), with the client certificate when there is TLS.
    fn etcdctl(&self, c: &Cluster, endpoints: &str, args: &[&str]) -> Result<String> {
        let urls: Vec<String> = endpoints.split(',').map(|e| format!("{}://{e}", self.scheme())).collect();
        let mut argv = vec!["etcdctl".to_string(), format!("--endpoints={}", urls.join(","))];
        if let Some(t) = &self.tls {
            argv.extend([format!("--cacert={}", t.ca), format!("--cert={}", t.cert), format!("--key={}", t.key)]);
        }
        argv.extend(args.iter().map(|a| a.to_string()));
        c.underlay_exec(&argv)
    }

    fn start_with(c: &Cluster, members: usize, tls: Option<UnderlayTls>) -> Result<UnderlayEtcd> {
        let mut etcd = UnderlayEtcd {
            names: (0..members).map(|i| format!("etcd{i}")).collect(),
            pids: vec![None; members],
            starts: vec![0; members],
            tls,
        };
        for i in 0..members {
            etcd.spawn(c, i)?;
        }
        etcd.wait_healthy(c, &(0..members).collect::<Vec<_>>())?;
        Ok(etcd)
    }

    fn spawn(&mut self, c: &Cluster, i: usize) -> Result<()> {
        let ip = c.underlay_ip();
        let cluster: Vec<String> =
            (0..self.names.len()).map(|j| format!("{}=http://{ip}:{}", self.names[j], Self::peer_port(j))).collect();
        let data = c.dir().join(format!("{}.data", self.names[i]));
        let argv = vec![
            "etcd".to_string(),
            format!("--name={}", self.names[i]),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={}://{ip}:{}", self.scheme(), Self::client_port(i)),
            format!("--advertise-client-urls={}://{ip}:{}", self.scheme(), Self::client_port(i)),
            format!("--listen-peer-urls=http://{ip}:{}", Self::peer_port(i)),
            format!("--initial-advertise-peer-urls=http://{ip}:{}", Self::peer_port(i)),
            format!("--initial-cluster={}", cluster.join(",")),
            "--initial-cluster-state=new".to_string(),
            "--enable-v2=true".to_string(),
            "--heartbeat-interval=50".to_string(),
            "--election-timeout=500".to_string(),
            "--logger=zap".to_string(),
        ];
        let argv = [argv, self.tls.as_ref().map(|t| t.server_args.clone()).unwrap_or_default()].concat();
        self.starts[i] += 1;
        let log = format!("{}-{}", self.names[i], self.starts[i]);
        self.pids[i] = Some(c.spawn_underlay(&log, &argv)?);
        Ok(())
    }

    /// Member `i`'s client endpoint, `ip:port`.
    pub fn endpoint(c: &Cluster, i: usize) -> String {
        format!("{}:{}", c.underlay_ip(), Self::client_port(i))
    }

    /// `etcd://a,b,c` for every member: the form netloom's `--store` and dockerd's
    /// `--cluster-store` take.
    pub fn url(&self, c: &Cluster) -> String {
        let endpoints: Vec<String> = (0..self.names.len()).map(|i| Self::endpoint(c, i)).collect();
        format!("etcd://{}", endpoints.join(","))
    }

    pub fn wait_healthy(&self, c: &Cluster, members: &[usize]) -> Result<()> {
        for &i in members {
            let endpoint = Self::endpoint(c, i);
            wait_until(Duration::from_secs(30), Duration::from_millis(100), &format!("etcd member {i}"), || {
                Ok(self.etcdctl(c, &endpoint, &["endpoint", "health"]).is_ok())
            })?;
        }
        Ok(())
    }

    /// Stops member `i` hard, as a crashed machine would.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some(pid) = self.pids[i].take() {
            kill(Pid::from_raw(pid), Signal::SIGKILL).context("killing etcd")?;
            // Its port is free once the process is gone.
            let proc_dir = format!("/proc/{pid}");
            wait_until(Duration::from_secs(10), Duration::from_millis(20), "etcd to exit", || {
                Ok(std::fs::read_to_string(format!("{proc_dir}/stat")).map(|s| s.contains(") Z")).unwrap_or(true))
            })?;
        }
        Ok(())
    }

    /// Waits until the members still running agree on a leader (after one was stopped): writes
    /// in flight while a cluster loses its leader time out in etcd itself.
    pub fn wait_leader(&self, c: &Cluster) -> Result<()> {
        let live: Vec<String> =
            (0..self.names.len()).filter(|i| self.pids[*i].is_some()).map(|i| Self::endpoint(c, i)).collect();
        let endpoints = live.join(",");
        wait_until(Duration::from_secs(20), Duration::from_millis(100), "an etcd leader", || {
            let Ok(out) =
                c.underlay_exec(&["etcdctl", "--endpoints", &endpoints, "endpoint", "status", "--write-out", "json"])
            else {
                return Ok(false);
            };
            let status: serde_json::Value = serde_json::from_str(&out)?;
            let leaders: Vec<u64> = status
                .as_array()
                .map(|a| a.iter().filter_map(|m| m["Status"]["leader"].as_u64()).collect())
                .unwrap_or_default();
            let members: Vec<u64> = status
                .as_array()
                .map(|a| a.iter().filter_map(|m| m["Status"]["header"]["member_id"].as_u64()).collect())
                .unwrap_or_default();
            Ok(leaders.len() == live.len() && leaders.iter().all(|l| *l == leaders[0] && members.contains(l)))
        })
    }

    pub fn restart(&mut self, c: &Cluster, i: usize) -> Result<()> {
        self.stop(i)?;
        self.spawn(c, i)?;
        self.wait_healthy(c, &[i])
    }

    /// `etcdctl get --prefix <prefix> --keys-only` against member `i`.
    pub fn keys(&self, c: &Cluster, i: usize, prefix: &str) -> Result<Vec<String>> {
        let endpoint = Self::endpoint(c, i);
        let out = self.etcdctl(c, &endpoint, &["get", "--prefix", "--keys-only", prefix])?;
        Ok(out.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect())
    }
}
