//! A fake Engine API on a unix socket for the client's and the loop's tests: plain HTTP/1.1
//! written by hand, so the client is tested against bytes, not against another HTTP library.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// What the fake answers to one request.
pub(crate) enum Reply {
    Json(u16, String),
    /// A chunked stream: each line after its delay, then the end of the stream.
    Stream(Vec<(Duration, String)>),
}

type Routes = dyn Fn(&str) -> Reply + Send + Sync;

pub(crate) struct FakeDocker {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDocker {
    /// Serves `routes` (given the request target, e.g. `/v1.41/networks?filters=...`).
    pub(crate) fn start(routes: impl Fn(&str) -> Reply + Send + Sync + 'static) -> FakeDocker {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        Self::start_at(dir, socket, routes)
    }

    /// Like `start`, on `socket` (in `dir`, kept until the fake is dropped).
    pub(crate) fn start_at(
        dir: tempfile::TempDir,
        socket: PathBuf,
        routes: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> FakeDocker {
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let routes: Arc<Routes> = Arc::new(routes);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, routes.clone(), seen.clone()));
            }
        });
        FakeDocker { _dir: dir, socket, requests, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The request targets seen so far.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `/version` answer of a dockerd speaking `api`.
pub(crate) fn version(api: &str) -> Reply {
    Reply::Json(200, format!(r#"{{"Version":"fake","ApiVersion":"{api}","MinAPIVersion":"1.12"}}"#))
}

pub(crate) fn not_found(what: &str) -> Reply {
    Reply::Json(404, format!(r#"{{"message":"{what} not found"}}"#))
}

async fn answer(mut stream: UnixStream, routes: Arc<Routes>, seen: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    seen.lock().unwrap().push(target.clone());
    match routes(&target) {
        Reply::Json(status, body) => {
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
        Reply::Stream(lines) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for (delay, line) in lines {
                tokio::time::sleep(delay).await;
                let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = stream.write_all(b"0\r\n\r\n").await;
        }
    }
}
