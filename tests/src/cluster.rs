//! A cluster: an underlay network namespace holding a bridge, and the hosts plugged into it.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cleanup::{self, DIR_PREFIX, NETNS_PREFIX};
use crate::host::{underlay_ipv6, Host, HostConfig, UNDERLAY_V6_PREFIX_LEN};
use crate::netns::Netns;
use crate::node::Node;
use crate::proc::NsProc;
use crate::util;

/// Hosts get 10.250.0.1, .2, ... on the underlay; the underlay bridge itself has .254 (a place
/// for shared services such as etcd, see `Cluster::spawn_underlay`). The subnet exists only
/// inside the cluster's namespaces.
pub const UNDERLAY_NET: [u8; 3] = [10, 250, 0];
pub const UNDERLAY_PREFIX_LEN: u8 = 24;

/// Names of the clusters alive in this process.
static ACTIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn active_names() -> MutexGuard<'static, Vec<String>> {
    ACTIVE.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Cluster {
    name: String,
    dir: PathBuf,
    hosts: Mutex<Vec<Arc<Host>>>,
    procs: Mutex<Vec<NsProc>>,
    next_host: AtomicU8,
    failed: AtomicBool,
    underlay_node: Node,
    underlay: Netns,
}

impl Cluster {
    /// Creates the scenario dir `/tmp/netloom-test-<name>-<pid>` and the underlay namespace with
    /// bridge `br0` (10.250.0.254/24). `name`: [a-z0-9], at most 10 chars, unique among the
    /// scenarios running in this test process. The first call in a process also sweeps leftovers
    /// of dead test processes.
    pub fn new(name: &str) -> Result<Cluster> {
        util::require_root()?;
        util::check_name("cluster", name, 10)?;
        cleanup::sweep_once();
        {
            let mut names = active_names();
            if names.iter().any(|n| n == name) {
                bail!("a cluster named {name} is already running in this process: scenario names must be unique");
            }
            names.push(name.to_owned());
        }
        Self::build(name).inspect_err(|_| active_names().retain(|n| n != name))
    }

    fn build(name: &str) -> Result<Cluster> {
        let pid = std::process::id();
        let dir = cleanup::tmp_base().join(format!("{DIR_PREFIX}{name}-{pid}"));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::write(dir.join("owner"), cleanup::owner_marker())?;

        let underlay = Netns::create(&format!("{NETNS_PREFIX}{pid}-{name}"))?;
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["addr", "add", &format!("{}/{UNDERLAY_PREFIX_LEN}", Self::gateway()), "dev", "br0"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        let underlay_node = Node::start(underlay.name(), &format!("{name}-underlay"), &dir)?;
        Ok(Cluster {
            name: name.to_owned(),
            dir,
            hosts: Mutex::new(Vec::new()),
            procs: Mutex::new(Vec::new()),
            next_host: AtomicU8::new(1),
            failed: AtomicBool::new(false),
            underlay_node,
            underlay,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scenario dir: per-host subdirs with logs, sockets and plugin state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlay bridge's address (reachable from every host; hosts' default gateway).
    pub fn gateway() -> Ipv4Addr {
        Ipv4Addr::new(UNDERLAY_NET[0], UNDERLAY_NET[1], UNDERLAY_NET[2], 254)
    }

    /// Alias of `gateway()`: where services started with `spawn_underlay` listen.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        Self::gateway()
    }

    /// The underlay network namespace's name.
    pub fn underlay_netns(&self) -> &str {
        self.underlay.name()
    }

    /// Adds a host: namespaces, veth into the underlay, holder, and (unless deferred) dockerd.
    pub fn add_host(&self, cfg: HostConfig) -> Result<Arc<Host>> {
        let idx = self.next_host.fetch_add(1, Ordering::SeqCst);
        if idx >= 254 {
            bail!("too many hosts");
        }
        let ip = Ipv4Addr::new(UNDERLAY_NET[0], UNDERLAY_NET[1], UNDERLAY_NET[2], idx);
        let name = cfg.name.clone();
        if self.hosts().iter().any(|h| h.name() == name) {
            bail!("cluster {} already has a host {name}", self.name);
        }
        let host = Host::create(cfg, &self.name, &self.dir, &self.underlay, ip, UNDERLAY_PREFIX_LEN, Self::gateway())
            .with_context(|| format!("creating host {name} in cluster {}", self.name))?;
        let host = Arc::new(host);
        self.lock_hosts().push(host.clone());
        Ok(host)
    }

    /// Adds a LAN neighbour: a node on the underlay like a host (namespaces, eth0, holder, its own
    /// address, default route via the underlay bridge) but without dockerd, for playing another
    /// machine of the segment, e.g. an attacker that is no member of anything.
    pub fn add_neighbour(&self, name: &str) -> Result<Arc<Host>> {
        self.add_host(HostConfig::new(name, crate::DockerVersion::V20).defer_docker())
    }

    /// Gives the underlay IPv6: `fd00:250::254/64` on br0 and `fd00:250::N/64` on the eth0 of
    /// every host added so far (`Host::underlay_ipv6`), without duplicate address detection so
    /// the addresses answer at once. Hosts added later get theirs with `Host::add_underlay_ipv6`.
    pub fn enable_underlay_ipv6(&self) -> Result<()> {
        let br = format!("{}/{UNDERLAY_V6_PREFIX_LEN}", underlay_ipv6(254));
        self.underlay.ip(&["-6", "addr", "add", &br, "dev", "br0", "nodad"])?;
        for h in self.hosts() {
            h.add_underlay_ipv6()?;
        }
        Ok(())
    }

    /// Adds several hosts in parallel (dockerd start-ups overlap); same order as `cfgs`.
    pub fn add_hosts(&self, cfgs: Vec<HostConfig>) -> Result<Vec<Arc<Host>>> {
        let t0 = Instant::now();
        let results: Vec<Result<Arc<Host>>> = std::thread::scope(|s| {
            let handles: Vec<_> = cfgs.into_iter().map(|cfg| s.spawn(move || self.add_host(cfg))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("add_host panicked"))))
                .collect()
        });
        let hosts = results.into_iter().collect::<Result<Vec<_>>>()?;
        eprintln!("[netloom-tests] {}: {} hosts up in {:.2}s", self.name, hosts.len(), t0.elapsed().as_secs_f64());
        Ok(hosts)
    }

