//! Driver-side cost: a client on loom-bridge's socket (no dockerd) times each request dockerd
//! would send, per firewall backend, in an empty network and with many endpoints or published
//! ports already present.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use netloom_plugin_api::client::PluginClient;
use netloom_tests::{Cluster, DockerVersion, Host, HostConfig};
use serde_json::json;

use crate::chart::{Chart, Series};
use crate::config::Config;
use crate::endpoint_probe;
use crate::report::{Report, Row, Target};
use crate::socket_ops::{self as ops, hex_id, Endpoint, Subnet16};
use crate::stats::fmt_num;
use crate::stats::Samples;

/// Iterations run before the timed ones, whose figures are dropped (caches, first-use chains).
const WARMUP: usize = 5;
/// Published ports per endpoint that holds the background ports of the port-scaling network.
const PORTS_PER_HOLDER: usize = 100;
/// The host port of the endpoint being timed (the background ports start at `BACKGROUND_PORT`).
const TIMED_PORT: u16 = 40000;
const BACKGROUND_PORT: u16 = 10000;
/// First address index of the timed endpoints, well above the background ones.
const TIMED_ADDRESS: u32 = 10_000;

const KIND_NETWORK: u16 = 0x0a;
const KIND_BACKGROUND: u16 = 0x0b;
const KIND_TIMED: u16 = 0x0e;

const BACKENDS: [&str; 2] = ["nftables", "iptables"];

/// Picks one op's samples out of a cycle's.
type Pick = fn(&CycleSamples) -> &Samples;

/// The timings of the endpoint cycle, one sample per op and cycle.
#[derive(Default)]
struct CycleSamples {
    attach: Samples,
    program: Samples,
    revoke: Samples,
    detach: Samples,
}

/// Everything measured on one backend.
struct BackendResult {
    backend: &'static str,
    create_network: Samples,
    /// In an empty network.
    base: CycleSamples,
    /// (existing endpoints, timings)
    endpoint_levels: Vec<(usize, CycleSamples)>,
    /// (published ports present, timings)
    port_levels: Vec<(usize, CycleSamples)>,
    /// (existing endpoints, the kernel's own mean ms to make a veth pair and put it on the bridge)
    kernel_levels: Vec<(usize, f64)>,
    /// (existing endpoints, Gbit/s of TCP between two endpoints made last), smallest and largest
    tcp_levels: Vec<(usize, f64)>,
}

/// Veth pairs made per level for the kernel-only figure: rounds of a batch small enough to fit
/// on a bridge that already has 1000 ports.
const KERNEL_BATCH: usize = 20;
const KERNEL_ROUNDS: usize = 5;

pub fn run(config: &Config, report: &mut Report) -> Result<()> {
    let cluster = Cluster::new("bndrv")?;
    let runtime = ops::runtime()?;
    let default_backend = default_backend(&cluster)?;
    eprintln!("[bench] driver: --firewall auto picks {default_backend} here");
    let mut results = Vec::new();
    for backend in BACKENDS {
        let started = Instant::now();
        let host =
            cluster.add_host(HostConfig::new(&format!("d{}", &backend[..3]), DockerVersion::V20).defer_docker())?;
        let plugin = host.start_plugin("loom-bridge", &["--firewall", backend, "--log-level", "warn"])?;
        let socket = host.path_inside(&plugin.socket());
        let result = runtime
            .block_on(measure_backend(config, backend, &socket, &host))
            .with_context(|| format!("loom-bridge with {backend}"))?;
        host.teardown();
        eprintln!("[bench] driver: {backend} done in {:.0} s", started.elapsed().as_secs_f64());
        results.push(result);
    }
    for result in &results {
        let label = if result.backend == default_backend {
            format!("{}, the default", result.backend)
        } else {
            result.backend.to_string()
        };
        push_rows(report, result, &label);
    }
    report.charts.push(endpoints_chart(&results));
    report.charts.push(ports_chart(&results));
    Ok(())
}

