//! A scratch network namespace for socket-level driver tests: no dockerd, no mount or pid
//! namespace, just a fresh netns held by a `sleep` (so that kernel state outlives the driver
//! processes a test kills and restarts), entered with `nsenter -n`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;
use crate::util::require_root;

pub struct ScratchNetns {
    holder: Child,
}

impl ScratchNetns {
    /// A namespace with only `lo` (up).
    pub fn new() -> Result<ScratchNetns> {
        require_root()?;
        let holder =
            Command::new("unshare").args(["--net", "sleep", "3600"]).spawn().context("starting unshare --net")?;
        let ns = ScratchNetns { holder };
        let root = std::fs::read_link("/proc/self/ns/net").ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ns.netns_link().is_none() || ns.netns_link() == root {
            if Instant::now() > deadline {
                bail!("the scratch namespace did not appear within 5 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        ns.sh("ip link set lo up")?;
        Ok(ns)
    }

    /// The holder's pid, e.g. for `ip link set X netns <pid>`.
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    fn netns_link(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/ns/net", self.holder.id())).ok()
    }

    /// `program` to be run inside the namespace (through `nsenter -n`, which execs it: the child's
    /// pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t").arg(self.holder.id().to_string()).arg("-n").arg(program);
        cmd
    }

    /// `sh -c <script>` inside the namespace: Ok(stdout) on exit 0, else an error with stderr.
    pub fn sh(&self, script: &str) -> Result<String> {
        util::run(self.command("sh").arg("-c").arg(script))
    }

    /// The namespace's interface names, sorted.
    pub fn links(&self) -> Vec<String> {
        let out = self.sh("ip -o link").unwrap_or_default();
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect();
        names.sort();
        names
    }
}

/// A plugin binary serving a socket from inside a scratch namespace, killed on drop.
pub struct ScratchPlugin {
    child: Child,
    socket: PathBuf,
}

impl ScratchNetns {
    /// Starts `binary` (a path) serving `<dir>/plugin.sock`, with its state in `<dir>/state` and
    /// its log appended to `<dir>/plugin.log`, and waits until its socket answers.
    pub fn start_plugin(&self, binary: &str, dir: &Path, extra: &[&str]) -> Result<ScratchPlugin> {
        self.serve(binary, &dir.join("plugin.sock"), &dir.join("state"), &dir.join("plugin.log"), extra)
    }

    /// Like `start_plugin`, for several drivers sharing `dir` and finding each other by their
    /// socket names: `<dir>/<name>.sock`, state in `<dir>/<name>-state`, log in `<dir>/<name>.log`.
    pub fn start_named_plugin(&self, binary: &str, dir: &Path, name: &str, extra: &[&str]) -> Result<ScratchPlugin> {
        let (socket, state, log) =
            (dir.join(format!("{name}.sock")), dir.join(format!("{name}-state")), dir.join(format!("{name}.log")));
        self.serve(binary, &socket, &state, &log, extra)
    }

    fn serve(
        &self,
        binary: &str,
        socket: &Path,
        state: &Path,
        log_path: &Path,
        extra: &[&str],
    ) -> Result<ScratchPlugin> {
        let log = OpenOptions::new().create(true).append(true).open(log_path)?;
        // No dockerd knows this namespace's networks: reconciling against one (the machine's, at
        // the default address) would remove them all.
        let given: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let no_docker: &[&str] =
            if util::flag_value(&given, "--docker-host").is_some() { &[] } else { &["--docker-host", "none"] };
        let child = self
            .command(binary)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(state)
            .args(["--log-level", "debug"])
            .args(no_docker)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let mut plugin = ScratchPlugin { child, socket: socket.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(10);
        // A killed predecessor leaves its socket file behind: wait until the new process answers.
        while std::os::unix::net::UnixStream::connect(&plugin.socket).is_err() {
            if let Some(status) = plugin.child.try_wait()? {
                bail!("{binary} exited ({status}):\n{}", util::tail(log_path, 20));
            }
            if Instant::now() > deadline {
                bail!("{binary} did not serve {} within 10 s", plugin.socket.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(plugin)
    }
}

impl ScratchPlugin {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ScratchPlugin {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
