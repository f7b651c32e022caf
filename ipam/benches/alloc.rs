//! Allocation throughput and latency of the IPAM over its stores, next to the raw etcd
//! transaction rate measured in the same run on the same machine.
//!
//! ```text
//! cargo bench -p netloom-ipam --bench alloc [-- --secs 3 --rounds 3 --clients 1,8]
//! ```
//!
//! Not a test: it asserts nothing and never fails on a slow machine. It starts its own etcd on
//! loopback (random free ports, data directory on the normal disk under `<target>/bench/`), runs
//! every measurement for `--secs` seconds per row, split into `--rounds` slices interleaved with
//! the other rows (so a slow spell of the disk hits the raw and the IPAM rows alike), prints one
//! table and writes it as Markdown to `<target>/bench/ipam.md`. The etcd it started is killed by PID when the run ends, also after an
//! error, Ctrl-C or SIGTERM, and gets SIGKILL from the kernel if this process dies first.
//!
//! Targets (issue 3): etcd-backed `request_address` at ≥ 50 % of the raw etcd transaction rate at
//! the same number of clients; embedded `request_address` p50 under 1 ms with a durable (fsynced)
//! commit per allocation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, Txn as EtcdTxn, TxnOp};
use netloom_ipam::store::{self, KeyValue, Revision, Store, StoreOptions, StoreResult, Txn, TxnOutcome, WatchStream};
use netloom_ipam::{Ipam, IpamConfig, OWNER_OPTION};
use tokio::sync::Barrier;

/// Size of the value the raw etcd rows write: about a bitmap chunk (128 bytes).
const RAW_VALUE_LEN: usize = 128;
/// Untimed operations per client before each row, to open connections and warm caches.
const WARMUP_OPS: usize = 20;
const TARGET_RATIO: f64 = 0.5;

/// What a bench worker returns: the latency of each timed operation.
type WorkerFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Duration>>> + Send>>;
const TARGET_EMBEDDED_P50: Duration = Duration::from_millis(1);

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("alloc bench: {e:#}");
            eprintln!("usage: cargo bench -p netloom-ipam --bench alloc [-- --secs S] [--rounds R] [--clients 1,8]");
            std::process::exit(2);
        }
    };
    // Every worker thread of the runtime is a client thread; etcd gets the rest of the machine.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing a SIGTERM handler")?;
        tokio::select! {
            r = run(&args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            _ = term.recv() => Err(anyhow!("terminated")),
        }
    });
    // `run` has dropped (and so killed) its etcd by now, whatever happened.
    if let Err(e) = result {
        eprintln!("alloc bench failed: {e:#}");
        std::process::exit(1);
    }
}

struct Args {
    /// Measured time per row, split over the rounds.
    secs: f64,
    rounds: u32,
    clients: Vec<usize>,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Args { secs: 3.0, rounds: 3, clients: vec![1, 8] };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                // cargo bench passes --bench; a libtest-style filter would be a bare word.
                "--bench" => {}
                "--secs" => {
                    args.secs = it.next().context("--secs needs a value")?.parse().context("--secs")?;
                    if args.secs.is_nan() || args.secs <= 0.0 {
                        bail!("--secs must be positive");
                    }
                }
                "--rounds" => {
                    args.rounds = it.next().context("--rounds needs a value")?.parse().context("--rounds")?;
                    if args.rounds == 0 {
                        bail!("--rounds must be at least 1");
                    }
                }
                "--clients" => {
                    let list = it.next().context("--clients needs a value like 1,8")?;
                    args.clients = list
                        .split(',')
                        .map(|c| c.trim().parse::<usize>().context("--clients"))
                        .collect::<Result<Vec<_>>>()?;
                    if args.clients.iter().any(|&c| c == 0 || c > 64) {
                        bail!("--clients: each count must be 1-64");
                    }
                }
                other => bail!("unknown argument {other:?}"),
            }
        }
        Ok(args)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.secs)
    }
}

// ---------------------------------------------------------------------------------------------
// The table

#[derive(Clone)]
struct Row {
    what: String,
    clients: usize,
    ops: u64,
    wall: Duration,
    p50: Duration,
    p99: Duration,
    /// Store calls (reads, listings, transactions) per operation, where counted.
    calls: Option<f64>,
    /// Conditional writes that failed (conflicts) per operation, where counted.
    conflicts: Option<f64>,
    /// "ratio to raw etcd" column.
    ratio: Option<f64>,
    target: String,
    verdict: String,
}

