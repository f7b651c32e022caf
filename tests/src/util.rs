//! Small helpers: running commands with readable errors, polling, reading /proc, log tails.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Default bound for one command (docker CLI call, `ip`, exec in a host). A plugin that hangs blocks
/// dockerd forever (v1 plugins have no request timeout), so nothing may wait unbounded.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// `program arg1 arg2 ...`, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Wraps `argv` in coreutils `timeout` so that a hung command fails instead of hanging the test.
pub fn timed<S: AsRef<OsStr>>(limit: Duration, argv: &[S]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("-k").arg("5").arg(format!("{}", limit.as_secs().max(1)));
    cmd.args(argv);
    cmd
}

/// Runs `cmd` to completion; Ok(stdout) on exit 0, otherwise an error carrying the command line,
/// the exit status, stderr and stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out =
        cmd.stdin(std::process::Stdio::null()).output().with_context(|| format!("cannot start `{}`", describe(cmd)))?;
    check_output(cmd, out)
}

pub fn check_output(cmd: &Command, out: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = match out.status.code() {
        // `timeout` exits 124 when it had to stop the command.
        Some(124) if cmd.get_program() == "timeout" => "timed out".to_string(),
        _ => out.status.to_string(),
    };
    bail!("`{}` failed ({status})\nstderr: {}\nstdout: {}", describe(cmd), stderr.trim_end(), stdout.trim_end())
}

/// Polls `f` every `every` until it returns Ok(true), it errors, or `limit` passes.
pub fn wait_until(limit: Duration, every: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    loop {
        if f()? {
            return Ok(());
        }
        if start.elapsed() >= limit {
            bail!("timed out after {:?} waiting for {what}", limit);
        }
        std::thread::sleep(every);
    }
}

/// The last `n` lines of a file (or a note that it can't be read).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Fields of /proc/<pid>/stat after the `(comm)` part: index 0 is the state, 1 the ppid,
/// 19 the start time (field 22 in proc(5) numbering).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The start time of a process (clock ticks since boot): with the pid it identifies a process
/// even after pid reuse.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// True if `pid` exists and is the process that had `start` as start time (not a zombie).
pub fn same_process_alive(pid: i32, start: u64) -> bool {
    match stat_fields(pid) {
        Some(f) => f.first().map(String::as_str) != Some("Z") && f.get(19).and_then(|s| s.parse().ok()) == Some(start),
        None => false,
    }
}

/// Parent pid of a process.
pub fn ppid_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Command line of a process, space-separated.
pub fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).split('\0').filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ")
}

/// All pids in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten().filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok())).collect()
}

/// Pids whose parent is `ppid` (the kernel here has no /proc/<pid>/task/<tid>/children).
pub fn children_of(ppid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(f) = stat_fields(pid) {
            if f.get(1).and_then(|s| s.parse::<i32>().ok()) == Some(ppid) {
                out.push(pid);
            }
        }
    }
    out
}

/// `${NETLOOM_CACHE:-/var/cache/netloom-tests}`: downloaded Docker builds, the busybox rootfs tarball.
pub fn cache_dir() -> PathBuf {
    env_path("NETLOOM_CACHE").unwrap_or_else(|| PathBuf::from("/var/cache/netloom-tests"))
}

/// `$var` as a path, if it is set and not empty.
pub fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Where the plugin binaries are: $NETLOOM_BIN_DIR, else $CARGO_TARGET_DIR/release, else
/// `<workspace>/target/release`.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = env_path("NETLOOM_BIN_DIR") {
        return d;
    }
    if let Some(d) = env_path("CARGO_TARGET_DIR") {
        return if d.is_absolute() { d } else { workspace_root().join(d) }.join("release");
    }
    workspace_root().join("target").join("release")
}

/// Short names only: they end up in interface, netns and cgroup names.
pub fn check_name(kind: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.as_bytes()[0].is_ascii_lowercase();
    if !ok {
        bail!("{kind} name {name:?} must be 1-{max} chars of [a-z0-9], starting with a letter");
    }
    Ok(())
}

/// Fails clearly unless running as root (CI runs the scenarios as root).
pub fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("netloom integration tests must run as root: they create network namespaces and start dockerd (use tests/run.sh)");
    }
    Ok(())
}

/// The value of `--flag V` or `--flag=V` in `args` (the last one wins, as with clap).
pub(crate) fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut found = None;
    for (i, arg) in args.iter().enumerate() {
        if arg == flag {
            found = args.get(i + 1).map(String::as_str);
        } else if let Some(v) = arg.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')) {
            found = Some(v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::flag_value;

    #[test]
    fn flag_values_in_both_spellings() {
        let args: Vec<String> = ["--firewall", "nftables", "--docker-host=none", "--reconcile-interval", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_value(&args, "--docker-host"), Some("none"));
        assert_eq!(flag_value(&args, "--reconcile-interval"), Some("3"));
        assert_eq!(flag_value(&args, "--store"), None);
        assert_eq!(flag_value(&args, "--docker"), None);
    }
}
