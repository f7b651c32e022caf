//! A real etcd on loopback for one test, in a directory of its own, killed when dropped.

use super::local_etcd::LocalEtcd;

pub struct Etcd {
    // Dropped first: etcd stops before its directory goes.
    etcd: LocalEtcd,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it serves requests. Panics (the test fails) without the binary.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With extra etcd options.
    pub async fn start_with(extra: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().to_path_buf();
        let extra = extra.to_vec();
        let etcd = tokio::task::spawn_blocking(move || LocalEtcd::start(&path, "http", &extra)).await.expect("etcd");
        Etcd { etcd, _dir: dir }
    }

    /// `host:port` of the client listener.
    pub fn endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    pub fn url(&self) -> String {
        self.etcd.url()
    }

    pub fn stop(&mut self) {
        self.etcd.stop();
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        tokio::task::block_in_place(|| self.etcd.restart());
    }
}