async fn measure_backend(config: &Config, backend: &'static str, socket: &Path, host: &Host) -> Result<BackendResult> {
    let mut client = PluginClient::connect(socket).await?;
    let samples = config.samples();
    let create_network = time_create_network(&mut client, samples).await.context("timing CreateNetwork")?;
    let mut timed = TimedEndpoints::default();
    let mut endpoints = ScalingNetwork::create(&mut client, 1, Subnet16 { a: 10, b: 100 }).await?;
    let base = timed.cycles(&mut client, &endpoints.net, endpoints.subnet, samples).await.context("empty network")?;
    let mut endpoint_levels = Vec::new();
    let mut kernel_levels = Vec::new();
    let mut tcp_levels = Vec::new();
    let levels = config.scale_levels();
    for &level in &levels {
        endpoints
            .grow_endpoints(&mut client, level)
            .await
            .with_context(|| format!("adding endpoints up to {level}"))?;
        let cycles = timed.cycles(&mut client, &endpoints.net, endpoints.subnet, samples).await;
        endpoint_levels.push((level, cycles.with_context(|| format!("{level} endpoints"))?));
        kernel_levels
            .push((level, kernel_attach_ms(host).with_context(|| format!("kernel alone at {level} endpoints"))?));
        if Some(&level) == levels.first() || Some(&level) == levels.last() {
            let tcp = endpoint_probe::tcp_between_new_endpoints(
                config,
                &mut client,
                host,
                &endpoints.net,
                endpoints.subnet,
                level as u32,
            )
            .await
            .with_context(|| format!("TCP between two endpoints at {level} endpoints"))?;
            tcp_levels.push((level, tcp));
        }
        eprintln!("[bench] driver: {backend}, {level} endpoints measured");
    }
    endpoints.remove(&mut client).await?;
    let mut ports = ScalingNetwork::create(&mut client, 2, Subnet16 { a: 10, b: 101 }).await?;
    let mut port_levels = Vec::new();
    for level in config.scale_levels() {
        ports.grow_ports(&mut client, level).await.with_context(|| format!("publishing ports up to {level}"))?;
        let cycles = timed.cycles(&mut client, &ports.net, ports.subnet, samples).await;
        port_levels.push((level, cycles.with_context(|| format!("{level} published ports"))?));
        eprintln!("[bench] driver: {backend}, {level} published ports measured");
    }
    ports.remove(&mut client).await?;
    Ok(BackendResult { backend, create_network, base, endpoint_levels, port_levels, kernel_levels, tcp_levels })
}

/// The kernel's own part of CreateEndpoint+Join at the bridge's current size, without the
/// driver: veth pairs made and put on the (only) bridge by `ip -batch`, in rounds of
/// `KERNEL_BATCH` removed again after each (a bridge takes at most 1024 ports); mean ms per pair.
fn kernel_attach_ms(host: &Host) -> Result<f64> {
    let script = format!(
        r#"set -e
b=$(ip -o link show type bridge | awk -F': ' 'NR==1 {{print $2}}')
[ -n "$b" ]
total=0
for round in $(seq 1 {KERNEL_ROUNDS}); do
    start=$(date +%s%N)
    for i in $(seq 1 {KERNEL_BATCH}); do echo "link add kt$i type veth peer name ku$i"; echo "link set kt$i master $b up"; done | ip -batch -
    end=$(date +%s%N)
    total=$(( total + end - start ))
    for i in $(seq 1 {KERNEL_BATCH}); do echo "link del kt$i"; done | ip -batch -
done
echo $(( total / ({KERNEL_ROUNDS} * {KERNEL_BATCH}) ))"#
    );
    let nanos: f64 = host.sh(&script)?.trim().parse().context("the kernel timing script's output")?;
    Ok(nanos / 1e6)
}

/// CreateNetwork of a fresh /24 each time (timed), each removed again at once (not timed).
async fn time_create_network(client: &mut PluginClient, samples: usize) -> Result<Samples> {
    let mut out = Samples::new();
    for i in 0..WARMUP + samples {
        let id = hex_id(KIND_NETWORK, 0x100 + i as u32);
        let request = ops::create_network_on(
            &id,
            &format!("172.{}.{}.0/24", 16 + i / 256, i % 256),
            &format!("172.{}.{}.1/24", 16 + i / 256, i % 256),
            json!({}),
        );
        let start = Instant::now();
        client.call("NetworkDriver.CreateNetwork", &request).await.with_context(|| format!("network #{i}"))?;
        if i >= WARMUP {
            out.push_since(start);
        }
        client.call("NetworkDriver.DeleteNetwork", &ops::network_ref(&id)).await?;
    }
    Ok(out)
}

