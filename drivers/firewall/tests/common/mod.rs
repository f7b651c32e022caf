//! A small lab of network namespaces for the firewall tests. Nothing here touches the root
//! namespace: every command runs with `ip -n <ns>` / `ip netns exec <ns>`, and all firewall calls
//! and sockets run on threads that entered the lab's namespaces (setns) before doing anything.
//! Namespaces are deleted on drop, panics included.

#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netloom_firewall::{BackendKind, Firewall, NetworkPolicy, PortMapping, Proto};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Fails (does not skip) when the tests cannot run here.
pub fn require_root_and_tools() {
    assert!(nix::unistd::geteuid().is_root(), "the firewall integration tests must run as root");
    for tool in ["ip", "iptables", "iptables-save", "nft"] {
        let ok = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
            || Command::new(tool).arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
        assert!(ok, "{tool} is needed by the firewall integration tests");
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(role: &str) -> Ns {
        let name = format!("fwt-{}-{}-{role}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Ns { name };
        ns.ip("link set lo up");
        ns
    }

    pub fn ip(&self, args: &str) -> String {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args.split_whitespace()))
    }

    /// A shell command inside the namespace.
    pub fn sh(&self, cmd: &str) -> String {
        run(Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", cmd]))
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.sh(&format!("sysctl -qw {key}={value}"));
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name);
            f()
        })
        .join()
        .expect("thread in netns panicked")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}

/// Moves the calling thread into a named namespace.
pub fn enter(name: &str) {
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime, &Arc<dyn Firewall>) + Send>;

/// A firewall opened inside a namespace, driven from a dedicated thread that lives there (its
/// tokio runtime, blocking pool and child processes inherit that namespace).
pub struct Fw {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Fw {
    pub fn open(ns: &Ns, kind: BackendKind) -> Fw {
        let name = ns.name.clone();
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || {
            enter(&name);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let fw = match rt.block_on(netloom_firewall::open(kind)) {
                Ok(fw) => {
                    ready_tx.send(Ok(())).unwrap();
                    fw
                }
                Err(e) => {
                    ready_tx.send(Err(format!("{e:#}"))).unwrap();
                    return;
                }
            };
            for job in rx {
                job(&rt, &fw);
            }
        });
        ready_rx.recv().unwrap().expect("opening the firewall");
        Fw { tx: Some(tx), thread: Some(thread) }
    }

    /// Runs `f(firewall)` to completion in the namespace.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce(Arc<dyn Firewall>) -> BoxFut<T> + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |rt, fw| {
            let out = rt.block_on(f(fw.clone()));
            let _ = tx.send(out);
        });
        self.tx.as_ref().unwrap().send(job).unwrap();
        rx.recv().expect("firewall thread died")
    }

    /// Runs a plain closure on the firewall's thread (in its namespace).
    pub fn on_thread<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.call(move |_| Box::pin(async move { f() }))
    }
}