    fn lock_hosts(&self) -> MutexGuard<'_, Vec<Arc<Host>>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn hosts(&self) -> Vec<Arc<Host>> {
        self.lock_hosts().clone()
    }

    /// Runs `argv` in the underlay namespace (it has its own mount/pid namespace, like a host).
    pub fn underlay_exec<S: AsRef<str>>(&self, argv: &[S]) -> Result<String> {
        self.underlay_node.exec(argv)
    }

    /// Starts a long-lived process in the underlay namespace (e.g. etcd listening on
    /// `underlay_ip()`), logging to `<scenario dir>/<name>.log`; the cluster kills it at drop.
    /// Returns its pid.
    pub fn spawn_underlay<S: AsRef<str>>(&self, name: &str, argv: &[S]) -> Result<i32> {
        let p = self.underlay_node.spawn(name, argv, &[], &self.dir.join(format!("{name}.log")))?;
        let pid = p.pid();
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).push(p);
        Ok(pid)
    }

    /// Marks the scenario failed: at drop, log tails are printed and the scenario dir is kept.
    /// (Automatic when dropped during a panic.)
    pub fn mark_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Tails of every log of the scenario.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for h in self.hosts() {
            out.push_str(&format!("##### host {} ({}, {})\n", h.name(), h.docker_version(), h.underlay_ip()));
            out.push_str(&h.log_tails(lines));
        }
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") && fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false) {
                    out.push_str(&format!(
                        "===== {} (last {lines} lines) =====\n{}\n",
                        p.display(),
                        util::tail(&p, lines)
                    ));
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking() || self.failed.load(Ordering::SeqCst);
        if failed {
            eprintln!("[netloom-tests] scenario {} FAILED; logs:\n{}", self.name, self.log_tails(60));
        }
        let t0 = Instant::now();
        // Hosts in parallel: each teardown mostly waits for the kernel to empty a pid namespace.
        let hosts = std::mem::take(&mut *self.lock_hosts());
        std::thread::scope(|s| {
            for h in &hosts {
                s.spawn(move || h.teardown());
            }
        });
        drop(hosts);
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.underlay_node.kill();
        self.underlay.delete();
        active_names().retain(|n| n != &self.name);
        let keep = std::env::var_os("NETLOOM_KEEP_LOGS").is_some_and(|v| !v.is_empty() && v != "0");
        if failed || keep {
            // The kept dir holds only logs and plugin state: the big things (data roots) were on
            // the hosts' tmpfs. The next test process's sweep removes it.
            eprintln!("[netloom-tests] scenario {}: logs kept in {}", self.name, self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("[netloom-tests] cleanup: cannot remove {}: {e}", self.dir.display());
        }
        eprintln!("[netloom-tests] {}: teardown {:.2}s", self.name, t0.elapsed().as_secs_f64());
    }
}

/// Declares one `#[test]` per entry, each the body `scenario(name, run)`: for a scenario run once
/// per Docker version or firewall backend.
///
/// ```ignore
/// scenario_tests! {
///     bridge_docker20_iptables: "br20ipt" => |c| bridge_scenario(c, DockerVersion::V20, "iptables"),
///     bridge_docker26_nftables: "br26nft" => |c| bridge_scenario(c, DockerVersion::V26, "nftables"),
/// }
/// ```
#[macro_export]
macro_rules! scenario_tests {
    ($($(#[$attr:meta])* $test:ident: $name:literal => $run:expr),* $(,)?) => {
        $(
            $(#[$attr])*
            #[test]
            fn $test() {
                $crate::scenario($name, $run);
            }
        )*
    };
}

/// Runs a scenario: creates `Cluster::new(name)`, runs `f`, tears everything down, and panics
/// with the error if `f` failed or panicked (printing the tails of all logs first). Use it as the
/// body of a #[test].
#[track_caller]
pub fn scenario(name: &str, f: impl FnOnce(&Cluster) -> Result<()>) {
    let cluster = match Cluster::new(name) {
        Ok(c) => c,
        Err(e) => panic!("scenario {name}: cannot create the cluster: {e:#}"),
    };
    let res = f(&cluster);
    if res.is_err() {
        cluster.mark_failed();
    }
    drop(cluster);
    if let Err(e) = res {
        panic!("scenario {name} failed: {e:#}");
    }
}
