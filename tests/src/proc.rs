//! A long-lived process started inside a node's namespaces (dockerd, a plugin, etcd...).

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A process running in a node's pid namespace. It is started through `nsenter -p`, which forks:
/// `nsenter` stays in the root pid namespace as the waiting parent (we hold it as a `Child` to
/// reap it and learn the exit status), and `pid` is the real process, as seen from the root pid
/// namespace, that signals go to.
///
/// Dropping it kills the process (SIGKILL) and reaps it.
pub struct NsProc {
    name: String,
    log: PathBuf,
    nsenter: Child,
    pid: i32,
    exit: Option<ExitStatus>,
}

impl NsProc {
    pub(crate) fn new(name: &str, log: &Path, nsenter: Child, pid: i32) -> NsProc {
        NsProc { name: name.to_owned(), log: log.to_owned(), nsenter, pid, exit: None }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid in the root pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Its stdout+stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Reaps `nsenter` if it has exited. nsenter only exits after the real process did, so while
    /// this returns None the pid can't have been reused and signalling it is safe.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.nsenter.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Sends `sig` if the process is still running (no-op otherwise).
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if self.is_running() {
            match kill(Pid::from_raw(self.pid), sig) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => bail!("kill({}, {sig}) for {}: {e}", self.pid, self.name),
            }
        }
        Ok(())
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        if let Some(st) = self.wait_exit(grace) {
            return Ok(st);
        }
        eprintln!("[netloom-tests] {} did not exit {grace:?} after SIGTERM; sending SIGKILL", self.name);
        self.kill()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL)?;
        match self.wait_exit(Duration::from_secs(10)) {
            Some(st) => Ok(st),
            None => {
                // The real process is gone or unkillable; don't leave nsenter behind either.
                let _ = self.nsenter.kill();
                match self.nsenter.wait() {
                    Ok(st) => {
                        self.exit = Some(st);
                        Ok(st)
                    }
                    Err(e) => bail!("cannot reap nsenter for {}: {e}", self.name),
                }
            }
        }
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("[netloom-tests] cleanup: {e:#}");
        }
    }
}
