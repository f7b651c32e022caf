//! Reconciliation against Docker with real dockerd (20.10 and 26): what Docker forgot without
//! the driver hearing of it is removed (within one reconcile period by a driver that stayed up,
//! at start by one that was down), what Docker still has is kept, and nothing at all is removed
//! while dockerd is stopped. Docker forgets on purpose: a `PluginProxy` between dockerd and the
//! driver answers Leave, DeleteEndpoint, RevokeExternalConnectivity and DeleteNetwork itself, as
//! when dockerd 20.10 retries a call to a driver that died with an empty body.
//! Needs `cargo build --release --workspace --bins`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use netloom_tests::{
    embedded_store_keys, ping, record_files, scenario_tests, wait_until, Cluster, DockerVersion, Host, HostConfig,
    HostState, Plugin, PluginProxy, FAST_RECONCILE, IMAGE,
};

/// Every request by which dockerd tells a driver that something is gone.
const FORGETTING: [&str; 4] = [
    "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.Leave",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.DeleteNetwork",
];
/// Beyond one reconcile period: a pass that started just before, a slow `docker` or netlink call.
const SLACK: Duration = Duration::from_secs(4);
const WEB: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/"];

fn step(t0: Instant, what: &str) {
    eprintln!("[reconcile] {:6.2}s {what}", t0.elapsed().as_secs_f64());
}

/// One driver under test: how to start it and what a network of it needs.
#[derive(Clone, Copy)]
struct Driver {
    binary: &'static str,
    args: &'static [&'static str],
    /// `-p` works on its networks.
    publishes: bool,
    /// `-o` options for a network, given its short name (e.g. a bridge name derived from it).
    options: fn(&str) -> Vec<String>,
}

const BRIDGE: Driver = Driver {
    binary: "loom-bridge",
    args: &["--log-level", "debug", "--firewall", "nftables"],
    publishes: true,
    options: |name| vec!["-o".into(), format!("com.docker.network.bridge.name=rk-{name}")],
};
const BRIDGE_IPTABLES: Driver = Driver { args: &["--log-level", "debug", "--firewall", "iptables"], ..BRIDGE };
const HOST: Driver =
    Driver { binary: "loom-host", args: &["--log-level", "debug"], publishes: true, options: |_| vec![] };
const MACVLAN: Driver =
    Driver { binary: "loom-macvlan", args: &["--log-level", "debug"], publishes: false, options: |_| vec![] };
const NULL: Driver =
    Driver { binary: "loom-null", args: &["--log-level", "debug"], publishes: false, options: |_| vec![] };

/// A network made through Docker, with at most one container on it.
struct Net {
    name: String,
    id: String,
    /// e.g. `172.29.2.`
    subnet_prefix: String,
    /// The endpoint of its container, if it has one.
    endpoint: Option<String>,
    port: Option<u16>,
    /// Host-side link names of its endpoint (loom-host and loom-bridge make one; named from the
    /// endpoint id), found while the container ran.
    links: Vec<String>,
}

fn create_network(h: &Host, driver: Driver, name: &str, third_octet: u8) -> Result<Net> {
    let subnet = format!("172.29.{third_octet}.0/24");
    let mut args: Vec<String> = vec!["--subnet".into(), subnet];
    args.extend((driver.options)(name));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    h.network_create(driver.binary, name, &args).with_context(|| format!("creating {name}"))?;
    let id = h.docker(&["network", "inspect", "--format", "{{.Id}}", name])?.trim().to_string();
    Ok(Net {
        name: name.into(),
        id,
        subnet_prefix: format!("172.29.{third_octet}."),
        endpoint: None,
        port: None,
        links: vec![],
    })
}

/// Starts `container` on `net` (a web server, its port 80 published on `port` if given).
fn run_on(h: &Host, net: &mut Net, container: &str, port: Option<u16>) -> Result<()> {
    let publish = port.map(|p| format!("{p}:80"));
    let mut argv = vec!["run", "-d", "--name", container, "--hostname", container, "--network", &net.name];
    if let Some(p) = &publish {
        argv.extend(["-p", p]);
    }
    argv.push(IMAGE);
    argv.extend_from_slice(WEB);
    h.docker(&argv).with_context(|| format!("starting {container} on {}", net.name))?;
    net.endpoint = Some(h.container_network_field(container, &net.name, "EndpointID")?);
    net.port = port;
    // The container's interface index names its peer on the host, whatever the driver called it.
    let peer = h.container_exec(container, &["cat", "/sys/class/net/eth0/iflink"]).unwrap_or_default();
    if let Ok(index) = peer.trim().parse::<u32>() {
        let line = h.exec(&["ip", "-o", "link"])?;
        net.links = line
            .lines()
            .filter(|l| l.starts_with(&format!("{index}: ")))
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n != "eth0")
            .collect();
    }
    Ok(())
}

