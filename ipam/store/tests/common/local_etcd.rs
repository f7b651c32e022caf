//! One etcd on loopback for a test, with whatever extra options the test gives (TLS, ...),
//! killed by PID when dropped. Shared by the store's and the IPAM's tests.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalEtcd {
    child: Option<Child>,
    dir: PathBuf,
    scheme: String,
    extra: Vec<String>,
    log: PathBuf,
    client_port: u16,
    peer_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl LocalEtcd {
    /// Starts etcd with its data and log in `dir`, serving clients over `scheme` (http or https)
    /// with `extra` options, and waits until it says it serves clients.
    pub fn start(dir: &Path, scheme: &str, extra: &[String]) -> Self {
        let mut etcd = LocalEtcd {
            child: None,
            dir: dir.to_path_buf(),
            scheme: scheme.to_string(),
            extra: extra.to_vec(),
            log: dir.join("etcd.log"),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn(false);
        etcd
    }

    /// `host:port` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn(true);
    }

    fn spawn(&mut self, restarted: bool) {
        let client = format!("{}://{}", self.scheme, self.endpoint());
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log_file = File::create(&self.log).expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn();
        match child {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("the `etcd` binary is not installed; these tests need a real etcd: apt-get install etcd-server")
            }
            Err(e) => panic!("starting etcd: {e}"),
        }
        self.wait_serving(restarted);
    }

    /// A new member says it set the cluster version; one restarted on its data says it published
    /// itself to the cluster, which is already at its version.
    fn wait_serving(&mut self, restarted: bool) {
        let ready = if restarted { "published local member to cluster" } else { "cluster version is updated" };
        let started = Instant::now();
        while !self.log().contains("serving client traffic") || !self.log().contains(ready) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("etcd exited with {status}; log:\n{}", self.log());
            }
            assert!(started.elapsed() < Duration::from_secs(20), "etcd not serving after 20 s; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}