impl Row {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn render(rows: &[Row], markdown: bool) -> String {
    let header = [
        "measurement",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "store calls/op",
        "conflicts/op",
        "vs raw txn",
        "target",
        "verdict",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.what.clone(),
                r.clients.to_string(),
                format!("{:.0}", r.rate()),
                ms(r.p50),
                ms(r.p99),
                r.calls.map(|c| format!("{c:.2}")).unwrap_or_else(|| "-".into()),
                r.conflicts.map(|c| format!("{c:.3}")).unwrap_or_else(|| "-".into()),
                r.ratio.map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_else(|| "-".into()),
                r.target.clone(),
                r.verdict.clone(),
            ]
        })
        .collect();
    let mut out = String::new();
    if markdown {
        let _ = writeln!(out, "| {} |", header.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            header
                .iter()
                .enumerate()
                .map(|(i, _)| if (1..=7).contains(&i) { "---:|" } else { "---|" })
                .collect::<String>()
        );
        for row in &cells {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        return out;
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cols: Vec<&str>| -> String {
        cols.iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i] - c.chars().count();
                if (1..=7).contains(&i) {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    for row in &cells {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Latencies of every timed operation of every client, and the wall time they took together.
struct Sample {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Sample {
    fn row(mut self, what: impl Into<String>, clients: usize) -> Row {
        self.latencies.sort_unstable();
        let pct = |p: f64| -> Duration {
            if self.latencies.is_empty() {
                return Duration::ZERO;
            }
            let idx = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
            self.latencies[idx]
        };
        Row {
            what: what.into(),
            clients,
            ops: self.latencies.len() as u64,
            wall: self.wall,
            p50: pct(0.50),
            p99: pct(0.99),
            calls: None,
            conflicts: None,
            ratio: None,
            target: String::new(),
            verdict: String::new(),
        }
    }
}

/// Runs one worker per client: each does its untimed warm-up, all start the timed part together,
/// and each keeps going until `duration` has passed.
async fn measure(clients: usize, duration: Duration, worker: &Work) -> Result<Sample> {
    // One extra party: this function, which takes the start time when everybody is ready.
    let barrier = Arc::new(Barrier::new(clients + 1));
    let tasks: Vec<_> = (0..clients).map(|i| tokio::spawn(worker(i, barrier.clone(), duration))).collect();
    barrier.wait().await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("bench worker panicked")??);
    }
    Ok(Sample { latencies, wall: started.elapsed() })
}

/// The timed loop shared by the workers: `op` runs until the deadline; returns its latencies.
macro_rules! timed {
    ($barrier:expr, $duration:expr, $op:expr) => {{
        $barrier.wait().await;
        let deadline = Instant::now() + $duration;
        let mut lat = Vec::with_capacity(4096);
        while Instant::now() < deadline {
            let t = Instant::now();
            $op;
            lat.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>(lat)
    }};
}

// ---------------------------------------------------------------------------------------------
// A store wrapper that counts calls, so the table shows round-trips per allocation.

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    conflicts: AtomicU64,
}

impl Counters {
    fn take(&self) -> (u64, u64) {
        (self.calls.swap(0, Ordering::Relaxed), self.conflicts.swap(0, Ordering::Relaxed))
    }
}

struct Counting {
    inner: Arc<dyn Store>,
    counters: Arc<Counters>,
}

impl Counting {
    fn wrap(inner: Arc<dyn Store>, counters: Arc<Counters>) -> Arc<dyn Store> {
        Arc::new(Counting { inner, counters })
    }

    fn count(&self) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Store for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        self.count();
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<KeyValue>> {
        self.count();
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<Revision> {
        self.count();
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &str) -> StoreResult<bool> {
        self.count();
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> StoreResult<TxnOutcome> {
        self.count();
        let outcome = self.inner.txn(txn).await?;
        if outcome == TxnOutcome::Conflict {
            self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }
    async fn watch(&self, prefix: &str) -> StoreResult<WatchStream> {
        self.inner.watch(prefix).await
    }
    async fn put_leased(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        self.inner.put_leased(key, value).await
    }
}

// ---------------------------------------------------------------------------------------------
// etcd on loopback

struct EtcdServer {
    child: Option<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    endpoint: String,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    async fn start(parent: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("etcd-").tempdir_in(parent).context("etcd data directory")?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = File::create(&log_path).context("etcd log file")?;
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=bench")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bench={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // If this process is killed outright, the kernel takes etcd with it. The signal follows the
        // thread that spawned the child: this is the runtime's main thread (block_on), which lives
        // as long as the process.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!("the `etcd` binary is not installed (apt-get install etcd-server)"),
            _ => anyhow!("starting etcd: {e}"),
        })?;
        let mut server =
            EtcdServer { pid: child.id(), child: Some(child), dir, endpoint: format!("127.0.0.1:{client_port}") };
        server.wait_ready(&log_path).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, log: &Path) -> Result<()> {
        let started = Instant::now();
        let url = format!("http://{}", self.endpoint);
        loop {
            let probe = async {
                let mut c = Client::connect([url.as_str()], None).await?;
                c.get("ready-probe", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("etcd exited with {status}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("etcd not ready after 20 s; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("etcd://{}", self.endpoint)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill is kill(pid, SIGKILL) on this very process; wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("etcd (pid {}) killed; data directory {} removed", self.pid, self.dir.path().display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Where things live

/// `<target>/bench`: the bench binary is `<target>/<profile>/deps/alloc-<hash>`.
fn bench_dir() -> Result<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()?
            .ancestors()
            .nth(3)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")),
    };
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.canonicalize()?)
}

/// The device and file system type holding `path` (longest matching mount point).
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1])).then(|| (f[1].len(), format!("{} on {} ({})", f[0], f[1], f[2])))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
        .unwrap_or_else(|| "unknown file system".into())
}

fn command_line(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// The measurements

/// One measured configuration: how to run its clients, and what the row says about it.
struct Case {
    kind: Kind,
    what: String,
    clients: usize,
    work: Work,
    counters: Option<Arc<Counters>>,
    sample: Sample,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fsync,
    RawTxn,
    RawReadTxn,
    EtcdAlloc,
    EtcdAllocInfo,
    EmbeddedAlloc,
    Vni,
}

async fn run(args: &Args) -> Result<()> {
    let bench = bench_dir()?;
    let etcd = EtcdServer::start(&bench).await?;
    let run_id = std::process::id();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let embedded_root = tempfile::Builder::new().prefix("embedded-").tempdir_in(&bench)?;
    let mut preface = String::new();
    let _ = writeln!(
        preface,
        "netloom-ipam allocation benchmark: {} s per row, in {} interleaved rounds",
        args.secs, args.rounds
    );
    let _ = writeln!(preface, "machine: {cores} cores, shared by the bench's clients and etcd");
    let _ = writeln!(preface, "etcd: {} (pid {}) on {}", command_line("etcd", "--version"), etcd.pid, etcd.endpoint);
    let _ = writeln!(preface, "etcd data: {} on {}", etcd.dir.path().display(), filesystem_of(etcd.dir.path()));
    let _ = writeln!(
        preface,
        "embedded store: {} on {}",
        embedded_root.path().display(),
        filesystem_of(embedded_root.path())
    );
    print!("{preface}");

    let mut cases = Vec::new();
    let mut add = |kind: Kind, what: &str, clients: usize, counters: Option<Arc<Counters>>, work| {
        cases.push(Case {
            kind,
            what: what.to_string(),
            clients,
            work,
            counters,
            sample: Sample { latencies: Vec::new(), wall: Duration::ZERO },
        })
    };

    // Reference: what the disk itself costs per durable write.
    let probe = embedded_root.path().join("fsync-probe");
    add(Kind::Fsync, "disk: write 128 B + fsync, in the embedded store's directory", 1, None, fsync_worker(probe));

    // 1. raw etcd transactions, and the floor of a read-then-write allocator.
    for &n in &args.clients {
        let work = raw_worker(etcd.endpoint.clone(), format!("/netloom-bench-{run_id}/raw/{n}/"), false);
        add(Kind::RawTxn, "etcd raw: Txn(mod_revision == r) put, 1 key per client", n, None, work);
    }
    for &n in &args.clients {
        let work = raw_worker(etcd.endpoint.clone(), format!("/netloom-bench-{run_id}/rawrw/{n}/"), true);
        add(Kind::RawReadTxn, "etcd raw: Get, then Txn(mod_revision == r) put", n, None, work);
    }

    // 2. etcd-backed request_address: one host (Ipam + its own etcd connection) per client.
    let options = |what: &str, n: usize| StoreOptions {
        prefix: format!("/netloom-bench-{run_id}/{what}-{n}/"),
        ..StoreOptions::default()
    };
    for &n in &args.clients {
        let (ipams, counters) = etcd_hosts(&etcd, options("own", n), n).await?;
        let mut pools = Vec::new();
        for (i, ipam) in ipams.iter().enumerate() {
            pools.push(own_pool(ipam, i).await?);
        }
        let work = alloc_worker(ipams, pools, &counters);
        add(Kind::EtcdAlloc, "etcd: request_address, 1 host per client, own pool each", n, Some(counters), work);
    }
    // Several hosts in one pool: they contend for the same bitmap chunk.
    for &n in args.clients.iter().filter(|&&n| n > 1) {
        let (ipams, counters) = etcd_hosts(&etcd, options("shared", n), n).await?;
        let shared = own_pool(&ipams[0], 0).await?;
        for ipam in &ipams[1..] {
            ipam.request_pool("GlobalDefault", &subnet_of(0), "", &BTreeMap::new(), false).await?;
        }
        let work = alloc_worker(ipams, vec![shared; n], &counters);
        add(Kind::EtcdAllocInfo, "etcd: request_address, 1 host per client, all in one pool", n, Some(counters), work);
    }
    // One host, concurrent requests in one pool (containers of one network starting together).
    for &n in args.clients.iter().filter(|&&n| n > 1) {
        let (ipams, counters) = etcd_hosts(&etcd, options("onehost", n), 1).await?;
        let pool = own_pool(&ipams[0], 0).await?;
        let work = alloc_worker(vec![ipams[0].clone(); n], vec![pool; n], &counters);
        add(
            Kind::EtcdAllocInfo,
            "etcd: request_address, 1 host, concurrent requests in one pool",
            n,
            Some(counters),
            work,
        );
    }

    // 3. embedded: one host, one redb file, an fsync per commit.
    for &n in &args.clients {
        let counters = Arc::new(Counters::default());
        let store = store::open(None, &embedded_root.path().join(format!("state-{n}")), store::DEFAULT_PREFIX).await?;
        let ipam = Arc::new(Ipam::new(Counting::wrap(store, counters.clone()), "bench", IpamConfig::default()).await?);
        let mut pools = Vec::new();
        for i in 0..n {
            pools.push(own_pool(&ipam, i).await?);
        }
        let work = alloc_worker(vec![ipam; n], pools, &counters);
        add(Kind::EmbeddedAlloc, "embedded: request_address, own pool per client", n, Some(counters), work);
    }

    // 4. VNIs, one client, a new owner each time.
    {
        let (ipams, counters) = etcd_hosts(&etcd, options("vni", 1), 1).await?;
        add(Kind::Vni, "etcd: allocate_vni, new owner each", 1, Some(counters), vni_worker(ipams[0].clone()));
        let counters = Arc::new(Counters::default());
        let store = store::open(None, &embedded_root.path().join("vni"), store::DEFAULT_PREFIX).await?;
        let ipam = Arc::new(Ipam::new(Counting::wrap(store, counters.clone()), "bench", IpamConfig::default()).await?);
        add(Kind::Vni, "embedded: allocate_vni, new owner each", 1, Some(counters), vni_worker(ipam));
    }

    // Rounds: every case runs a slice of its time in each, so a slow spell of the disk or the
    // machine hits the raw and the IPAM rows alike.
    let slice = args.duration() / args.rounds;
    for round in 1..=args.rounds {
        for case in &mut cases {
            let sample = measure(case.clients, slice, &case.work).await.with_context(|| case.what.clone())?;
            case.sample.latencies.extend(sample.latencies);
            case.sample.wall += sample.wall;
        }
        eprintln!("round {round}/{} done", args.rounds);
    }

    let mut rows = Vec::new();
    let mut raw_rate = BTreeMap::new();
    let mut fsync_p50 = Duration::ZERO;
    let mut embedded_p50 = None;
    for case in cases {
        let mut row = case.sample.row(case.what, case.clients);
        if let Some(counters) = &case.counters {
            // Warm-up operations are counted too: spread the counts over every operation that ran.
            let (calls, conflicts) = counters.take();
            let ops = row.ops as f64 + (WARMUP_OPS * row.clients) as f64 * f64::from(args.rounds);
            row.calls = Some(calls as f64 / ops);
            row.conflicts = Some(conflicts as f64 / ops);
        }
        let raw = raw_rate.get(&row.clients).copied();
        match case.kind {
            Kind::Fsync => {
                fsync_p50 = row.p50;
                row.target = "reference".into();
            }
            Kind::RawTxn => {
                raw_rate.insert(row.clients, row.rate());
                row.target = "reference".into();
            }
            Kind::RawReadTxn => {
                row.ratio = raw.map(|raw| row.rate() / raw);
                row.target = "reference".into();
            }
            Kind::EtcdAlloc => {
                row.ratio = raw.map(|raw| row.rate() / raw);
                row.target = format!("≥ {:.0}% of raw", TARGET_RATIO * 100.0);
                row.verdict = match row.ratio {
                    Some(x) if x >= TARGET_RATIO => "PASS".into(),
                    Some(_) => "MISS".into(),
                    None => "-".into(),
                };
            }
            Kind::EtcdAllocInfo => {
                row.ratio = raw.map(|raw| row.rate() / raw);
                row.target = "info".into();
            }
            Kind::EmbeddedAlloc if row.clients == 1 => {
                embedded_p50 = Some(row.p50);
                row.target = format!("p50 < {} ms", TARGET_EMBEDDED_P50.as_millis());
                row.verdict = if row.p50 < TARGET_EMBEDDED_P50 {
                    "PASS".into()
                } else if fsync_p50 >= TARGET_EMBEDDED_P50 {
                    format!("MISS: disk fsync p50 is {} ms", ms(fsync_p50))
                } else {
                    "MISS".into()
                };
            }
            Kind::EmbeddedAlloc => row.target = "info".into(),
            Kind::Vni => {
                if row.what.starts_with("etcd") {
                    row.ratio = raw.map(|raw| row.rate() / raw);
                }
                row.target = "info".into();
            }
        }
        rows.push(row);
    }

    let mut notes = String::new();
    let _ =
        writeln!(notes, "ops/s: operations of all clients together per second of wall time; p50/p99: per operation.");
    let _ = writeln!(notes, "vs raw txn: ops/s over the raw etcd Txn rate with the same number of clients.");
    let _ =
        writeln!(notes, "store calls/op: gets, listings and transactions the IPAM sent to its store per operation.");
    if let Some(p50) = embedded_p50 {
        let _ = writeln!(
            notes,
            "embedded request_address p50 {} ms; a bare fsync on the same disk: p50 {} ms.",
            ms(p50),
            ms(fsync_p50)
        );
    }
    println!();
    print!("{}", render(&rows, false));
    println!();
    print!("{notes}");

    let md_path = bench.join("ipam.md");
    let mut md = String::from("# netloom-ipam allocation benchmark\n\n");
    let _ = writeln!(md, "`cargo bench -p netloom-ipam --bench alloc`\n");
    for line in preface.lines() {
        let _ = writeln!(md, "- {line}");
    }
    md.push('\n');
    md.push_str(&render(&rows, true));
    md.push('\n');
    for line in notes.lines() {
        let _ = writeln!(md, "- {line}");
    }
    File::create(&md_path)
        .and_then(|mut f| f.write_all(md.as_bytes()))
        .with_context(|| format!("writing {}", md_path.display()))?;
    println!("\nwritten to {}", md_path.display());
    drop(etcd);
    Ok(())
}

fn subnet_of(i: usize) -> String {
    format!("10.{}.0.0/16", 100 + i)
}

async fn own_pool(ipam: &Ipam, i: usize) -> Result<String> {
    Ok(ipam.request_pool("GlobalDefault", &subnet_of(i), "", &BTreeMap::new(), false).await?.pool_id)
}

/// `n` hosts, each an [`Ipam`] over its own connection to `etcd`, all counted together.
async fn etcd_hosts(etcd: &EtcdServer, options: StoreOptions, n: usize) -> Result<(Vec<Arc<Ipam>>, Arc<Counters>)> {
    let counters = Arc::new(Counters::default());
    let state = tempfile::tempdir()?;
    let mut out = Vec::new();
    for i in 0..n {
        let store = store::open_with(Some(&etcd.url()), state.path(), options.clone()).await?;
        let ipam =
            Ipam::new(Counting::wrap(store, counters.clone()), &format!("bench-{i}"), IpamConfig::default()).await?;
        out.push(Arc::new(ipam));
    }
    Ok((out, counters))
}

type Work = Box<dyn Fn(usize, Arc<Barrier>, Duration) -> WorkerFuture>;

/// Rewrites 128 bytes of a file and fsyncs it, like a store committing one small change.
fn fsync_worker(path: PathBuf) -> Work {
    Box::new(move |_, barrier, duration| {
        let path = path.clone();
        Box::pin(async move {
            let file = File::options().create(true).truncate(false).write(true).open(&path)?;
            let buf = [0x5au8; RAW_VALUE_LEN];
            timed!(barrier, duration, {
                use std::os::unix::fs::FileExt;
                file.write_all_at(&buf, 0)?;
                file.sync_all()?;
            })
        })
    })
}

/// Each client owns one key and rewrites it with a Txn that compares its mod revision, like an
/// allocation's conditional write. It knows the revision from its last answer; with `read_first`
/// it reads the key before every write instead (one read + one write: a cache-less allocator).
fn raw_worker(endpoint: String, prefix: String, read_first: bool) -> Work {
    Box::new(move |i, barrier, duration| {
        let (endpoint, key) = (endpoint.clone(), format!("{prefix}{i}"));
        Box::pin(async move {
            let mut c = Client::connect([format!("http://{endpoint}")], None).await?;
            let value = vec![0xa5u8; RAW_VALUE_LEN];
            let mut rev = c.put(key.as_str(), value.clone(), None).await?.header().map(|h| h.revision()).unwrap_or(0);
            let step = move |mut c: Client, known: i64| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    let rev = if read_first {
                        let got = c.get(key.as_str(), None).await?;
                        got.kvs().first().map(|kv| kv.mod_revision()).context("the key vanished")?
                    } else {
                        known
                    };
                    let txn = EtcdTxn::new()
                        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, rev)])
                        .and_then([TxnOp::put(key.as_str(), value, None)]);
                    let resp = c.txn(txn).await?;
                    if !resp.succeeded() {
                        bail!("a raw txn on a key of its own conflicted");
                    }
                    resp.header().map(|h| h.revision()).context("a txn answer without a header")
                }
            };
            for _ in 0..WARMUP_OPS {
                rev = step(c.clone(), rev).await?;
            }
            timed!(barrier, duration, {
                rev = step(c.clone(), rev).await?;
            })
        })
    })
}

