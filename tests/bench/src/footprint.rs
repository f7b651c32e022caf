//! Footprint of each driver on its own harness host (no dockerd): how soon the socket answers
//! after the process starts, resident memory idle and with many endpoints, and how long a
//! restart with those endpoints takes until the socket answers again.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use netloom_plugin_api::client::PluginClient;
use netloom_tests::{Cluster, DockerVersion, Etcd, Host, HostConfig, Plugin};
use serde_json::{json, Value};

use crate::config::Config;
use crate::report::{Report, Row};
use crate::socket_ops::{self as ops, hex_id, Endpoint, Subnet16};
use crate::stats::Samples;

/// Starts per driver for the socket-ready median (the harness times each start, polling the
/// socket every millisecond).
const STARTS: usize = 5;
const IDLE: Duration = Duration::from_secs(1);
const SUBNET: Subnet16 = Subnet16 { a: 10, b: 120 };

const READY_BUDGET_MS: f64 = 50.0;
const RSS_IDLE_BUDGET_MB: f64 = 15.0;
const RSS_LOADED_BUDGET_MB: f64 = 40.0;
const RECONCILE_BUDGET_MS: f64 = 1000.0;

/// What a driver is given to hold: endpoints of one network, or addresses of one IPAM pool.
#[derive(Clone, Copy)]
enum Load {
    Endpoints { generic: fn() -> Value },
    Addresses,
}

struct DriverUnderTest {
    label: &'static str,
    binary: &'static str,
    host: &'static str,
    args: &'static [&'static str],
    /// Shell run on the host before the driver starts.
    setup: Option<&'static str>,
    /// Needs a store shared by hosts (`--store`): an etcd on a host of its own.
    shared_store: bool,
    load: Load,
}

fn no_options() -> Value {
    json!({})
}

fn macvlan_parent() -> Value {
    json!({"parent": "p0"})
}

const DRIVERS: [DriverUnderTest; 7] = [
    DriverUnderTest {
        label: "loom-null",
        binary: "loom-null",
        host: "fnull",
        args: &[],
        setup: None,
        shared_store: false,
        load: Load::Endpoints { generic: no_options },
    },
    DriverUnderTest {
        label: "loom-bridge (iptables)",
        binary: "loom-bridge",
        host: "fbrip",
        args: &["--firewall", "iptables"],
        setup: None,
        shared_store: false,
        load: Load::Endpoints { generic: no_options },
    },
    DriverUnderTest {
        label: "loom-bridge (nftables)",
        binary: "loom-bridge",
        host: "fbrnf",
        args: &["--firewall", "nftables"],
        setup: None,
        shared_store: false,
        load: Load::Endpoints { generic: no_options },
    },
    DriverUnderTest {
        label: "loom-macvlan",
        binary: "loom-macvlan",
        host: "fmacv",
        args: &[],
        // The parent is a veth pair of the host's own: nothing outside the host is touched.
        setup: Some("ip link add p0 type veth peer name p1 && ip link set p0 up && ip link set p1 up"),
        shared_store: false,
        load: Load::Endpoints { generic: macvlan_parent },
    },
    DriverUnderTest {
        label: "loom-host",
        binary: "loom-host",
        host: "fhost",
        args: &[],
        setup: None,
        shared_store: false,
        load: Load::Endpoints { generic: no_options },
    },
    DriverUnderTest {
        label: "loom-overlay",
        binary: "loom-overlay",
        host: "fover",
        args: &["--scope", "local", "--advertise-addr", "eth0"],
        setup: None,
        shared_store: true,
        load: Load::Endpoints { generic: no_options },
    },
    DriverUnderTest {
        label: "loom-ipam",
        binary: "loom-ipam",
        host: "fipam",
        args: &[],
        setup: None,
        shared_store: false,
        load: Load::Addresses,
    },
];

struct Figures {
    ready: Samples,
    rss_idle_mb: f64,
    rss_loaded_mb: f64,
    restart_ready_ms: f64,
    /// The driver's own "reconciled" log line, when it writes one.
    reconcile_logged_ms: Option<f64>,
}