/// The endpoints being timed: each cycle makes a new one (fresh id) and removes it again.
#[derive(Default)]
struct TimedEndpoints {
    made: u32,
}

impl TimedEndpoints {
    /// `WARMUP + samples` cycles of attach, program one port, revoke, detach; all four timed.
    async fn cycles(
        &mut self,
        client: &mut PluginClient,
        net: &str,
        subnet: Subnet16,
        samples: usize,
    ) -> Result<CycleSamples> {
        let mut out = CycleSamples::default();
        let port_map = ops::tcp_port_map([TIMED_PORT]);
        for i in 0..WARMUP + samples {
            self.made += 1;
            let id = hex_id(KIND_TIMED, self.made);
            let address = subnet.address(TIMED_ADDRESS + self.made % 50_000);
            let ep = Endpoint { net, id: &id, address: &address };
            let keep = i >= WARMUP;
            timed(keep, &mut out.attach, ops::attach(client, &ep, &json!([]))).await.context("CreateEndpoint+Join")?;
            timed(keep, &mut out.program, ops::program(client, &ep, &port_map))
                .await
                .context("ProgramExternalConnectivity")?;
            timed(keep, &mut out.revoke, ops::revoke(client, &ep)).await.context("RevokeExternalConnectivity")?;
            timed(keep, &mut out.detach, ops::detach(client, &ep)).await.context("Leave+DeleteEndpoint")?;
        }
        Ok(out)
    }
}

/// Awaits `op` and records its milliseconds in `samples` if `keep`.
async fn timed(keep: bool, samples: &mut Samples, op: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let start = Instant::now();
    op.await?;
    if keep {
        samples.push_since(start);
    }
    Ok(())
}

/// A /16 network that fills up with background endpoints, with or without published ports.
struct ScalingNetwork {
    /// Keeps the background endpoint ids of different scaling networks apart.
    index: u32,
    net: String,
    subnet: Subnet16,
    background: Vec<String>,
    ports: usize,
}

impl ScalingNetwork {
    async fn create(client: &mut PluginClient, n: u32, subnet: Subnet16) -> Result<ScalingNetwork> {
        let net = hex_id(KIND_NETWORK, n);
        client
            .call("NetworkDriver.CreateNetwork", &ops::create_network(&net, subnet, json!({})))
            .await
            .context("creating the scaling network")?;
        Ok(ScalingNetwork { index: n, net, subnet, background: Vec::new(), ports: 0 })
    }

    fn next_endpoint(&mut self) -> (String, String) {
        let n = self.background.len() as u32;
        (hex_id(KIND_BACKGROUND, self.index << 16 | n), self.subnet.address(2 + n))
    }

    /// Background endpoints (joined, no ports) up to `count`. A Linux bridge takes at most 1024
    /// ports, so `count` stays below that with the timed endpoint on top.
    async fn grow_endpoints(&mut self, client: &mut PluginClient, count: usize) -> Result<()> {
        anyhow::ensure!(count < 1023, "{count} endpoints do not fit on one Linux bridge");
        while self.background.len() < count {
            let (id, address) = self.next_endpoint();
            ops::attach(client, &Endpoint { net: &self.net, id: &id, address: &address }, &json!([])).await?;
            self.background.push(id);
        }
        Ok(())
    }

    /// Published ports up to `count`, `PORTS_PER_HOLDER` per background endpoint.
    async fn grow_ports(&mut self, client: &mut PluginClient, count: usize) -> Result<()> {
        while self.ports < count {
            let batch = (count - self.ports).min(PORTS_PER_HOLDER);
            let first = BACKGROUND_PORT + self.ports as u16;
            let port_map = ops::tcp_port_map(first..first + batch as u16);
            let (id, address) = self.next_endpoint();
            let ep = Endpoint { net: &self.net, id: &id, address: &address };
            ops::attach(client, &ep, &port_map).await?;
            ops::program(client, &ep, &port_map).await?;
            self.background.push(id);
            self.ports += batch;
        }
        Ok(())
    }

