//! Benchmark (ignored by default; run with
//! `cargo test --release -p netloom-tests --test overlay_bench -- --ignored --nocapture`):
//! cross-host TCP throughput (iperf3, run from the host inside the containers' network
//! namespaces) and container attach latency (`docker network connect`) for loom-overlay next to
//! Docker 20.10's built-in overlay (cluster store on the same etcd) and the raw underlay, in one
//! run on the same two hosts.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netloom_tests::{scenario, wait_until, Cluster, DockerVersion, Host, HostConfig, IMAGE};

const ROUNDS: usize = 5;
const SECONDS: &str = "4";
const ATTACHES: usize = 10;

fn start_etcd(c: &Cluster) -> Result<String> {
    let ip = c.underlay_ip();
    let data = c.dir().join("etcd.data");
    c.spawn_underlay(
        "etcd",
        &[
            "etcd".to_string(),
            "--name=bench".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls=http://{ip}:2379"),
            format!("--advertise-client-urls=http://{ip}:2379"),
            format!("--listen-peer-urls=http://{ip}:2380"),
            format!("--initial-advertise-peer-urls=http://{ip}:2380"),
            format!("--initial-cluster=bench=http://{ip}:2380"),
            "--enable-v2=true".to_string(),
        ],
    )?;
    let endpoint = format!("{ip}:2379");
    wait_until(Duration::from_secs(30), Duration::from_millis(100), "etcd", || {
        Ok(c.underlay_exec(&["etcdctl", "--endpoints", &endpoint, "endpoint", "health"]).is_ok())
    })?;
    Ok(format!("etcd://{endpoint}"))
}

fn pid(h: &Host, container: &str) -> Result<String> {
    Ok(h.docker(&["inspect", "--format", "{{.State.Pid}}", container])?.trim().to_string())
}

fn ip(h: &Host, container: &str, network: &str) -> Result<String> {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    Ok(h.docker(&["inspect", "--format", &format, container])?.trim().to_string())
}

/// iperf3 from `h` (in `netns_pid`'s namespace, or the host's) to `target`: bits per second.
fn iperf(h: &Host, netns_pid: Option<&str>, target: &str, port: &str) -> Result<f64> {
    let netns = netns_pid.map(|p| format!("--net=/proc/{p}/ns/net"));
    let mut argv: Vec<&str> = Vec::new();
    if let Some(netns) = &netns {
        argv.extend(["nsenter", netns.as_str()]);
    }
    argv.extend(["iperf3", "-c", target, "-p", port, "-t", SECONDS, "-J"]);
    let out = h.exec(&argv)?;
    let json: serde_json::Value = serde_json::from_str(&out).context("iperf3 output")?;
    json["end"]["sum_received"]["bits_per_second"].as_f64().context("no bits_per_second in iperf3's output")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}

/// Median time of `docker network connect` of a running container to `network`.
fn attach_latency(h: &Host, network: &str) -> Result<f64> {
    let name = format!("attach-{network}");
    h.docker(&["run", "-d", "--name", &name, IMAGE, "sleep", "600"])?;
    let mut times = Vec::new();
    for _ in 0..ATTACHES {
        let t = Instant::now();
        h.docker(&["network", "connect", network, &name])?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        h.docker(&["network", "disconnect", network, &name])?;
    }
    h.docker(&["rm", "-f", &name])?;
    Ok(median(times))
}

fn bench(c: &Cluster) -> Result<()> {
    let store = start_etcd(c)?;
    let args = [format!("--cluster-store={store}"), "--cluster-advertise=eth0:2376".to_string(), "--log-level=warn".to_string()];
    let hosts = c.add_hosts(vec![
        HostConfig::new("h1", DockerVersion::V20).dockerd_args(&args),
        HostConfig::new("h2", DockerVersion::V20).dockerd_args(&args),
    ])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    for h in &hosts {
        h.start_plugin("loom-overlay", &["--scope", "global", "--store", &store, "--advertise-addr", "eth0", "--log-level", "warn"])?;
    }
    h1.docker(&["network", "create", "-d", "overlay", "--subnet", "10.70.0.0/24", "builtin"])?;
    h1.docker(&["network", "create", "-d", "loom-overlay", "--subnet", "10.71.0.0/24", "loom"])?;
    for (h, name, net) in [(h2, "srv-b", "builtin"), (h2, "srv-l", "loom"), (h1, "cli-b", "builtin"), (h1, "cli-l", "loom")] {
        h.docker(&["run", "-d", "--name", name, "--network", net, IMAGE, "sleep", "600"])?;
    }
    let _servers = [
        h2.spawn("iperf-b", &["nsenter", &format!("--net=/proc/{}/ns/net", pid(h2, "srv-b")?), "iperf3", "-s", "-p", "5201"])?,
        h2.spawn("iperf-l", &["nsenter", &format!("--net=/proc/{}/ns/net", pid(h2, "srv-l")?), "iperf3", "-s", "-p", "5201"])?,
        h2.spawn("iperf-u", &["iperf3", "-s", "-p", "5202"])?,
    ];
    std::thread::sleep(Duration::from_millis(500));
    let (pid_b, pid_l) = (pid(h1, "cli-b")?, pid(h1, "cli-l")?);
    let (ip_b, ip_l) = (ip(h2, "srv-b", "builtin")?, ip(h2, "srv-l", "loom")?);
    let underlay = h2.underlay_ip().to_string();
    let (mut u, mut b, mut l) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        u.push(iperf(h1, None, &underlay, "5202")?);
        b.push(iperf(h1, Some(&pid_b), &ip_b, "5201")?);
        l.push(iperf(h1, Some(&pid_l), &ip_l, "5201")?);
    }
    let (u, b, l) = (median(u) / 1e9, median(b) / 1e9, median(l) / 1e9);
    let (attach_b, attach_l) = (attach_latency(h1, "builtin")?, attach_latency(h1, "loom")?);
    eprintln!("\n[bench] cross-host TCP throughput (iperf3, {SECONDS} s, median of {ROUNDS}) and attach latency (docker network connect, median of {ATTACHES})");
    eprintln!("[bench] {:<28} {:>10} {:>10} {:>12}", "path", "Gbit/s", "x builtin", "attach ms");
    eprintln!("[bench] {:<28} {:>10.2} {:>10} {:>12}", "underlay (host to host)", u, "", "");
    eprintln!("[bench] {:<28} {:>10.2} {:>10.2} {:>12.1}", "Docker 20.10 overlay", b, 1.0, attach_b);
    eprintln!("[bench] {:<28} {:>10.2} {:>10.2} {:>12.1}", "loom-overlay", l, l / b, attach_l);
    eprintln!("[bench] throughput ratio {:.3} (target >= 0.95), attach ratio {:.3} (target <= 1.05)\n", l / b, attach_l / attach_b);
    Ok(())
}

#[test]
#[ignore = "benchmark: run with --ignored"]
fn overlay_benchmark() {
    scenario("ovbench", bench);
}