impl Drop for Fw {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server in a namespace answering every connection with "<name> <peer ip>\n".
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &Ns, port: u16, name: &str) -> Server {
        Self::start_on(ns, "0.0.0.0", port, name)
    }

    /// On `[::]` (dual-stack: use a port no IPv4 server of the namespace uses).
    pub fn start6(ns: &Ns, port: u16, name: &str) -> Server {
        Self::start_on(ns, "::", port, name)
    }

    /// On one address (e.g. 127.0.0.1).
    pub fn start_on(ns: &Ns, addr: &str, port: u16, name: &str) -> Server {
        let (ns_name, name, addr) = (ns.name.clone(), name.to_string(), addr.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&ns_name);
            let l = TcpListener::bind((addr.as_str(), port)).expect("bind");
            l.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = writeln!(s, "{name} {}", peer.ip());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ready_rx.recv().unwrap();
        Server { stop, thread: Some(thread) }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a connection from `ns` to `to` got: Some("<server> <peer ip as the server saw it>").
pub fn probe(ns: &Ns, to: &str) -> Option<String> {
    let to: SocketAddr = to.parse().expect("socket address");
    ns.run(move || connect(to))
}

fn connect(to: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(700)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let out = out.trim().to_string();
    (!out.is_empty()).then_some(out)
}

/// Several probes at once (negative ones each wait for the connect timeout).
pub fn probes(list: &[(&Ns, &str)]) -> Vec<Option<String>> {
    let handles: Vec<_> = list
        .iter()
        .map(|(ns, to)| {
            let name = ns.name.clone();
            let to: SocketAddr = to.parse().expect("socket address");
            std::thread::spawn(move || {
                enter(&name);
                connect(to)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// The firewall as `iptables-save` and `nft list ruleset` print it, without counters and dates.
pub fn snapshot(ns: &Ns) -> String {
    let ipt = ns.sh("iptables-save | grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'");
    let ip6t = ns.sh("ip6tables-save | grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'");
    let nft = ns.sh("nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+//'");
    format!("{ipt}\n---\n{ip6t}\n---\n{nft}")
}

/// `snapshot` without what only says which tables exist: table headers, built-in chains with
/// their policies, empty base chains. iptables-nft leaves a table netloom's first rule made it
/// create (e.g. `raw` for the loopback guard) in place, empty, after everything is removed.
pub fn rules_of(snapshot: &str) -> String {
    const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
    snapshot
        .lines()
        .filter(|l| {
            let t = l.trim();
            let builtin_policy = t.starts_with(':') && BUILTIN.iter().any(|b| t[1..].starts_with(&format!("{b} ")));
            let builtin_chain = t.starts_with("chain ") && BUILTIN.iter().any(|b| t == format!("chain {b} {{"));
            !(t.is_empty()
                || t.starts_with('*')
                || t == "COMMIT"
                || t == "}"
                || t.starts_with("table ")
                || t.starts_with("type ")
                || builtin_policy
                || builtin_chain)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Counts the UDP datagrams a socket in a namespace receives.
pub struct UdpCounter {
    pub count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpCounter {
    pub fn start(ns: &Ns, addr: &str) -> UdpCounter {
        let (ns_name, addr) = (ns.name.clone(), addr.to_string());
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (count.clone(), stop.clone());
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            enter(&ns_name);
            let s = std::net::UdpSocket::bind(addr.as_str()).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if s.recv_from(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        ready_rx.recv().unwrap();
        UdpCounter { count, stop, thread: Some(thread) }
    }

    /// The count once no datagram has come for a while.
    pub fn settled(&self) -> usize {
        let mut last = self.count.load(Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.count.load(Ordering::SeqCst);
            if now == last {
                return now;
            }
            last = now;
        }
    }

    pub fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `n` UDP datagrams from a namespace (from `from`, or any address) to `to`.
pub fn send_udp(ns: &Ns, from: Option<&str>, to: &str, n: usize) {
    let to: SocketAddr = to.parse().expect("socket address");
    let from =
        from.map(str::to_string).unwrap_or_else(|| if to.is_ipv6() { "[::]:0".into() } else { "0.0.0.0:0".into() });
    ns.run(move || {
        let s = std::net::UdpSocket::bind(from.as_str()).expect("bind sender");
        for i in 0..n {
            let _ = s.send_to(format!("probe {i}").as_bytes(), to);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

/// Bridge + veth "containers" in a host namespace.
pub struct Lab {
    pub containers: Vec<(String, Ns)>,
    /// A real dockerd in `host`, stopped before the namespaces go (field order = drop order).
    pub dockerd: Option<Dockerd>,
    pub client: Ns,
    pub host: Ns,
}

/// Docker 20.10's dockerd running in a lab namespace with its own /run, /etc/docker and data
/// root (the way tests/src/node.rs sets up a node, trimmed: no pid namespace), killed on drop.
pub struct Dockerd {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

const DOCKERD_SCRIPT: &str = r#"set -eu
mount -t tmpfs -o mode=0755 fwtest-run /run
mkdir -p /run/docker /run/containerd /run/lock /run/fwtest-cgroup
if [ -d /etc/docker ]; then mount -t tmpfs -o mode=0755 fwtest-etc /etc/docker; fi
mount --rbind /sys/fs/cgroup /run/fwtest-cgroup
mount -t sysfs fwtest-sys /sys
mount --move /run/fwtest-cgroup /sys/fs/cgroup
exec dockerd --data-root "$1/data" --exec-root /run/docker --pidfile /run/docker.pid \
    -H unix:///run/docker.sock --bip "$2" --iptables=true --ip6tables=false --userland-proxy=false \
    >"$1/dockerd.log" 2>&1
"#;

impl Dockerd {
    fn start(ns: &Ns, bip: &str) -> Dockerd {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", ns.name))
            .args(["unshare", "-m", "--propagation", "private", "sh", "-c", DOCKERD_SCRIPT, "sh"])
            .arg(dir.path())
            .arg(bip);
        // SAFETY: only the async-signal-safe prctl syscall runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().expect("starting dockerd (is docker.io installed?)");
        let d = Dockerd { child, _dir: dir };
        let ready = wait_until(Duration::from_secs(40), || {
            let out =
                Command::new("ip").args(["netns", "exec", &ns.name, "iptables", "-w", "-S", "DOCKER-USER"]).output();
            out.map(|o| o.status.success()).unwrap_or(false)
                && Command::new("ip")
                    .args(["-n", &ns.name, "link", "show", "docker0"])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
        });
        if !ready {
            let log = std::fs::read_to_string(d._dir.path().join("dockerd.log")).unwrap_or_default();
            panic!("dockerd did not set up its rules in 40 s; log:\n{log}");
        }
        d
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if !wait_until(Duration::from_secs(15), || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Lab {
    /// host ⟷ client on 198.18.0.0/24 (host .1, client .2).
    pub fn new() -> Lab {
        require_root_and_tools();
        let host = Ns::new("host");
        let client = Ns::new("client");
        host.ip(&format!("link add up0 type veth peer name eth0 netns {}", client.name));
        host.ip("addr add 198.18.0.1/24 dev up0");
        host.ip("link set up0 up");
        client.ip("addr add 198.18.0.2/24 dev eth0");
        client.ip("link set eth0 up");
        host.sysctl("net.ipv4.ip_forward", "1");
        Lab { containers: Vec::new(), dockerd: None, client, host }
    }

    pub fn bridge(&self, name: &str, gateway: &str) {
        self.host.ip(&format!("link add {name} type bridge"));
        self.host.ip(&format!("addr add {gateway} dev {name}"));
        self.host.ip(&format!("link set {name} up"));
    }

    /// A container namespace with eth0 = `addr` on `bridge`, default route via `gw`; the host
    /// end gets hairpin mode, as the dataplane does.
    pub fn container(&mut self, name: &str, bridge: &str, addr: &str, gw: &str) -> usize {
        let ns = Ns::new(name);
        let veth = format!("v{name}");
        self.host.ip(&format!("link add {veth} type veth peer name eth0 netns {}", ns.name));
        self.host.ip(&format!("link set {veth} master {bridge}"));
        self.host.ip(&format!("link set {veth} type bridge_slave hairpin on"));
        self.host.ip(&format!("link set {veth} up"));
        ns.ip(&format!("addr add {addr} dev eth0"));
        ns.ip("link set eth0 up");
        ns.ip(&format!("route add default via {gw}"));
        self.containers.push((name.to_string(), ns));
        self.containers.len() - 1
    }

    pub fn c(&self, name: &str) -> &Ns {
        &self.containers.iter().find(|(n, _)| n == name).expect("container").1
    }

    /// Starts a real dockerd (20.10, userland proxy off) in the host namespace, on a fresh-host
    /// footing (ip_forward 0, so dockerd turns it on and sets FORWARD's policy to DROP), and puts
    /// a "container" d1 on its docker0.
    pub fn real_dockerd(&mut self, gateway: &str, container_addr: &str) {
        self.host.sysctl("net.ipv4.ip_forward", "0");
        self.dockerd = Some(Dockerd::start(&self.host, gateway));
        assert!(self.host.sh("iptables -w -S FORWARD").contains("-P FORWARD DROP"), "dockerd did not set DROP");
        let gw = gateway.split('/').next().unwrap().to_string();
        self.container("d1", "docker0", container_addr, &gw);
    }

    /// What dockerd 20.10 sets up for docker0 with one container and the userland proxy off
    /// (cnm-protocol.md §4.1; compared with a real dockerd's `iptables-save`), and the FORWARD
    /// policy DROP.
    pub fn dockerlike(&mut self, subnet: &str, gateway: &str, container_addr: &str) {
        self.bridge("docker0", gateway);
        let gw = gateway.split('/').next().unwrap().to_string();
        self.container("d1", "docker0", container_addr, &gw);
        let rules = [
            "-P FORWARD DROP",
            "-N DOCKER",
            "-N DOCKER-USER",
            "-N DOCKER-ISOLATION-STAGE-1",
            "-N DOCKER-ISOLATION-STAGE-2",
            "-A DOCKER-USER -j RETURN",
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
            "-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            "-A FORWARD -o docker0 -j DOCKER",
            "-A FORWARD -i docker0 ! -o docker0 -j ACCEPT",
            "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
            "-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2",
            "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
            "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP",
            "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
            "-t nat -N DOCKER",
            "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-t nat -A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER",
        ];
        for r in rules {
            self.host.sh(&format!("iptables -w {r}"));
        }
        self.host.sh("iptables -w -t nat -A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE");
        self.host.sh(&format!("iptables -w -t nat -A POSTROUTING -s {subnet} ! -o docker0 -j MASQUERADE"));
    }
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub const NET_A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
pub const EP1: &str = "e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1";

/// An isolated network with masquerade and icc, as loom-bridge makes by default.
pub fn policy(id: &str, bridge: &str, subnet: &str) -> NetworkPolicy {
    NetworkPolicy {
        network_id: id.into(),
        bridge: bridge.into(),
        subnets: vec![subnet.parse().unwrap()],
        masquerade: true,
        snat_source: None,
        icc: true,
        internal: false,
        isolate: true,
    }
}

pub fn tcp(host_ip: Option<&str>, host_port: u16, container: &str, container_port: u16) -> PortMapping {
    PortMapping {
        proto: Proto::Tcp,
        host_ip: host_ip.map(|h| h.parse::<std::net::IpAddr>().unwrap()),
        host_port,
        container_ip: container.parse().unwrap(),
        container_port,
    }
}
