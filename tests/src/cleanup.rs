//! Naming of everything the harness creates, the stale-leftover sweep, cgroup removal, and the
//! root-namespace snapshot used to prove the machine was left alone.
//!
//! Every object the harness creates carries its prefix and the pid of the test process that owns it:
//! - scenario dirs `/tmp/netloom-test-<cluster>-<pid>/` (with an `owner` file: pid + start time),
//! - network namespaces `nlt-<pid>-<cluster>` (underlay) and `nlt-<pid>-<cluster>-<host>`,
//! - cgroups `/netloom-<pid>-<cluster>-<host>` (dockerd's --cgroup-parent) in every hierarchy.
//!
//! The sweep removes only such objects, and only when their owner process is gone. Processes are
//! found through the holder.pid files (pid + start time) recorded in the scenario dirs, never by
//! process name.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{self, same_process_alive, start_time};

pub const DIR_PREFIX: &str = "netloom-test-";
pub const NETNS_PREFIX: &str = "nlt-";
pub const CGROUP_PREFIX: &str = "netloom-";

/// Where scenario dirs go: $NETLOOM_TEST_TMP or /tmp.
pub fn tmp_base() -> PathBuf {
    util::env_path("NETLOOM_TEST_TMP").unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// "pid start-time" of this process.
pub fn owner_marker() -> String {
    let pid = std::process::id() as i32;
    format!("{pid} {}\n", start_time(pid).unwrap_or(0))
}

fn parse_marker(s: &str) -> Option<(i32, u64)> {
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Runs the sweep once per test process (at the first `Cluster::new`).
pub fn sweep_once() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(sweep);
}

/// Removes leftovers of test processes that died without cleaning up (SIGKILL, timeout).
pub fn sweep() {
    // 1. Scenario dirs: kill recorded holders, which takes all their processes and mounts along.
    if let Ok(rd) = fs::read_dir(tmp_base()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(DIR_PREFIX) else {
                continue;
            };
            let dir = e.path();
            let owner_alive = match fs::read_to_string(dir.join("owner")).ok().as_deref().and_then(parse_marker) {
                Some((pid, start)) => same_process_alive(pid, start),
                // No owner file (yet): fall back to the pid in the name.
                None => match rest.rsplit('-').next().and_then(|p| p.parse().ok()) {
                    Some(pid) => pid_exists(pid),
                    None => continue,
                },
            };
            if owner_alive {
                continue;
            }
            eprintln!("[netloom-tests] sweep: removing stale {}", dir.display());
            for holder in holder_pid_files(&dir) {
                if let Some((pid, start)) = fs::read_to_string(&holder).ok().as_deref().and_then(parse_marker) {
                    if same_process_alive(pid, start) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        let _ = util::wait_until(
                            Duration::from_secs(10),
                            Duration::from_millis(10),
                            "stale holder",
                            || Ok(!same_process_alive(pid, start)),
                        );
                    }
                }
            }
            let _ = fs::remove_dir_all(&dir);
        }
    }
    // 2. Network namespaces whose owner pid is gone.
    if let Ok(out) = util::run(Command::new("ip").args(["netns", "list"])) {
        for line in out.lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if !pid_exists(pid) {
                eprintln!("[netloom-tests] sweep: deleting stale netns {name}");
                let _ = util::run(Command::new("ip").args(["netns", "delete", name]));
            }
        }
    }
    // 3. cgroups whose owner pid is gone.
    for mount in cgroup_mounts() {
        let Ok(rd) = fs::read_dir(&mount) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if e.path().is_dir() && !pid_exists(pid) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
}

fn holder_pid_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.join("holder.pid")];
    if let Ok(rd) = fs::read_dir(dir) {
        out.extend(rd.flatten().map(|e| e.path().join("holder.pid")));
    }
    out.retain(|p| p.is_file());
    out
}

/// Mount points of all cgroup (v1 and v2) hierarchies.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    info.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// Removes the cgroup `/<name>` from every hierarchy (dockerd's --cgroup-parent), children first.
pub fn remove_cgroup(name: &str) {
    for mount in cgroup_mounts() {
        let p = mount.join(name);
        if p.is_dir() {
            remove_cgroup_tree(&p);
        }
    }
}

fn remove_cgroup_tree(path: &Path) {
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // Right after its last process died a cgroup may still be busy for a moment.
    let res = util::wait_until(Duration::from_secs(5), Duration::from_millis(20), "cgroup removal", || {
        Ok(match fs::remove_dir(path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
        })
    });
    if res.is_err() {
        eprintln!("[netloom-tests] cleanup: cannot remove cgroup {}", path.display());
    }
}

/// What the harness promises never to change in the root network namespace: links, addresses,
/// routes, forwarding sysctls, and the firewall (nftables, which also holds iptables-nft's rules, and the legacy
/// iptables tables, if any are loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootNsSnapshot {
    parts: Vec<(&'static str, String)>,
}

impl RootNsSnapshot {
    pub fn take() -> Result<RootNsSnapshot> {
        util::require_root()?;
        let cmds: [(&'static str, &[&str]); 7] = [
            ("ip -o link", &["ip", "-o", "link"]),
            ("ip -o addr", &["ip", "-o", "addr"]),
            ("ip route", &["ip", "route", "show", "table", "all"]),
            ("ip -6 route", &["ip", "-6", "route", "show", "table", "all"]),
            ("nft list ruleset", &["nft", "list", "ruleset"]),
            ("legacy iptables tables", &["cat", "/proc/net/ip_tables_names"]),
            ("ip_forward", &["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"]),
        ];
        let mut parts = Vec::new();
        for (label, argv) in cmds {
            let out = util::run(Command::new(argv[0]).args(&argv[1..]))?;
            parts.push((label, out));
        }
        Ok(RootNsSnapshot { parts })
    }

    /// Errors with the differences if the root namespace changed since `self` was taken.
    pub fn check_unchanged(&self) -> Result<()> {
        let now = RootNsSnapshot::take()?;
        let mut diffs = String::new();
        for ((label, before), (_, after)) in self.parts.iter().zip(&now.parts) {
            if before != after {
                diffs.push_str(&format!("--- {label} before:\n{before}--- {label} after:\n{after}"));
            }
        }
        if !diffs.is_empty() {
            bail!("the root network namespace changed:\n{diffs}");
        }
        Ok(())
    }
}

/// Network namespaces with the harness's prefix that belong to this process.
pub fn own_netns() -> Vec<String> {
    let me = format!("{NETNS_PREFIX}{}-", std::process::id());
    util::run(Command::new("ip").args(["netns", "list"]))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&me))
        .map(str::to_owned)
        .collect()
}
