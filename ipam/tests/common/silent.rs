//! A TCP listener that accepts connections and never answers: a hung store.

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct Silent {
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        Silent { endpoint, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