/// Client `i` asks host `ipams[i]` for any free address of `pools[i]`, naming a new owner each time.
fn alloc_worker(ipams: Vec<Arc<Ipam>>, pools: Vec<String>, counters: &Counters) -> Work {
    // Setup calls (pool creation) are not allocations.
    counters.take();
    let seq = Arc::new(AtomicU64::new(0));
    Box::new(move |i, barrier, duration| {
        let (ipam, pool, seq) = (ipams[i].clone(), pools[i].clone(), seq.clone());
        Box::pin(async move {
            let one = || {
                let options = BTreeMap::from([(
                    OWNER_OPTION.to_string(),
                    format!("endpoint-{}", seq.fetch_add(1, Ordering::Relaxed)),
                )]);
                let (ipam, pool) = (ipam.clone(), pool.clone());
                async move { ipam.request_address(&pool, "", &options).await.map(|_| ()) }
            };
            for _ in 0..WARMUP_OPS {
                one().await?;
            }
            timed!(barrier, duration, one().await?)
        })
    })
}

/// VNI allocation for an owner that has none yet (every call a new one, across rounds too).
fn vni_worker(ipam: Arc<Ipam>) -> Work {
    let seq = Arc::new(AtomicU64::new(0));
    Box::new(move |_, barrier, duration| {
        let (ipam, seq) = (ipam.clone(), seq.clone());
        Box::pin(async move {
            let next = || format!("network-{}", seq.fetch_add(1, Ordering::Relaxed));
            for _ in 0..WARMUP_OPS {
                ipam.allocate_vni(&next()).await?;
            }
            timed!(barrier, duration, ipam.allocate_vni(&next()).await?)
        })
    })
}
