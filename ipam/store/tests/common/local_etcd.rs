//! One etcd on loopback for a test, with whatever extra options the test gives (TLS, ...),
//! killed by PID and its directory removed when dropped.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalEtcd {
    child: Child,
    log: PathBuf,
    client_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl LocalEtcd {
    /// Starts etcd with its data and log in `dir`, serving clients over `scheme` (http or https)
    /// with `extra` options, and waits until it says it serves clients.
    pub fn start(dir: &Path, scheme: &str, extra: &[String]) -> Self {
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = dir.join("etcd.log");
        let log_file = File::create(&log).expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("starting etcd (apt-get install etcd-server)");
        let mut etcd = LocalEtcd { child, log, client_port };
        etcd.wait_serving();
        etcd
    }

    pub fn url(&self) -> String {
        format!("etcd://127.0.0.1:{}", self.client_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_serving(&mut self) {
        let started = Instant::now();
        while !self.log().contains("serving client traffic") || !self.log().contains("cluster version is updated") {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited with {status}; log:\n{}", self.log());
            }
            assert!(started.elapsed() < Duration::from_secs(20), "etcd not serving after 20 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
