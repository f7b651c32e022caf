//! A netloom plugin binary running on a host.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;

use crate::node::Node;
use crate::proc::NsProc;
use crate::util::{self, flag_value, tail};

/// How long a plugin gets to accept connections on its socket after being started.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);

/// Where dockerd looks for plugin sockets on a host.
pub const DOCKER_PLUGIN_DIR: &str = "/run/docker/plugins";

/// Extra plugin arguments for scenarios that wait for reconciliation against Docker: a pass every
/// 3 s (instead of 30 s), so a removal is confirmed within `Plugin::reconcile_period()`, 6 s.
pub const FAST_RECONCILE: [&str; 2] = ["--reconcile-interval", "3"];

/// The drivers' default `--reconcile-interval`, in seconds.
const DEFAULT_RECONCILE_SECS: u64 = 30;

/// A plugin process on a host: `<binary> --socket <dir>/<name>.sock --state-dir <host dir>/state/<name>
/// --docker-host unix://<host dir>/docker.sock <extra args>`, run in the host's namespaces,
/// stdout+stderr appended to `<host dir>/<name>.log`. The socket's directory is dockerd's
/// (`/run/docker/plugins`) unless the plugin sits behind a `PluginProxy`. The host keeps it (and
/// kills it at teardown); this is a shared handle.
///
/// `--docker-host` points at the host's own dockerd (whether or not it runs) unless `extra` names
/// one: a driver never asks the machine's dockerd, which knows nothing of this host's networks.
pub struct Plugin {
    name: String,
    socket: String,
    binary: PathBuf,
    args: Vec<String>,
    state_dir: PathBuf,
    log: PathBuf,
    node: Arc<Node>,
    proc: Mutex<Option<NsProc>>,
    /// From the last spawn until the socket first accepted a connection.
    ready_after: Mutex<Option<Duration>>,
}

impl Plugin {
    pub(crate) fn new(
        name: &str,
        binary: PathBuf,
        extra: &[&str],
        socket_dir: &str,
        host_dir: &Path,
        node: Arc<Node>,
    ) -> Result<Plugin> {
        if !binary.is_file() {
            bail!(
                "plugin binary {} is missing: run `cargo build --release --workspace --bins` first \
                 (or set NETLOOM_BIN_DIR)",
                binary.display()
            );
        }
        let state_dir = host_dir.join("state").join(name);
        std::fs::create_dir_all(&state_dir)?;
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if flag_value(&args, "--docker-host").is_none() {
            args.push("--docker-host".into());
            args.push(format!("unix://{}", host_dir.join("docker.sock").display()));
        }
        Ok(Plugin {
            name: name.to_owned(),
            socket: format!("{}/{name}.sock", socket_dir.trim_end_matches('/')),
            binary,
            args,
            state_dir,
            log: host_dir.join(format!("{name}.log")),
            node,
            proc: Mutex::new(None),
            ready_after: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<NsProc>> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The driver name docker uses (`-d <name>`): the socket's file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The socket path the plugin serves, as the host sees it (dockerd's
    /// `/run/docker/plugins/<name>.sock`, or a private one behind a proxy).
    pub fn socket(&self) -> String {
        self.socket.clone()
    }

    /// The arguments after `--socket` and `--state-dir` (the test's, and `--docker-host`).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// `--reconcile-interval` as started (the drivers' default, 30 s, if not given).
    pub fn reconcile_interval(&self) -> Duration {
        let secs = flag_value(&self.args, "--reconcile-interval").and_then(|v| v.parse().ok());
        Duration::from_secs(secs.unwrap_or(DEFAULT_RECONCILE_SECS))
    }

    /// The longest a driver that stays up takes to remove what Docker no longer has: a pass sees
    /// it missing, and a pass at least min(interval, 5 s) later confirms it.
    pub fn reconcile_period(&self) -> Duration {
        let interval = self.reconcile_interval();
        interval + interval.min(Duration::from_secs(5))
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Pid (root pid namespace) of the running process.
    pub fn pid(&self) -> Option<i32> {
        let mut g = self.lock();
        let p = g.as_mut()?;
        p.is_running().then(|| p.pid())
    }

    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Exit status of the last run, if it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lock().as_mut().and_then(|p| p.try_exit())
    }

    /// How long the last start took, from spawning the process until its socket accepted a
    /// connection (polled every millisecond); None before the first successful start.
    pub fn ready_after(&self) -> Option<Duration> {
        *self.ready_after.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the process (if not running) and waits until its socket accepts connections.
    pub fn start(&self) -> Result<()> {
        let spawned = Instant::now();
        {
            let mut g = self.lock();
            if g.as_mut().is_some_and(|p| p.is_running()) {
                return Ok(());
            }
            let mut argv = vec![self.binary.display().to_string(), "--socket".into(), self.socket()];
            argv.push("--state-dir".into());
            argv.push(self.state_dir.display().to_string());
            argv.extend(self.args.iter().cloned());
            // Plain log lines in the log file (tracing-subscriber colours them unless NO_COLOR).
            let env = [("RUST_BACKTRACE", "1".to_string()), ("NO_COLOR", "1".to_string())];
            *g = Some(self.node.spawn(&self.name, &argv, &env, &self.log)?);
        }
        self.wait_socket(SOCKET_TIMEOUT)?;
        *self.ready_after.lock().unwrap_or_else(|e| e.into_inner()) = Some(spawned.elapsed());
        Ok(())
    }

    /// Waits until the socket accepts a connection (a stale socket file left by a killed run
    /// doesn't count); fails early if the process exits.
    pub fn wait_socket(&self, limit: Duration) -> Result<()> {
        let path = self.node.path_inside(&self.socket());
        let res = util::wait_until(
            limit,
            Duration::from_millis(1),
            &format!("{} to listen on {}", self.name, self.socket()),
            || {
                if UnixStream::connect(&path).is_ok() {
                    return Ok(true);
                }
                if let Some(st) = self.exit_status() {
                    bail!("{} exited ({st}) before listening", self.name);
                }
                Ok(false)
            },
        );
        res.map_err(|e| e.context(format!("{} log:\n{}", self.name, tail(&self.log, 30))))
    }

    /// Sends a signal (no-op if not running).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        match self.lock().as_mut() {
            Some(p) => p.signal(sig),
            None => Ok(()),
        }
    }

    /// SIGTERM, then waits up to 10 s for the exit; an error if it doesn't exit (it is then
    /// SIGKILLed so the test can go on).
    pub fn sigterm(&self) -> Result<ExitStatus> {
        let mut g = self.lock();
        let Some(p) = g.as_mut() else { bail!("{} was never started", self.name) };
        p.signal(Signal::SIGTERM)?;
        match p.wait_exit(Duration::from_secs(10)) {
            Some(st) => Ok(st),
            None => {
                p.kill()?;
                bail!("{} ignored SIGTERM for 10 s (killed it)", self.name)
            }
        }
    }

    /// SIGKILL, like a crash: no chance to clean up.
    pub fn sigkill(&self) -> Result<ExitStatus> {
        let mut g = self.lock();
        let Some(p) = g.as_mut() else { bail!("{} was never started", self.name) };
        p.kill()
    }

    /// Graceful stop (SIGTERM, SIGKILL after 10 s) if running, then start again with the same
    /// arguments and state dir, and wait for the socket.
    pub fn restart(&self) -> Result<()> {
        if let Some(p) = self.lock().as_mut() {
            p.stop(Duration::from_secs(10))?;
        }
        self.start()
    }

    pub(crate) fn kill(&self) {
        if let Some(mut p) = self.lock().take() {
            let _ = p.kill();
        }
    }
}
