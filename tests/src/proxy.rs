//! A plugin socket between dockerd and a driver that can swallow requests: the requests whose
//! method the test names are answered `{}` without reaching the driver, everything else is
//! forwarded. With `NetworkDriver.DeleteNetwork` swallowed, `docker network rm` succeeds and the
//! driver never hears of it: Docker forgets a network behind the driver's back, as it does when
//! dockerd 20.10 retries a call to a driver that died with an empty body.
//!
//! A trap (`arm`) runs an action, e.g. SIGKILL the driver, when a given request arrives: before
//! it reaches the driver, or after the driver did it but before dockerd hears the answer.
//!
//! It runs in the test process, listening on a path inside the host (`Host::path_inside`), one
//! request per connection (answered with `Connection: close`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long one request (from dockerd, and the driver's answer) may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(120);
/// How often the accept loop looks at its stop flag while no connection comes.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// One request dockerd sent through the proxy.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    /// `NetworkDriver.DeleteNetwork`, `Plugin.Activate`, ...
    pub method: String,
    pub body: Vec<u8>,
    /// Answered `{}` by the proxy instead of the driver.
    pub swallowed: bool,
}

impl ProxiedRequest {
    /// The body as JSON (`Null` for an empty or unreadable one).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// When an armed trap's action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// The request never reaches the driver; dockerd's connection is closed unanswered.
    BeforeForwarding,
    /// The driver did what was asked, but dockerd's connection is closed unanswered.
    BeforeAnswering,
}

struct Trap {
    methods: Vec<String>,
    moment: Moment,
    action: Box<dyn FnOnce() + Send>,
}

struct Shared {
    upstream: PathBuf,
    swallow: Mutex<BTreeSet<String>>,
    trap: Mutex<Option<Trap>>,
    seen: Mutex<Vec<ProxiedRequest>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves `listen` and forwards to `upstream` until dropped (then the socket file is removed).
pub struct PluginProxy {
    shared: Arc<Shared>,
    listen: PathBuf,
    acceptor: Option<JoinHandle<()>>,
}

impl PluginProxy {
    /// Listens on `listen` (a stale socket file there is replaced) and forwards every request to
    /// the driver serving `upstream`, until told to swallow some.
    pub fn start(listen: &Path, upstream: &Path) -> Result<PluginProxy> {
        let _ = std::fs::remove_file(listen);
        let listener = UnixListener::bind(listen).with_context(|| format!("proxy: binding {}", listen.display()))?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_path_buf(),
            swallow: Mutex::new(BTreeSet::new()),
            trap: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let for_thread = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("plugin-proxy".into())
            .spawn(move || accept_loop(listener, for_thread))
            .context("starting the proxy's thread")?;
        Ok(PluginProxy { shared, listen: listen.to_path_buf(), acceptor: Some(acceptor) })
    }

    /// From now on, requests for these methods (e.g. `NetworkDriver.DeleteNetwork`) are answered
    /// `{}` by the proxy and never reach the driver.
    pub fn swallow(&self, methods: &[&str]) {
        lock(&self.shared.swallow).extend(methods.iter().map(|m| m.to_string()));
    }

    /// From now on every request reaches the driver again.
    pub fn forward_all(&self) {
        lock(&self.shared.swallow).clear();
    }

    /// The next request for one of `methods` runs `action` at `moment` (once), and dockerd gets
    /// no answer to it. Replaces a trap still armed.
    pub fn arm(&self, methods: &[&str], moment: Moment, action: impl FnOnce() + Send + 'static) {
        let methods = methods.iter().map(|m| m.to_string()).collect();
        *lock(&self.shared.trap) = Some(Trap { methods, moment, action: Box::new(action) });
    }

    /// Removes the trap; true if it was still armed (it never went off).
    pub fn disarm(&self) -> bool {
        lock(&self.shared.trap).take().is_some()
    }

    /// Every request seen so far, in order of arrival.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.shared.seen).clone()
    }

    /// The bodies of the swallowed requests for `method`.
    pub fn swallowed(&self, method: &str) -> Vec<serde_json::Value> {
        lock(&self.shared.seen).iter().filter(|r| r.swallowed && r.method == method).map(|r| r.json()).collect()
    }
}

