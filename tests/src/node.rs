//! A node: one network namespace plus a "holder" process that owns a private mount, UTS and pid
//! namespace on top of it. Everything run "on the node" (dockerd, plugins, commands) enters the
//! holder's namespaces with `nsenter -t <holder> -m -u -n -p`, so it all shares one view of
//! /run/docker/plugins, one hostname and one pid namespace.
//!
//! Killing the holder (pid 1 of that pid namespace) makes the kernel kill every process in it:
//! dockerd, its managed containerd, the double-forked containerd-shims, the containers, plugins.
//! The mount namespace dies with the last of them, taking its tmpfs mounts (/run, /etc/docker,
//! dockerd's data root) along. Nothing started on a node can outlive its teardown.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::proc::NsProc;
use crate::util::{self, children_of, same_process_alive, start_time, tail, timed, CMD_TIMEOUT};

/// Runs as pid 1 of the node's pid namespace, in a fresh mount namespace with private
/// propagation ($1 = hostname):
/// - a tmpfs on /run hides the machine's /run: dockerd's exec root, /run/docker/plugins (the
///   node's plugin sockets), /run/containerd (shim sockets), /var/run/docker.sock, xtables.lock;
/// - a tmpfs on /etc/docker hides /etc/docker (daemon.json, plugin spec files; Docker 20.10
///   writes key.json there);
/// - a fresh sysfs so /sys/class/net shows this node's interfaces, with the machine's cgroup
///   mounts moved back under it (dockerd needs them; `ip netns exec` loses them);
/// - its own hostname.
///
/// Then it reaps orphans forever (the `wait` builtin reaps any child, including the re-parented
/// containerd-shims).
const HOLDER_SCRIPT: &str = r#"set -eu
mount -t tmpfs -o mode=0755 netloom-run /run
mkdir -p /run/docker/plugins /run/containerd /run/lock /run/netloom/cgroup
if [ -d /etc/docker ]; then mount -t tmpfs -o mode=0755 netloom-etc /etc/docker; fi
mount --rbind /sys/fs/cgroup /run/netloom/cgroup
mount -t sysfs netloom-sys /sys
mount --move /run/netloom/cgroup /sys/fs/cgroup
echo "$1" > /proc/sys/kernel/hostname
echo ready
exec >/dev/null
while :; do sleep 86400 & wait; done
"#;

/// Spawns `cmd` with PR_SET_PDEATHSIG=SIGKILL, from a thread that lives as long as the test
/// process: if the test process dies without cleaning up (SIGKILL, abort, a runner's timeout), the
/// kernel kills `unshare`, whose --kill-child then kills the holder and with it the whole node.
/// (The death signal fires when the spawning *thread* exits, hence the dedicated thread: test
/// threads, and the threads `Cluster::add_hosts` uses, come and go.)
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("netloom-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: the closure only makes the prctl syscall, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
    }
    let (tx, rx) = mpsc::channel();
    spawner.lock().unwrap_or_else(|e| e.into_inner()).send((cmd, tx)).expect("spawner thread gone");
    rx.recv().expect("spawner thread gone")
}

pub struct Node {
    hostname: String,
    holder_log: PathBuf,
    /// `unshare`, our child, parent of the holder.
    unshare: Mutex<Option<Child>>,
    /// The holder: pid 1 of the node's pid namespace (pid as seen from the root pid namespace).
    init_pid: i32,
    init_start: u64,
}