    async fn remove(self, client: &mut PluginClient) -> Result<()> {
        for id in &self.background {
            let ep = Endpoint { net: &self.net, id, address: "" };
            if self.ports > 0 {
                ops::revoke(client, &ep).await?;
            }
            ops::detach(client, &ep).await.context("removing a background endpoint")?;
        }
        client
            .call("NetworkDriver.DeleteNetwork", &ops::network_ref(&self.net))
            .await
            .context("removing the scaling network")?;
        Ok(())
    }
}

fn with_p99(op: &str, backend: &str, s: &Samples) -> String {
    format!("{op} p50 ({backend}; p99 {} ms)", fmt_num(s.p99()))
}

/// The backend loom-bridge's `--firewall auto` (its default) picks on a harness host, read back
/// from the kernel: nftables when the driver made its `inet netloom` table.
fn default_backend(cluster: &Cluster) -> Result<&'static str> {
    let host = cluster.add_host(HostConfig::new("dauto", DockerVersion::V20).defer_docker())?;
    host.start_plugin("loom-bridge", &["--log-level", "warn"])?;
    let picked = if host.exec(&["nft", "list", "table", "inet", "netloom"]).is_ok() { "nftables" } else { "iptables" };
    host.teardown();
    Ok(picked)
}

/// `label` names the backend in the rows (and says which one is the default).
fn push_rows(report: &mut Report, r: &BackendResult, label: &str) {
    let b = label;
    report.push(Row::info("driver", with_p99("CreateNetwork", b, &r.create_network), r.create_network.median(), "ms"));
    report.push(Row::budget(
        "driver",
        with_p99("CreateEndpoint+Join", b, &r.base.attach),
        r.base.attach.median(),
        "ms",
        2.0,
    ));
    report.push(Row::info("driver", with_p99("Leave+DeleteEndpoint", b, &r.base.detach), r.base.detach.median(), "ms"));
    report.push(Row::info(
        "driver",
        with_p99("ProgramExternalConnectivity (1 port)", b, &r.base.program),
        r.base.program.median(),
        "ms",
    ));
    report.push(Row::info(
        "driver",
        with_p99("RevokeExternalConnectivity (1 port)", b, &r.base.revoke),
        r.base.revoke.median(),
        "ms",
    ));
    // The nftables backend must scale flat; iptables' figures are reported for comparison.
    let target = if r.backend == "nftables" { Target::AtMost(1.5) } else { Target::None };
    let endpoint_ops: [(&str, Pick); 2] =
        [("CreateEndpoint+Join", |c| &c.attach), ("Leave+DeleteEndpoint", |c| &c.detach)];
    for (op, pick) in endpoint_ops {
        push_scaling_row(report, &format!("{op} ({b})"), "endpoints", &r.endpoint_levels, pick, target);
    }
    push_scaling_row(
        report,
        &format!("ProgramExternalConnectivity ({b})"),
        "published ports",
        &r.port_levels,
        |c| &c.program,
        target,
    );
    if let (Some((low, at_low)), Some((high, at_high))) = (r.kernel_levels.first(), r.kernel_levels.last()) {
        let what = format!(
            "kernel alone ({} host): veth pair made and put on the bridge, mean at {high} endpoints",
            r.backend
        );
        report.push(Row::vs("scaling", what, *at_high, "ms", format!("at {low}"), *at_low, Target::None));
    }
    if let (Some((low, at_low)), Some((high, at_high))) = (r.tcp_levels.first(), r.tcp_levels.last()) {
        let what = format!("TCP between two endpoints of the network ({b}) at {high} endpoints");
        report.push(Row::vs("scaling", what, *at_high, "Gbit/s", format!("at {low}"), *at_low, Target::AtLeast(0.9)));
    }
}

