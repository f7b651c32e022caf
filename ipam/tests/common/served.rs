//! A plugin binary serving its socket for a test: started, waited for until it answers, killed
//! when dropped. Shared with loom-null's binary tests.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use netloom_plugin_api::client::PluginClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct Served {
    child: Child,
    socket: PathBuf,
}

impl Served {
    /// Runs `bin --socket <socket> --state-dir <state> <args>` and waits until the socket answers.
    /// No dockerd belongs to these tests: unless `args` names one, the binary asks none (a
    /// dockerd of the machine would have none of the test's pools and networks, and reconciling
    /// against it would release them).
    pub fn start(bin: &str, socket: &Path, state: &Path, args: &[&str]) -> Self {
        let mut child = command(bin, socket, state, args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        // A killed predecessor leaves its socket file behind: wait until the new process answers.
        while UnixStream::connect(socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{bin} exited with {status}");
            }
            assert!(Instant::now() < deadline, "{bin} did not serve {} in time", socket.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { child, socket: socket.to_path_buf() }
    }

    /// Runs `bin` the same way, expecting it to stop by itself within `limit`: its exit status
    /// (None: still running at `limit`, then killed), its stderr and how long it ran.
    pub fn run_to_exit(
        bin: &str,
        socket: &Path,
        state: &Path,
        args: &[&str],
        limit: Duration,
    ) -> (Option<ExitStatus>, String, Duration) {
        let started = Instant::now();
        let mut child = command(bin, socket, state, args)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin}: {e}"));
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr, took)
    }

    pub async fn client(&self) -> PluginClient {
        PluginClient::connect(&self.socket).await.unwrap()
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn signal(&mut self, signal: Signal) -> ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        self.child.wait().unwrap()
    }
}

/// `bin --socket <socket> --state-dir <state> <args>`, asking no dockerd unless `args` names one.
fn command(bin: &str, socket: &Path, state: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(bin);
    command.env("NETLOOM_DOCKER_HOST", "none").arg("--socket").arg(socket).arg("--state-dir").arg(state).args(args);
    command
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