/// Everything of `net` on the host: kernel lines naming its id, subnet, links or port, and the
/// driver's records of it.
fn traces(h: &Host, plugin: &Plugin, net: &Net) -> Result<Vec<String>> {
    let state = HostState::take(h)?;
    let mut needles = vec![net.id[..12].to_string(), net.subnet_prefix.clone()];
    needles.extend(net.links.iter().cloned());
    let mut lines: Vec<String> = needles.iter().flat_map(|n| state.lines_with(n)).collect();
    if let Some(port) = net.port {
        lines.extend(state.lines_with(&port.to_string()).into_iter().filter(|l| names_port(l, port)));
    }
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        let line = format!("kernel: {line}");
        if !out.contains(&line) {
            out.push(line);
        }
    }
    let mut records = embedded_store_keys(plugin)?;
    records.extend(record_files(plugin)?);
    let ids: Vec<&str> = [Some(net.id.as_str()), net.endpoint.as_deref()].into_iter().flatten().collect();
    out.extend(records.into_iter().filter(|k| ids.iter().any(|id| k.contains(id))).map(|k| format!("record: {k}")));
    Ok(out)
}

/// `line` has `port` as a word of its own (a rule or map element publishing it).
fn names_port(line: &str, port: u16) -> bool {
    line.split(|ch: char| !ch.is_ascii_alphanumeric()).any(|word| word == port.to_string())
}

/// Proves `net` is there: kernel state of the driver's kind and its records.
fn assert_present(h: &Host, plugin: &Plugin, driver: Driver, net: &Net) -> Result<Vec<String>> {
    let found = traces(h, plugin, net)?;
    ensure!(found.iter().any(|l| l.starts_with("record: ")), "no record of {} ({}): {found:#?}", net.name, net.id);
    if driver.binary != "loom-null" {
        ensure!(
            found.iter().any(|l| l.starts_with("kernel: ")),
            "nothing of {} in the host's kernel: {found:#?}",
            net.name
        );
    }
    if let Some(port) = net.port {
        ensure!(
            found.iter().any(|l| names_port(l, port)),
            "no rule publishing port {port} of {}: {found:#?}",
            net.name
        );
    }
    Ok(found)
}

/// Waits until nothing of `net` is left; the time it took.
fn wait_gone(h: &Host, plugin: &Plugin, net: &Net, limit: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    let mut left = Vec::new();
    let res = wait_until(limit, Duration::from_millis(250), &format!("{} to be removed", net.name), || {
        left = traces(h, plugin, net)?;
        Ok(left.is_empty())
    });
    res.map_err(|e| e.context(format!("left of {} ({}):\n{}", net.name, net.id, left.join("\n"))))?;
    Ok(t0.elapsed())
}

/// The driver said what it removed, and why.
fn assert_removal_logged(plugin: &Plugin, net: &Net) -> Result<()> {
    let log = std::fs::read_to_string(plugin.log_path())?;
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&net.id[..12])).collect();
    ensure!(
        lines.iter().any(|l| l.contains("removed") && l.contains("Docker")),
        "no log line of {} says it went because Docker no longer has it:\n{}",
        net.id,
        lines.join("\n")
    );
    Ok(())
}

/// Docker removes `container` and `net` through the proxy, which swallows every forgetting
/// request: Docker is done with them, the driver heard nothing.
fn docker_forgets(h: &Host, proxy: &PluginProxy, net: &Net, container: &str) -> Result<()> {
    proxy.swallow(&FORGETTING);
    h.docker(&["rm", "-f", container])?;
    h.docker(&["network", "rm", &net.name])?;
    let swallowed = proxy.swallowed("NetworkDriver.DeleteNetwork");
    ensure!(
        swallowed.iter().any(|body| body["NetworkID"] == net.id.as_str()),
        "dockerd never asked to delete {} (swallowed: {swallowed:?})",
        net.name
    );
    let known = h.docker(&["network", "ls", "--format", "{{.ID}}"])?;
    ensure!(!known.lines().any(|id| net.id.starts_with(id.trim())), "docker still lists {}", net.name);
    proxy.forward_all();
    Ok(())
}

/// What Docker still has stays as it was: the same kernel lines and records, and its containers
/// still talk.
struct Kept<'a> {
    nets: Vec<&'a Net>,
    before: Vec<Vec<String>>,
}