/// "p99 at the largest level vs p99 at the smallest".
fn push_scaling_row(
    report: &mut Report,
    what: &str,
    unit_of_level: &str,
    levels: &[(usize, CycleSamples)],
    pick: fn(&CycleSamples) -> &Samples,
    target: Target,
) {
    let (Some((low, at_low)), Some((high, at_high))) = (levels.first(), levels.last()) else { return };
    let (p50_low, p50_high) = (fmt_num(pick(at_low).median()), fmt_num(pick(at_high).median()));
    let label = format!("{what} p99 at {high} {unit_of_level} (p50 {p50_low} -> {p50_high} ms)");
    report.push(Row::vs(
        "scaling",
        label,
        pick(at_high).p99(),
        "ms",
        format!("p99 at {low}"),
        pick(at_low).p99(),
        target,
    ));
}

fn series(name: String, levels: &[(usize, CycleSamples)], pick: fn(&CycleSamples) -> &Samples) -> Series {
    Series { name, points: levels.iter().map(|(level, c)| (*level as f64, pick(c).p99())).collect() }
}

fn endpoints_chart(results: &[BackendResult]) -> Chart {
    let mut all = Vec::new();
    for r in results {
        all.push(series(format!("CreateEndpoint+Join ({})", r.backend), &r.endpoint_levels, |c| &c.attach));
        all.push(series(format!("Leave+DeleteEndpoint ({})", r.backend), &r.endpoint_levels, |c| &c.detach));
        all.push(series(format!("ProgramExternalConnectivity ({})", r.backend), &r.endpoint_levels, |c| &c.program));
    }
    if let Some(r) = results.first() {
        let points = r.kernel_levels.iter().map(|(level, ms)| (*level as f64, *ms)).collect();
        all.push(Series { name: "kernel alone: veth pair on the bridge (mean)".into(), points });
    }
    Chart {
        file_stem: "scaling-endpoints".into(),
        title: "loom-bridge: request p99 vs endpoints in the network".into(),
        x_desc: "existing endpoints".into(),
        y_desc: "p99 ms".into(),
        series: all,
    }
}

fn ports_chart(results: &[BackendResult]) -> Chart {
    let mut all = Vec::new();
    for r in results {
        all.push(series(format!("ProgramExternalConnectivity ({})", r.backend), &r.port_levels, |c| &c.program));
        all.push(series(format!("RevokeExternalConnectivity ({})", r.backend), &r.port_levels, |c| &c.revoke));
    }
    Chart {
        file_stem: "scaling-ports".into(),
        title: "loom-bridge: publishing one port vs published ports present".into(),
        x_desc: "published ports present".into(),
        y_desc: "p99 ms".into(),
        series: all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycles(ms: f64) -> CycleSamples {
        let mut c = CycleSamples::default();
        for s in [&mut c.attach, &mut c.program, &mut c.revoke, &mut c.detach] {
            s.push(ms);
        }
        c
    }

    #[test]
    fn scaling_rows_compare_the_largest_level_with_the_smallest() {
        let mut report = Report::default();
        let levels = vec![(10, cycles(1.0)), (100, cycles(1.2)), (1000, cycles(3.0))];
        push_scaling_row(&mut report, "X (nftables)", "endpoints", &levels, |c| &c.attach, Target::AtMost(1.5));
        let row = &report.rows[0];
        assert_eq!(row.what, "X (nftables) p99 at 1000 endpoints (p50 1.00 -> 3.00 ms)");
        assert_eq!((row.value, row.anchor), (3.0, 1.0));
        assert_eq!(row.anchor_name, "p99 at 10");
        assert_eq!(row.verdict(), "MISS");
        push_scaling_row(&mut report, "Y", "endpoints", &[], |c| &c.attach, Target::None);
        assert_eq!(report.rows.len(), 1, "no levels, no row");
    }

    #[test]
    fn series_follow_the_levels() {
        let levels = vec![(10, cycles(1.0)), (100, cycles(2.0))];
        let s = series("a".into(), &levels, |c| &c.program);
        assert_eq!(s.points, vec![(10.0, 1.0), (100.0, 2.0)]);
    }

    #[test]
    fn rows_name_backend_and_p99() {
        let mut s = Samples::new();
        s.push(3.14271);
        assert_eq!(with_p99("CreateNetwork", "nftables", &s), "CreateNetwork p50 (nftables; p99 3.14 ms)");
    }
}