pub fn run(config: &Config, report: &mut Report) -> Result<()> {
    let cluster = Cluster::new("bnfoot")?;
    let runtime = ops::runtime()?;
    let count = config.footprint_endpoints();
    let mut failed = Vec::new();
    for driver in &DRIVERS {
        let started = Instant::now();
        let host = cluster.add_host(HostConfig::new(driver.host, DockerVersion::V20).defer_docker())?;
        let outcome = with_store(&cluster, driver)
            .and_then(|(store_args, _etcd)| measure(&host, &runtime, driver, &store_args, count));
        for h in cluster.hosts() {
            h.teardown();
        }
        match outcome {
            Ok(figures) => push_rows(report, driver, count, &figures),
            Err(e) => {
                eprintln!("[bench] footprint: {} failed: {e:#}", driver.label);
                report.note(format!("footprint of {} failed: {e:#}", driver.label));
                failed.push(driver.label);
            }
        }
        eprintln!("[bench] footprint: {} done in {:.1} s", driver.label, started.elapsed().as_secs_f64());
    }
    if !failed.is_empty() {
        return Err(anyhow!("footprint failed for {}", failed.join(", ")));
    }
    Ok(())
}

/// The `--store` arguments the driver needs, with the etcd that serves them (kept alive by the
/// caller while the driver runs).
fn with_store(cluster: &Cluster, driver: &DriverUnderTest) -> Result<(Vec<String>, Option<Etcd>)> {
    if !driver.shared_store {
        return Ok((Vec::new(), None));
    }
    let store_host =
        cluster.add_host(HostConfig::new(&format!("{}s", driver.host), DockerVersion::V20).defer_docker())?;
    let etcd = Etcd::on_hosts(cluster, &[store_host]).context("starting etcd")?;
    Ok((vec!["--store".into(), etcd.url()], Some(etcd)))
}

fn measure(
    host: &Host,
    runtime: &tokio::runtime::Runtime,
    driver: &DriverUnderTest,
    extra_args: &[String],
    count: usize,
) -> Result<Figures> {
    if let Some(script) = driver.setup {
        host.sh(script).context("setting up the host")?;
    }
    let args: Vec<&str> = driver.args.iter().copied().chain(extra_args.iter().map(String::as_str)).collect();
    let plugin = host.start_plugin(driver.binary, &args)?;
    let mut ready = Samples::new();
    for start in 0..STARTS {
        if start > 0 {
            stop(&plugin)?;
            plugin.start()?;
        }
        ready.push_duration(ready_after(&plugin)?);
    }
    eprintln!(
        "[bench] footprint: {} socket ready after {:.1} ms (median of {STARTS}), max {:.1} ms",
        driver.label,
        ready.median(),
        ready.max()
    );
    std::thread::sleep(IDLE);
    let rss_idle_mb = rss_mb(&plugin)?;

    let socket = host.path_inside(&plugin.socket());
    runtime.block_on(load(&socket, driver.load, count)).with_context(|| format!("making {count} endpoints"))?;
    std::thread::sleep(IDLE);
    let rss_loaded_mb = rss_mb(&plugin)?;

    stop(&plugin)?;
    let log_offset = std::fs::metadata(plugin.log_path()).map(|m| m.len() as usize).unwrap_or(0);
    plugin.start().context("restarting with endpoints")?;
    let restart_ready_ms = ready_after(&plugin)?.as_secs_f64() * 1000.0;
    let log = std::fs::read(plugin.log_path()).with_context(|| format!("reading {}", plugin.log_path().display()))?;
    let reconcile_logged_ms = reconciled_elapsed_ms(&String::from_utf8_lossy(&log[log_offset.min(log.len())..]));
    stop(&plugin)?;
    Ok(Figures { ready, rss_idle_mb, rss_loaded_mb, restart_ready_ms, reconcile_logged_ms })
}

fn ready_after(plugin: &Plugin) -> Result<Duration> {
    plugin.ready_after().ok_or_else(|| anyhow!("{} has not started", plugin.name()))
}

fn stop(plugin: &Plugin) -> Result<()> {
    let status = plugin.sigterm()?;
    if !status.success() {
        eprintln!("[bench] footprint: {} exited with {status} on SIGTERM", plugin.name());
    }
    Ok(())
}