impl<'a> Kept<'a> {
    fn new(h: &Host, plugin: &Plugin, nets: Vec<&'a Net>) -> Result<Kept<'a>> {
        let before = nets.iter().map(|n| traces(h, plugin, n)).collect::<Result<Vec<_>>>()?;
        Ok(Kept { nets, before })
    }

    fn check(&self, h: &Host, plugin: &Plugin, talk: impl Fn() -> Result<()>) -> Result<()> {
        for (net, before) in self.nets.iter().zip(&self.before) {
            let now = traces(h, plugin, net)?;
            let gone: Vec<&String> = before.iter().filter(|l| !now.contains(l)).collect();
            ensure!(gone.is_empty(), "{} (still in Docker) lost: {gone:#?}", net.name);
        }
        talk()
    }
}

// ---- Docker forgets a network: with the driver up, and with the driver down ----------------------

fn forgotten_scenario(c: &Cluster, docker: DockerVersion, driver: Driver) -> Result<()> {
    let t0 = Instant::now();
    let h = c.add_host(HostConfig::new("h1", docker))?;
    let mut args = driver.args.to_vec();
    args.extend(FAST_RECONCILE);
    let (plugin, proxy) = h.start_plugin_behind_proxy(driver.binary, &args)?;
    let period = plugin.reconcile_period();

    // Kept throughout: a network with two talking containers, and one without any.
    let mut keep = create_network(&h, driver, "keep", 1)?;
    run_on(&h, &mut keep, "k1", None)?;
    let idle = create_network(&h, driver, "idle", 3)?;
    run_on(&h, &mut keep, "k2", None)?;
    let talks = || -> Result<()> {
        if driver.binary == "loom-null" {
            return Ok(());
        }
        ping(&h, "k2", &h.container_ip("k1", "keep")?)
    };
    talks()?;

    // (a) Forgotten while the driver is up: gone within one reconcile period.
    let mut gone = create_network(&h, driver, "gone", 2)?;
    let port = driver.publishes.then_some(8081);
    run_on(&h, &mut gone, "g1", port)?;
    let kept = Kept::new(&h, &plugin, vec![&keep, &idle])?;
    let found = assert_present(&h, &plugin, driver, &gone)?;
    step(t0, &format!("{} present: {} lines", gone.name, found.len()));
    docker_forgets(&h, &proxy, &gone, "g1")?;
    let forgotten = Instant::now();
    let still = traces(&h, &plugin, &gone)?;
    ensure!(
        still.iter().any(|l| l.starts_with("record: ")),
        "{} vanished at once: the driver heard of the removal after all",
        gone.name
    );
    wait_gone(&h, &plugin, &gone, period + SLACK)?;
    let took = forgotten.elapsed();
    step(
        t0,
        &format!(
            "forgotten {} removed {:.1}s after docker network rm (period {period:?})",
            gone.name,
            took.as_secs_f64()
        ),
    );
    assert_removal_logged(&plugin, &gone)?;
    kept.check(&h, &plugin, talks)?;

    // (b) Forgotten while the driver is down: gone once it is back.
    let mut down = create_network(&h, driver, "down", 4)?;
    run_on(&h, &mut down, "d1", port.map(|p| p + 1))?;
    assert_present(&h, &plugin, driver, &down)?;
    plugin.sigkill()?;
    docker_forgets(&h, &proxy, &down, "d1")?;
    assert_present(&h, &plugin, driver, &down).context("while the driver was down")?;
    plugin.start()?;
    let started = Instant::now();
    wait_gone(&h, &plugin, &down, period + SLACK).context("after the driver's start")?;
    step(t0, &format!("{} removed {:.1}s after the driver's start", down.name, started.elapsed().as_secs_f64()));
    assert_removal_logged(&plugin, &down)?;

    // (d) What Docker has is kept, over several periods.
    std::thread::sleep(period * 2);
    kept.check(&h, &plugin, talks)?;
    ensure!(plugin.is_running(), "{} exited: {:?}", driver.binary, plugin.exit_status());
    step(t0, "kept networks unchanged after two more periods");

    h.docker(&["rm", "-f", "k1", "k2"])?;
    h.docker(&["network", "rm", "keep", "idle"])?;
    Ok(())
}

// ---- dockerd stopped: nothing is removed -----------------------------------------------------

fn dockerd_down_scenario(c: &Cluster, docker: DockerVersion, driver: Driver) -> Result<()> {
    let t0 = Instant::now();
    // Containers keep running while dockerd is away, so Docker still has everything.
    let h = c.add_host(HostConfig::new("h1", docker).dockerd_args(&["--live-restore"]))?;
    let mut args = driver.args.to_vec();
    args.extend(FAST_RECONCILE);
    let plugin = h.start_plugin(driver.binary, &args)?;
    let period = plugin.reconcile_period();

    let mut stay = create_network(&h, driver, "stay", 5)?;
    run_on(&h, &mut stay, "s1", driver.publishes.then_some(8090))?;
    let quiet = create_network(&h, driver, "quiet", 6)?;
    let mut stay2 = create_network(&h, driver, "stay2", 7)?;
    run_on(&h, &mut stay2, "s3", None)?;
    h.docker(&["run", "-d", "--name", "s2", "--network", "stay", IMAGE, "sleep", "600"])?;
    let s1_ip = h.container_ip("s1", "stay")?;
    let s2_pid = h.container_pid("s2")?.to_string();
    // From s2's namespace (no docker exec while dockerd is away), to s1 through the host.
    let talks = || -> Result<()> {
        h.exec(&["nsenter", "-t", &s2_pid, "-n", "busybox", "ping", "-c", "1", "-W", "2", &s1_ip])
            .map(drop)
            .with_context(|| format!("s2 cannot reach s1 at {s1_ip}"))
    };
    talks()?;
    for net in [&stay, &quiet, &stay2] {
        assert_present(&h, &plugin, driver, net)?;
    }
    let kept = Kept::new(&h, &plugin, vec![&stay, &quiet, &stay2])?;
    let log_before = std::fs::read_to_string(plugin.log_path())?.len();

    h.stop_docker()?;
    let stopped = Instant::now();
    step(t0, "dockerd stopped");
    // Two full periods and more, checked all along; a driver restart in the middle (its
    // start-up pass cannot ask Docker either).
    while stopped.elapsed() < period * 2 + SLACK {
        kept.check(&h, &plugin, talks)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    plugin.restart()?;
    let restarted = Instant::now();
    while restarted.elapsed() < period + SLACK {
        kept.check(&h, &plugin, talks)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    step(t0, &format!("nothing removed in {:.1}s without dockerd", stopped.elapsed().as_secs_f64()));
    let log = std::fs::read_to_string(plugin.log_path())?;
    let unreachable = log[log_before..].lines().filter(|l| l.contains("cannot be asked")).count();
    ensure!(
        (1..=2).contains(&unreachable),
        "the driver said {unreachable} times that dockerd cannot be reached (once per start wanted)"
    );

    h.start_docker()?;
    let back = Instant::now();
    ping(&h, "s2", &s1_ip).context("after dockerd came back")?;
    while back.elapsed() < period + SLACK {
        kept.check(&h, &plugin, talks)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    step(t0, "everything kept after dockerd came back");
    if let Some(port) = stay.port {
        let url = format!("http://127.0.0.1:{port}/etc/hostname");
        let got = h.exec(&["timeout", "5", "busybox", "wget", "-q", "-O-", &url])?;
        ensure!(got.trim() == "s1", "{url} answered {got:?}");
    }
    h.docker(&["rm", "-f", "s1", "s2", "s3"])?;
    h.docker(&["network", "rm", "stay", "quiet", "stay2"])?;
    if !plugin.is_running() {
        bail!("{} exited: {:?}", driver.binary, plugin.exit_status());
    }
    Ok(())
}

scenario_tests! {
    reconcile_bridge_forgotten_docker20: "rcbr20" => |c| forgotten_scenario(c, DockerVersion::V20, BRIDGE_IPTABLES),
    reconcile_bridge_forgotten_docker26: "rcbr26" => |c| forgotten_scenario(c, DockerVersion::V26, BRIDGE),
    reconcile_bridge_dockerd_down_docker20: "rcbrd20" => |c| dockerd_down_scenario(c, DockerVersion::V20, BRIDGE),
    reconcile_bridge_dockerd_down_docker26: "rcbrd26" => |c| dockerd_down_scenario(c, DockerVersion::V26, BRIDGE_IPTABLES),
    reconcile_host_forgotten_docker26: "rchost26" => |c| forgotten_scenario(c, DockerVersion::V26, HOST),
    reconcile_macvlan_forgotten_docker20: "rcmv20" => |c| forgotten_scenario(c, DockerVersion::V20, MACVLAN),
    reconcile_null_forgotten_docker26: "rcnull26" => |c| forgotten_scenario(c, DockerVersion::V26, NULL),
}