impl Node {
    /// Starts the holder in the existing network namespace `/run/netns/<netns>`. `dir` gets
    /// holder.log and holder.pid (read by the stale-leftover sweep).
    pub fn start(netns: &str, hostname: &str, dir: &Path) -> Result<Node> {
        fs::create_dir_all(dir)?;
        let holder_log = dir.join("holder.log");
        let log = File::create(&holder_log)?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{netns}"))
            .args(["--", "unshare", "-m", "-u", "-p", "-f", "--kill-child", "--propagation", "private"])
            .args(["--mount-proc", "--", "sh", "-c", HOLDER_SCRIPT, "netloom-holder", hostname])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let desc = util::describe(&cmd);
        let mut child = spawn_tied_to_process(cmd).with_context(|| format!("cannot start `{desc}`"))?;

        // Wait (bounded) for the "ready" line; EOF means the script failed.
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("node holder for netns {netns} failed to start; holder.log:\n{}", tail(&holder_log, 20));
        }
        let kids = children_of(child.id() as i32);
        let [init_pid] = kids[..] else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("expected exactly one child of unshare {}, found {kids:?}", child.id());
        };
        let init_start = start_time(init_pid).ok_or_else(|| anyhow!("holder {init_pid} vanished"))?;
        fs::write(dir.join("holder.pid"), format!("{init_pid} {init_start}\n"))?;
        Ok(Node { hostname: hostname.to_owned(), holder_log, unshare: Mutex::new(Some(child)), init_pid, init_start })
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Pid (in the root pid namespace) of the holder, pid 1 of the node's pid namespace.
    pub fn holder_pid(&self) -> i32 {
        self.init_pid
    }

    pub fn is_alive(&self) -> bool {
        same_process_alive(self.init_pid, self.init_start)
    }

    /// Every process of the node: those in its pid namespace, and those in namespaces nested in
    /// it (containers), found by walking parents up to a process in the node's pid namespace.
    /// Each as (pid in the root pid namespace, start time, command line).
    pub fn processes(&self) -> Vec<(i32, u64, String)> {
        let ns_of = |pid: i32| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let Some(ns) = ns_of(self.init_pid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for pid in util::all_pids() {
            let mut p = pid;
            for _ in 0..64 {
                if ns_of(p).as_ref() == Some(&ns) {
                    if let Some(start) = start_time(pid) {
                        out.push((pid, start, util::cmdline(pid)));
                    }
                    break;
                }
                match util::ppid_of(p) {
                    Some(pp) if pp > 1 => p = pp,
                    _ => break,
                }
            }
        }
        out
    }

    /// A path inside the node's mount namespace, reachable from outside through
    /// `/proc/<holder>/root` (e.g. /run/docker/plugins/x.sock, which is on the node's own tmpfs).
    pub fn path_inside(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/{}", self.init_pid, path.trim_start_matches('/')))
    }

    /// `nsenter` into the node, ready for `argv`.
    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.init_pid.to_string()).args(["-m", "-u", "-n", "-p", "--"]);
        cmd
    }

    /// A command that runs `argv` inside the node, bounded by `limit`.
    pub fn command<S: AsRef<str>>(&self, limit: Duration, argv: &[S]) -> Command {
        let mut full: Vec<String> = vec!["nsenter".into(), "-t".into(), self.init_pid.to_string()];
        full.extend(["-m", "-u", "-n", "-p", "--"].map(String::from));
        full.extend(argv.iter().map(|a| a.as_ref().to_owned()));
        timed(limit, &full)
    }

    /// Runs `argv` inside the node; Ok(stdout) if it exits 0.
    pub fn exec<S: AsRef<str>>(&self, argv: &[S]) -> Result<String> {
        if !self.is_alive() {
            bail!("node {} is not running", self.hostname);
        }
        util::run(&mut self.command(CMD_TIMEOUT, argv))
    }

    /// Starts a long-lived process inside the node with stdout+stderr appended to `log`.
    pub fn spawn<S: AsRef<str>>(&self, name: &str, argv: &[S], env: &[(&str, String)], log: &Path) -> Result<NsProc> {
        if !self.is_alive() {
            bail!("node {} is not running", self.hostname);
        }
        let mut logf = OpenOptions::new().create(true).append(true).open(log)?;
        writeln!(
            logf,
            "=== netloom-tests: starting {name}: {}",
            argv.iter().map(|a| a.as_ref()).collect::<Vec<_>>().join(" ")
        )?;
        let mut cmd = self.nsenter();
        cmd.args(argv.iter().map(|a| a.as_ref()))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot start `{}`", util::describe(&cmd)))?;
        let nsenter_pid = child.id() as i32;
        // nsenter -p forks; the forked child (which then execs argv) is the real process.
        let mut pid = None;
        let found = util::wait_until(Duration::from_secs(10), Duration::from_millis(2), "nsenter's child", || {
            if let Some(&p) = children_of(nsenter_pid).first() {
                pid = Some(p);
                return Ok(true);
            }
            Ok(child.try_wait()?.is_some())
        });
        let Some(pid) = pid else {
            let _ = child.kill();
            let _ = child.wait();
            found?;
            bail!("{name} exited at once; log:\n{}", tail(log, 30));
        };
        Ok(NsProc::new(name, log, child, pid))
    }

    /// Kills everything in the node (idempotent): SIGKILL to pid 1 of its pid namespace, which
    /// makes the kernel kill all the other processes in it before pid 1 is reaped.
    pub fn kill(&self) {
        let mut guard = self.unshare.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mut child) = guard.take() else {
            return;
        };
        if self.is_alive() {
            let _ = kill(Pid::from_raw(self.init_pid), Signal::SIGKILL);
        }
        // unshare exits when its child (the holder) is reaped, i.e. once the namespace is empty.
        let ok = util::wait_until(
            Duration::from_secs(15),
            Duration::from_millis(5),
            "the node's pid namespace to empty",
            || Ok(child.try_wait()?.is_some()),
        );
        if let Err(e) = ok {
            eprintln!("[netloom-tests] {}: {e:#}; holder.log:\n{}", self.hostname, tail(&self.holder_log, 10));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