impl Drop for PluginProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.listen);
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let shared = shared.clone();
                let _ = std::thread::Builder::new().name("plugin-proxy-conn".into()).spawn(move || {
                    if let Err(e) = serve(conn, &shared) {
                        eprintln!("[netloom-tests] plugin proxy: {e:#}");
                    }
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                eprintln!("[netloom-tests] plugin proxy: accept failed: {e}");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// An HTTP/1.1 request as read off the socket.
struct Request {
    request_line: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Request {
    fn method(&self) -> String {
        let path = self.request_line.split_whitespace().nth(1).unwrap_or_default();
        path.trim_start_matches('/').to_string()
    }

    /// The request again, as one that closes its connection after the answer.
    fn to_bytes_closing(&self) -> Vec<u8> {
        let mut out = format!("{}\r\n", self.request_line);
        for h in &self.headers {
            if !header_is(h, "connection") && !header_is(h, "keep-alive") {
                out.push_str(h);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn header_is(line: &str, name: &str) -> bool {
    line.split_once(':').is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
}

fn read_request(conn: &UnixStream) -> Result<Option<Request>> {
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the connection closed inside the request's headers");
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        if header_is(&line, "transfer-encoding") {
            bail!("a chunked request body is not supported: {line}");
        }
        if header_is(&line, "content-length") {
            let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or_default();
            length = value.parse().with_context(|| format!("bad Content-Length {value:?}"))?;
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request { request_line: request_line.trim_end().to_string(), headers, body }))
}

fn serve(mut conn: UnixStream, shared: &Shared) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(REQUEST_LIMIT))?;
    let Some(request) = read_request(&conn)? else { return Ok(()) };
    let method = request.method();
    let swallowed = lock(&shared.swallow).contains(&method);
    lock(&shared.seen).push(ProxiedRequest { method: method.clone(), body: request.body.clone(), swallowed });
    if swallowed {
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )?;
        return Ok(());
    }
    let trap = {
        let mut armed = lock(&shared.trap);
        match armed.as_ref() {
            Some(t) if t.methods.contains(&method) => armed.take(),
            _ => None,
        }
    };
    if let Some(Trap { moment: Moment::BeforeForwarding, action, .. }) = trap {
        action();
        return Ok(());
    }
    // A driver that is down: the connection just closes, as a dying plugin's would.
    let mut upstream = UnixStream::connect(&shared.upstream)
        .with_context(|| format!("{method}: the driver's socket {} does not answer", shared.upstream.display()))?;
    upstream.set_read_timeout(Some(REQUEST_LIMIT))?;
    upstream.write_all(&request.to_bytes_closing())?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).with_context(|| format!("{method}: reading the driver's answer"))?;
    if let Some(trap) = trap {
        (trap.action)();
        return Ok(());
    }
    conn.write_all(&answer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in driver answering every request with its method, one request per connection.
    fn fake_driver(path: &Path) -> JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let Some(request) = read_request(&conn).unwrap() else { continue };
                assert!(request.headers.iter().any(|h| h == "Connection: close"), "{:?}", request.headers);
                let body = format!("{{\"Heard\":\"{}\"}}", request.method());
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                conn.write_all(answer.as_bytes()).unwrap();
            }
        })
    }

    /// The whole answer, empty when the connection closed without one.
    fn call_with(socket: &Path, method: &str, body: &str) -> String {
        let mut conn = UnixStream::connect(socket).unwrap();
        let request = format!(
            "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        answer
    }

    fn call_raw(socket: &Path, method: &str) -> String {
        call_with(socket, method, "{}")
    }

    /// The answer's body.
    fn call(socket: &Path, method: &str, body: &str) -> String {
        call_with(socket, method, body).split_once("\r\n\r\n").unwrap().1.to_string()
    }

    #[test]
    fn forwards_unless_told_to_swallow() {
        let dir = std::env::temp_dir().join(format!("netloom-proxy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (driver, front) = (dir.join("driver.sock"), dir.join("front.sock"));
        let _ = std::fs::remove_file(&driver);
        fake_driver(&driver);
        let proxy = PluginProxy::start(&front, &driver).unwrap();

        assert_eq!(call(&front, "NetworkDriver.DeleteNetwork", "{}"), r#"{"Heard":"NetworkDriver.DeleteNetwork"}"#);
        proxy.swallow(&["NetworkDriver.DeleteNetwork"]);
        assert_eq!(call(&front, "NetworkDriver.DeleteNetwork", r#"{"NetworkID":"n1"}"#), "{}");
        assert_eq!(call(&front, "NetworkDriver.Leave", "{}"), r#"{"Heard":"NetworkDriver.Leave"}"#);
        assert_eq!(proxy.swallowed("NetworkDriver.DeleteNetwork"), vec![serde_json::json!({"NetworkID": "n1"})]);
        proxy.forward_all();
        assert_eq!(call(&front, "NetworkDriver.DeleteNetwork", "{}"), r#"{"Heard":"NetworkDriver.DeleteNetwork"}"#);
        assert_eq!(proxy.requests().len(), 4);

        for moment in [Moment::BeforeForwarding, Moment::BeforeAnswering] {
            let went_off = Arc::new(AtomicBool::new(false));
            let flag = went_off.clone();
            proxy.arm(&["NetworkDriver.Join"], moment, move || flag.store(true, Ordering::SeqCst));
            assert_eq!(call(&front, "NetworkDriver.Leave", "{}"), r#"{"Heard":"NetworkDriver.Leave"}"#);
            assert!(!went_off.load(Ordering::SeqCst), "another method set the trap off");
            assert_eq!(call_raw(&front, "NetworkDriver.Join"), "", "{moment:?}: dockerd got an answer");
            assert!(went_off.load(Ordering::SeqCst) && !proxy.disarm(), "{moment:?}: the trap did not go off");
        }

        drop(proxy);
        assert!(!front.exists(), "the proxy's socket outlived it");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
