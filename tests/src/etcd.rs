//! Real etcd for the scenarios: one member in the underlay namespace, or one member per host,
//! each in that host's namespaces, so that stopping a member is stopping a "machine".

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

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
