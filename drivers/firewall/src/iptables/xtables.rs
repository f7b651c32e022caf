//! Running `iptables`/`ip6tables`, bounded: every call passes `--wait <WAIT_SECS>` (the xtables
//! lock, `/run/xtables.lock`, is waited for at most that long) and the process itself is killed
//! if it has not finished [`PROCESS_GRACE`] after that. A call that times out fails alone, with a
//! message naming the lock; the caller's other requests go on.

use std::error::Error;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::rules::words;

/// How long one call waits for the xtables lock.
pub(crate) const WAIT_SECS: u64 = 10;
/// How long a process may run beyond the lock wait before it is killed.
const PROCESS_GRACE: Duration = Duration::from_secs(5);
/// The lock legacy iptables takes (iptables-nft accepts `--wait` and takes no lock).
pub(crate) const XTABLES_LOCK: &str = "/run/xtables.lock";
/// The exit status iptables gives when it stopped waiting for the lock (`RESOURCE_PROBLEM`).
const RESOURCE_PROBLEM: i32 = 4;

pub(crate) type IptResult<T> = Result<T, Box<dyn Error>>;

/// One family's binary.
#[derive(Debug, Clone)]
pub(crate) struct Xtables {
    /// `iptables` or `ip6tables`.
    pub cmd: &'static str,
    pub v6: bool,
}

fn err(msg: String) -> Box<dyn Error> {
    msg.into()
}

/// Runs `cmd`, killing it after `limit`; the error of a run that took too long names the lock.
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration) -> IptResult<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Ok(out?),
        Err(_) => {
            // The child is not reaped yet (the waiting thread reaps it once it dies), so the pid
            // is still its own.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            Err(err(format!(
                "{program} did not finish within {} s and was killed; is another program holding the xtables lock ({XTABLES_LOCK})?",
                limit.as_secs()
            )))
        }
    }
}

impl Xtables {
    pub fn new(v6: bool) -> Self {
        Self { cmd: if v6 { "ip6tables" } else { "iptables" }, v6 }
    }

    /// `cmd --version`: whether the binary runs at all.
    pub fn version(&self) -> IptResult<String> {
        let mut c = Command::new(self.cmd);
        c.arg("--version");
        let out = run_bounded(c, PROCESS_GRACE)?;
        if !out.status.success() {
            return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn run(&self, args: &[String]) -> IptResult<Output> {
        let mut c = Command::new(self.cmd);
        c.args(args).arg("--wait").arg(WAIT_SECS.to_string());
        let out = run_bounded(c, Duration::from_secs(WAIT_SECS) + PROCESS_GRACE)?;
        if out.status.code() == Some(RESOURCE_PROBLEM) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("xtables lock") {
                return Err(err(format!(
                    "gave up after {WAIT_SECS} s waiting for the xtables lock ({XTABLES_LOCK}), held by another program: {}",
                    stderr.trim()
                )));
            }
        }
        Ok(out)
    }

    fn args(table: &str, op: &[&str], rule: &str) -> Vec<String> {
        let mut v: Vec<String> = ["-t", table].iter().chain(op).map(|s| s.to_string()).collect();
        v.extend(words(rule));
        v
    }

    fn checked(&self, args: Vec<String>) -> IptResult<()> {
        let out = self.run(&args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
        }
    }

    /// `-t table <command>`; the status is the caller's to check.
    pub fn execute(&self, table: &str, command: &str) -> IptResult<Output> {
        self.run(&Self::args(table, &[], command))
    }

    pub fn exists(&self, table: &str, chain: &str, rule: &str) -> IptResult<bool> {
        let out = self.run(&Self::args(table, &["-C", chain], rule))?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(RESOURCE_PROBLEM) => Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string())),
            _ => Ok(false),
        }
    }

    pub fn insert(&self, table: &str, chain: &str, rule: &str, position: i32) -> IptResult<()> {
        self.checked(Self::args(table, &["-I", chain, &position.to_string()], rule))
    }

    pub fn append(&self, table: &str, chain: &str, rule: &str) -> IptResult<()> {
        self.checked(Self::args(table, &["-A", chain], rule))
    }

    pub fn delete(&self, table: &str, chain: &str, rule: &str) -> IptResult<()> {
        self.checked(Self::args(table, &["-D", chain], rule))
    }

    /// Deletes every copy of a rule.
    pub fn delete_all(&self, table: &str, chain: &str, rule: &str) -> IptResult<()> {
        while self.exists(table, chain, rule)? {
            self.delete(table, chain, rule)?;
        }
        Ok(())
    }

    pub fn new_chain(&self, table: &str, chain: &str) -> IptResult<()> {
        self.checked(Self::args(table, &["-N", chain], ""))
    }

    pub fn chain_exists(&self, table: &str, chain: &str) -> IptResult<bool> {
        Ok(self.run(&Self::args(table, &["-S", chain], ""))?.status.success())
    }

    pub fn flush_chain(&self, table: &str, chain: &str) -> IptResult<()> {
        self.checked(Self::args(table, &["-F", chain], ""))
    }

    pub fn delete_chain(&self, table: &str, chain: &str) -> IptResult<()> {
        self.checked(Self::args(table, &["-X", chain], ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hung_process_is_killed_and_the_lock_named() {
        let mut c = Command::new("sleep");
        c.arg("30");
        let started = std::time::Instant::now();
        let e = run_bounded(c, Duration::from_millis(300)).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(5), "not bounded: {:?}", started.elapsed());
        assert!(e.contains("/run/xtables.lock") && e.contains("sleep"), "{e}");
    }

    #[test]
    fn a_quick_process_answers() {
        let mut c = Command::new("echo");
        c.arg("hi");
        let out = run_bounded(c, Duration::from_secs(5)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    }

    #[test]
    fn rules_are_split_into_arguments() {
        assert_eq!(
            Xtables::args("nat", &["-I", "PREROUTING", "1"], "-m comment --comment \"a b\" -j X"),
            ["-t", "nat", "-I", "PREROUTING", "1", "-m", "comment", "--comment", "a b", "-j", "X"]
        );
    }
}
