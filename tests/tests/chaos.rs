//! Chaos: create a network, run a container on it (with `-p` where the driver publishes), remove
//! both, over and over, while the driver is SIGKILLed at random moments and started again (as
//! dockerd would find it again). Docker may forget things on the way (dockerd 20.10 retries a
//! call to a driver that died with an empty body); reconciliation against Docker must clean them.
//! At the end, once everything is removed through docker and one reconcile period has passed,
//! each host has exactly the links, addresses, routes, firewall rules and store keys it had
//! before the churn; and a container started before the churn, on a network of its own, kept
//! answering pings throughout. Needs `cargo build --release --workspace --bins`.
//!
//! The random schedule comes from a seed printed at the start; NETLOOM_CHAOS_SEED replays it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{
    embedded_store_keys, scenario_tests, wait_until, Cluster, DockerVersion, Host, HostConfig, HostState, Moment,
    NsProc, Plugin, PluginProxy, UnderlayEtcd, FAST_RECONCILE, IMAGE,
};

const CYCLES: u32 = 12;
const KILLS: u32 = 4;
/// Beyond one reconcile period: the pass that confirms a removal, a slow release.
const SLACK: Duration = Duration::from_secs(5);
const WEB: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/"];

fn step(t0: Instant, what: &str) {
    eprintln!("[chaos] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

/// xorshift64*: enough randomness for a schedule, replayable from its seed.
struct Random(u64);

impl Random {
    fn from_env_or_clock() -> Random {
        let seed = std::env::var("NETLOOM_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("[chaos] seed {seed} (NETLOOM_CHAOS_SEED={seed} replays this schedule)");
        Random(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// What dockerd asks a driver; the killer picks one to die on.
const METHODS: [&str; 8] = [
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.Leave",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.DeleteNetwork",
];

/// The driver under fire, behind the proxy dockerd talks to.
#[derive(Clone)]
struct Victim {
    plugin: Arc<Plugin>,
    proxy: Arc<PluginProxy>,
}

/// SIGKILLs the victim `KILLS` times and starts it again after a random pause (0 to 0.8 s), until
/// done or told to stop. Each time, after a random wait (0.3 to 2 s), it dies on the next request
/// of a random kind, before or after doing it but always before dockerd has the answer (or, if
/// no such request comes within 3 s, at that moment). Returns what it did.
fn killer(victim: Victim, mut random: Random, stop: Arc<AtomicBool>, kills: Arc<AtomicU32>) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for _ in 0..KILLS {
        if !pause(random.millis(300, 2000), &stop) {
            break;
        }
        let method = METHODS[(random.next() % METHODS.len() as u64) as usize];
        let moment = if random.next().is_multiple_of(2) { Moment::BeforeForwarding } else { Moment::BeforeAnswering };
        let fired = Arc::new(AtomicBool::new(false));
        let (plugin, flag) = (victim.plugin.clone(), fired.clone());
        victim.proxy.arm(&[method], moment, move || {
            let _ = plugin.sigkill();
            flag.store(true, Ordering::SeqCst);
        });
        let armed = Instant::now();
        while !fired.load(Ordering::SeqCst) && armed.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if victim.proxy.disarm() {
            victim.plugin.sigkill()?;
            done.push("at a random moment".to_string());
        } else {
            done.push(format!("on {method} ({moment:?})"));
        }
        kills.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(random.millis(0, 800));
        victim.plugin.start()?;
    }
    Ok(done)
}

/// Sleeps `d` unless told to stop first (then false).
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A long-running `ping` (one a second) from a container's namespace, its replies counted at the end.
struct Pinger {
    proc: NsProc,
    started: Instant,
}

impl Pinger {
    fn start(h: &Host, container: &str, target: &str) -> Result<Pinger> {
        let pid = h.container_pid(container)?.to_string();
        let proc =
            h.spawn(&format!("ping-{container}"), &["nsenter", "-t", pid.as_str(), "-n", "busybox", "ping", target])?;
        Ok(Pinger { proc, started: Instant::now() })
    }

    /// Stops it; fails when more than `max_gap` echo requests in a row went unanswered, or
    /// almost nothing was answered.
    fn finish(mut self, max_gap: u64) -> Result<String> {
        let elapsed = self.started.elapsed();
        let _ = self.proc.kill();
        let log = std::fs::read_to_string(self.proc.log_path())?;
        let seqs: Vec<u64> =
            log.lines().filter_map(|l| l.split("seq=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
        let expected = elapsed.as_secs();
        ensure!(seqs.len() as u64 + max_gap + 2 >= expected, "{} replies in {expected} s:\n{log}", seqs.len());
        let mut worst = seqs.first().copied().unwrap_or(expected);
        for pair in seqs.windows(2) {
            worst = worst.max(pair[1] - pair[0] - 1);
        }
        ensure!(worst <= max_gap, "{worst} pings in a row unanswered (at most {max_gap} allowed):\n{log}");
        Ok(format!("{} replies in {expected} s, longest gap {worst}", seqs.len()))
    }
}

/// Runs `f` until it succeeds (Docker may be retrying a driver that was just killed), at most 60 s.
fn until_ok(what: &str, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let t0 = Instant::now();
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err(e) if t0.elapsed() > Duration::from_secs(60) => return Err(e.context(format!("{what}, for 60 s"))),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn absent(h: &Host, kind: &str, name: &str) -> Result<bool> {
    let list = match kind {
        "network" => h.docker(&["network", "ls", "--format", "{{.Name}}"])?,
        _ => h.docker(&["ps", "-a", "--format", "{{.Names}}"])?,
    };
    Ok(!list.lines().any(|l| l.trim() == name))
}

/// Removes a container and a network through docker until docker has neither.
fn remove(h: &Host, container: &str, network: &str) -> Result<()> {
    until_ok(&format!("removing {container} on {}", h.name()), || {
        let _ = h.docker(&["rm", "-f", container]);
        ensure!(absent(h, "container", container)?, "{container} still there");
        Ok(())
    })?;
    until_ok(&format!("removing {network} on {}", h.name()), || {
        let _ = h.docker(&["network", "rm", network]);
        ensure!(absent(h, "network", network)?, "{network} still there");
        Ok(())
    })
}

/// How one driver is churned on a host.
struct Churn<'a> {
    hosts: Vec<&'a Host>,
    /// `docker network create` arguments for cycle `i` (the same on every host).
    network_args: Box<dyn Fn(u32) -> Vec<String> + 'a>,
    driver: &'a str,
    /// `-p` for cycle `i`'s container on the first host, if the driver publishes.
    publish: Option<Box<dyn Fn(u32) -> String + 'a>>,
}

impl Churn<'_> {
    /// One cycle: what failed on the way (Docker talking to a driver that was just killed), or
    /// None when everything worked at the first try. Everything is removed in the end either way.
    fn cycle(&self, i: u32) -> Result<Option<String>> {
        let (network, container) = (format!("ch{i}"), format!("x{i}"));
        let mut failed = None;
        let args = (self.network_args)(i);
        for h in &self.hosts {
            let mut argv: Vec<&str> = vec!["network", "create", "-d", self.driver];
            argv.extend(args.iter().map(String::as_str));
            argv.push(&network);
            if let Err(e) = h.docker(&argv) {
                failed.get_or_insert(format!("network create on {}: {e:#}", h.name()));
                continue;
            }
            let mut run = vec!["run".to_string(), "-d".into(), "--name".into(), container.clone()];
            run.extend(["--network".into(), network.clone()]);
            if let Some(p) = self.publish.as_ref().filter(|_| std::ptr::eq(*h, self.hosts[0])) {
                run.extend(["-p".into(), p(i)]);
            }
            run.push(IMAGE.into());
            run.extend(WEB.iter().map(|s| s.to_string()));
            if let Err(e) = h.docker(&run) {
                failed.get_or_insert(format!("run on {}: {e:#}", h.name()));
            }
        }
        for h in &self.hosts {
            remove(h, &container, &network)?;
        }
        Ok(failed)
    }

    /// Cycles with the killer loose on `victim`; returns (cycles, cycles that hit a failure, kills).
    fn run(&self, t0: Instant, victim: &Victim) -> Result<(u32, u32, u32)> {
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicU32::new(0));
        let killer = {
            let (victim, stop, kills) = (victim.clone(), stop.clone(), kills.clone());
            let random = Random::from_env_or_clock();
            std::thread::spawn(move || killer(victim, random, stop, kills))
        };
        let mut failures = 0;
        let mut result = Ok(());
        // At least CYCLES cycles, and more until every kill happened (up to twice as many).
        let mut i = 0;
        while i < CYCLES || (kills.load(Ordering::SeqCst) < KILLS && i < 2 * CYCLES) {
            i += 1;
            match self.cycle(i) {
                Ok(None) => {}
                Ok(Some(why)) => {
                    failures += 1;
                    step(t0, &format!("cycle {i}: {}", why.lines().next().unwrap_or_default()));
                }
                Err(e) => {
                    result = Err(e.context(format!("cycle {i}")));
                    break;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let killed = killer.join().map_err(|_| anyhow::anyhow!("the killer thread panicked"))?;
        result?;
        let killed = killed.context("killing and restarting the driver")?;
        step(t0, &format!("the driver was killed {}", killed.join(", ")));
        // A kill in the last moments leaves the driver restarting: wait for its socket.
        victim.plugin.start()?;
        Ok((i, failures, kills.load(Ordering::SeqCst)))
    }
}

/// Everything the drivers may leave behind on the hosts, and in the store.
#[derive(PartialEq)]
struct Baseline {
    hosts: Vec<HostState>,
    keys: Vec<String>,
}

impl Baseline {
    fn take(hosts: &[&Host], keys: &dyn Fn() -> Result<Vec<String>>) -> Result<Baseline> {
        Ok(Baseline { hosts: hosts.iter().map(|h| HostState::take(h)).collect::<Result<_>>()?, keys: keys()? })
    }

    fn diff(&self, now: &Baseline) -> Option<String> {
        let mut out = String::new();
        for (i, (before, after)) in self.hosts.iter().zip(&now.hosts).enumerate() {
            if let Some(d) = before.diff(after) {
                out.push_str(&format!("### host {}\n{d}", i + 1));
            }
        }
        for k in self.keys.iter().filter(|k| !now.keys.contains(k)) {
            out.push_str(&format!("store key gone: {k}\n"));
        }
        for k in now.keys.iter().filter(|k| !self.keys.contains(k)) {
            out.push_str(&format!("store key left: {k}\n"));
        }
        (!out.is_empty()).then_some(out)
    }
}

/// After the churn: back to the baseline within one reconcile period (and slack).
fn back_to_baseline(
    t0: Instant,
    hosts: &[&Host],
    baseline: &Baseline,
    period: Duration,
    keys: &dyn Fn() -> Result<Vec<String>>,
) -> Result<()> {
    let done = Instant::now();
    let mut last = None;
    let res = wait_until(period + SLACK, Duration::from_millis(500), "the hosts to be back at the baseline", || {
        let now = Baseline::take(hosts, keys)?;
        last = baseline.diff(&now);
        Ok(last.is_none())
    });
    res.map_err(|e| e.context(format!("differences from the baseline:\n{}", last.unwrap_or_default())))?;
    step(t0, &format!("back at the baseline {:.1}s after the last removal", done.elapsed().as_secs_f64()));
    Ok(())
}

/// How many things the victim removed because Docker no longer had them (what Docker forgot).
fn reconciled(victim: &Victim) -> Result<usize> {
    let log = std::fs::read_to_string(victim.plugin.log_path())?;
    Ok(log.lines().filter(|l| l.contains("removed: Docker has no such")).count())
}

// ---- one host: loom-bridge, loom-host, loom-macvlan -------------------------------------------

struct Single {
    binary: &'static str,
    args: &'static [&'static str],
    publishes: bool,
    /// Extra `docker network create` arguments for network number `n` (survivor: 0, churn: 1+).
    extra: fn(u32) -> Vec<String>,
}

const BRIDGE: Single = Single { binary: "loom-bridge", args: &[], publishes: true, extra: |_| vec![] };
const HOST: Single = Single { binary: "loom-host", args: &[], publishes: true, extra: |_| vec![] };
/// The survivor on the host's eth0; churned networks on isolated parents of their own, made and
/// removed by the driver (the kernels here have no 802.1q module for VLAN parents).
const MACVLAN: Single = Single {
    binary: "loom-macvlan",
    args: &[],
    publishes: false,
    extra: |n| if n == 0 { vec!["-o".into(), "parent=eth0".into()] } else { vec![] },
};

fn subnet_args(octet: u32) -> Vec<String> {
    vec!["--subnet".into(), format!("172.27.{octet}.0/24")]
}

fn single_host_chaos(c: &Cluster, docker: DockerVersion, driver: Single) -> Result<()> {
    let t0 = Instant::now();
    let h = c.add_host(HostConfig::new("h1", docker).dockerd_args(&["--log-level=info"]))?;
    let mut args = vec!["--log-level", "debug"];
    args.extend(driver.args);
    args.extend(FAST_RECONCILE);
    let (plugin, proxy) = h.start_plugin_behind_proxy(driver.binary, &args)?;
    let victim = Victim { plugin: plugin.clone(), proxy: Arc::new(proxy) };
    let period = plugin.reconcile_period();

    // The survivor: its own network, two containers that keep talking.
    let mut create = vec!["network".to_string(), "create".into(), "-d".into(), driver.binary.into()];
    create.extend(subnet_args(200));
    create.extend((driver.extra)(0));
    create.push("surv".into());
    h.docker(&create)?;
    h.docker(&[&["run", "-d", "--name", "v1", "--network", "surv", IMAGE][..], WEB].concat())?;
    h.docker(&["run", "-d", "--name", "v2", "--network", "surv", IMAGE, "sleep", "3600"])?;
    let v1 = h.container_ip("v1", "surv")?;

    let churn = Churn {
        hosts: vec![&h],
        network_args: Box::new(|i| [subnet_args(i % 100 + 1), (driver.extra)(i + 1)].concat()),
        driver: driver.binary,
        publish: driver.publishes.then(|| Box::new(|i: u32| format!("{}:80", 9000 + i)) as Box<dyn Fn(u32) -> String>),
    };
    // A first cycle without kills, so that what a driver makes once on first use (base chains,
    // tables) is in the baseline.
    churn.cycle(0).context("the warm-up cycle")?;
    let keys = || embedded_store_keys(&plugin);
    let baseline = Baseline::take(&[&h], &keys)?;
    ensure!(baseline.keys.iter().any(|k| k.contains("networks/")), "no network record in {:?}", baseline.keys);
    let pinger = Pinger::start(&h, "v2", &v1)?;
    step(t0, "survivor up, baseline taken; churning");

    let (cycles, failures, kills) = churn.run(t0, &victim)?;
    step(t0, &format!("{cycles} cycles, {kills} kills, {failures} cycles with a failure on the way"));
    ensure!(kills == KILLS, "only {kills} kills happened during the churn");
    ensure!(failures * 2 <= cycles, "{failures} of {cycles} cycles failed on the way");

    back_to_baseline(t0, &[&h], &baseline, period, &keys)?;
    step(t0, &format!("{} endpoints and networks removed by reconciliation", reconciled(&victim)?));
    let pings = pinger.finish(2)?;
    step(t0, &format!("survivor: {pings}"));
    h.docker(&["rm", "-f", "v1", "v2"])?;
    h.docker(&["network", "rm", "surv"])?;
    Ok(())
}

// ---- two hosts: loom-overlay over etcd ---------------------------------------------------------

fn overlay_chaos(c: &Cluster, docker: DockerVersion) -> Result<()> {
    let t0 = Instant::now();
    let etcd = UnderlayEtcd::start(c, 1)?;
    let store = etcd.url(c);
    let cfg = |name: &str| HostConfig::new(name, docker).dockerd_args(&["--log-level=info"]);
    let hosts = c.add_hosts(vec![cfg("h1"), cfg("h2")])?;
    let (h1, h2) = (&*hosts[0], &*hosts[1]);
    let mut args = vec!["--store", store.as_str(), "--advertise-addr", "eth0", "--log-level", "debug"];
    args.extend(FAST_RECONCILE);
    for h in [h1, h2] {
        let mut ipam = vec!["--store", store.as_str()];
        ipam.extend(FAST_RECONCILE);
        h.start_plugin("loom-ipam", &ipam)?;
    }
    let (plugin, proxy) = h1.start_plugin_behind_proxy("loom-overlay", &args)?;
    h2.start_plugin("loom-overlay", &args)?;
    let victim = Victim { plugin, proxy: Arc::new(proxy) };
    let period = victim.plugin.reconcile_period();
    let net_args =
        |subnet: &str| vec!["--ipam-driver".to_string(), "loom-ipam".into(), "--subnet".into(), subnet.to_string()];

    // The survivor: one container on each host, the one on h2 pinging the one on h1, whose
    // driver gets killed.
    for (h, name) in [(h1, "v1"), (h2, "v2")] {
        let mut create = vec!["network".to_string(), "create".into(), "-d".into(), "loom-overlay".into()];
        create.extend(net_args("10.79.0.0/24"));
        create.push("surv".into());
        h.docker(&create)?;
        h.docker(&[&["run", "-d", "--name", name, "--network", "surv", IMAGE][..], WEB].concat())?;
    }
    let v1 = h1.container_ip("v1", "surv")?;
    wait_until(Duration::from_secs(10), Duration::from_millis(200), "v2 to reach v1", || {
        Ok(h2.container_exec("v2", &["ping", "-c", "1", "-W", "1", &v1]).is_ok())
    })?;

    let churn = Churn {
        hosts: vec![h1, h2],
        network_args: Box::new(|i| net_args(&format!("10.78.{}.0/24", i % 200))),
        driver: "loom-overlay",
        publish: Some(Box::new(|i| format!("{}:80", 9000 + i))),
    };
    churn.cycle(0).context("the warm-up cycle")?;
    let keys = || etcd.keys(c, 0, "/netloom/v1/");
    let baseline = Baseline::take(&[h1, h2], &keys)?;
    ensure!(baseline.keys.iter().any(|k| k.contains("overlay/")), "no overlay key in {:?}", baseline.keys);
    let pinger = Pinger::start(h2, "v2", &v1)?;
    step(t0, "survivors up, baseline taken; churning");

    let (cycles, failures, kills) = churn.run(t0, &victim)?;
    step(t0, &format!("{cycles} cycles, {kills} kills of h1's driver, {failures} cycles with a failure on the way"));
    ensure!(kills == KILLS, "only {kills} kills happened during the churn");
    ensure!(failures * 2 <= cycles, "{failures} of {cycles} cycles failed on the way");

    back_to_baseline(t0, &[h1, h2], &baseline, period, &keys)?;
    step(t0, &format!("{} endpoints and networks removed by reconciliation on h1", reconciled(&victim)?));
    let pings = pinger.finish(2)?;
    step(t0, &format!("survivor across hosts: {pings}"));
    for (h, name) in [(h1, "v1"), (h2, "v2")] {
        h.docker(&["rm", "-f", name])?;
        h.docker(&["network", "rm", "surv"])?;
    }
    if !victim.plugin.is_running() {
        bail!("loom-overlay on h1 exited: {:?}", victim.plugin.exit_status());
    }
    Ok(())
}

scenario_tests! {
    chaos_bridge_docker20: "chbr20" => |c| single_host_chaos(c, DockerVersion::V20, BRIDGE),
    chaos_bridge_docker26: "chbr26" => |c| single_host_chaos(c, DockerVersion::V26, BRIDGE),
    chaos_host_docker20: "chhost20" => |c| single_host_chaos(c, DockerVersion::V20, HOST),
    chaos_host_docker26: "chhost26" => |c| single_host_chaos(c, DockerVersion::V26, HOST),
    chaos_macvlan_docker20: "chmv20" => |c| single_host_chaos(c, DockerVersion::V20, MACVLAN),
    chaos_macvlan_docker26: "chmv26" => |c| single_host_chaos(c, DockerVersion::V26, MACVLAN),
    chaos_overlay_docker20: "chov20" => |c| overlay_chaos(c, DockerVersion::V20),
    chaos_overlay_docker26: "chov26" => |c| overlay_chaos(c, DockerVersion::V26),
}