async fn load(socket: &std::path::Path, load: Load, count: usize) -> Result<()> {
    let mut client = PluginClient::connect(socket).await?;
    match load {
        Load::Endpoints { generic } => {
            let net = hex_id(0x0a, 1);
            client.call("NetworkDriver.CreateNetwork", &ops::create_network(&net, SUBNET, generic())).await?;
            for i in 0..count as u32 {
                let (id, address) = (hex_id(0x0e, i), SUBNET.address(2 + i));
                ops::attach(&mut client, &Endpoint { net: &net, id: &id, address: &address }, &json!([]))
                    .await
                    .with_context(|| format!("endpoint #{i}"))?;
            }
        }
        Load::Addresses => {
            let pool = client.call("IpamDriver.RequestPool", &ops::request_pool(&SUBNET.pool())).await?;
            let pool_id =
                pool["PoolID"].as_str().ok_or_else(|| anyhow!("RequestPool answered without PoolID: {pool}"))?;
            for i in 0..count {
                client
                    .call("IpamDriver.RequestAddress", &ops::request_address(pool_id))
                    .await
                    .with_context(|| format!("address #{i}"))?;
            }
        }
    }
    Ok(())
}

fn rss_mb(plugin: &Plugin) -> Result<f64> {
    let pid = plugin.pid().ok_or_else(|| anyhow!("{} is not running", plugin.name()))?;
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    vm_rss_kib(&status).map(|kib| kib / 1024.0).ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// The `VmRSS:  12345 kB` line of /proc/<pid>/status.
fn vm_rss_kib(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `elapsed_ms` of the last "reconciled" line in a driver's log, text or JSON format (the
/// harness runs drivers with NO_COLOR).
fn reconciled_elapsed_ms(log: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains("reconciled"))?;
    let after = &line[line.find("elapsed_ms")? + "elapsed_ms".len()..];
    let digits: String = after
        .trim_start_matches(['=', '"', ':', ' '])
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

fn push_rows(report: &mut Report, driver: &DriverUnderTest, count: usize, f: &Figures) {
    let label = driver.label;
    let objects = match driver.load {
        Load::Endpoints { .. } => "endpoints",
        Load::Addresses => "addresses",
    };
    report.push(Row::budget(
        "footprint",
        format!("{label} socket ready after start (median of {STARTS})"),
        f.ready.median(),
        "ms",
        READY_BUDGET_MS,
    ));
    report.push(Row::budget("footprint", format!("{label} RSS idle"), f.rss_idle_mb, "MB", RSS_IDLE_BUDGET_MB));
    report.push(Row::budget(
        "footprint",
        format!("{label} RSS with {count} {objects}"),
        f.rss_loaded_mb,
        "MB",
        RSS_LOADED_BUDGET_MB,
    ));
    let restart = format!("{label} restart with {count} {objects}: socket ready");
    report.push(Row::budget("footprint", restart, f.restart_ready_ms, "ms", RECONCILE_BUDGET_MS));
    if let Some(ms) = f.reconcile_logged_ms {
        report.push(Row::budget(
            "footprint",
            format!("{label} reconcile of {count} {objects} (driver log)"),
            ms,
            "ms",
            RECONCILE_BUDGET_MS,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tloom-null\nVmPeak:\t  20000 kB\nVmRSS:\t    7168 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(vm_rss_kib(status), Some(7168.0));
        assert_eq!(vm_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn reconcile_time_comes_from_text_and_json_logs() {
        let text =
            "2024-01-01T00:00:00Z  INFO loom_bridge::driver: reconciled networks=1 endpoints=1000 elapsed_ms=412\n";
        assert_eq!(reconciled_elapsed_ms(text), Some(412.0));
        let json =
            r#"{"timestamp":"x","level":"INFO","networks":1,"endpoints":1000,"elapsed_ms":87,"message":"reconciled"}"#;
        assert_eq!(reconciled_elapsed_ms(json), Some(87.0));
    }

    #[test]
    fn the_last_reconcile_counts_and_absence_is_none() {
        let log = "x reconciled elapsed_ms=1\ny listening\nz reconciled elapsed_ms=2\n";
        assert_eq!(reconciled_elapsed_ms(log), Some(2.0));
        assert_eq!(reconciled_elapsed_ms("listening on /run/docker/plugins/x.sock\n"), None);
        assert_eq!(reconciled_elapsed_ms("reconciled without a time\n"), None);
    }
}
