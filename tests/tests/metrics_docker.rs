//! Prometheus metrics of a driver under a real dockerd (Docker 26): loom-bridge with
//! --metrics-addr, scraped from the host's own namespace while Docker creates a network, runs and
//! removes containers and is refused a network with an unknown option: the request counts by
//! method and outcome, the duration histogram, the store operations, and the network and endpoint
//! gauges follow what Docker did. A driver without --metrics-addr opens no TCP port.

use anyhow::{ensure, Context, Result};
use netloom_tests::{scenario, Cluster, DockerVersion, Host, HostConfig, IMAGE};

const METRICS: &str = "127.0.0.1:9431";

fn scrape(h: &Host) -> Result<String> {
    h.exec(&["busybox", "wget", "-qO-", &format!("http://{METRICS}/metrics")]).context("scraping /metrics")
}

/// The value of the sample of `metric` whose labels include every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let name = series.split('{').next()?;
        (name == metric && labels.iter().all(|l| series.contains(l))).then(|| value.parse().ok())?
    })
}

fn metrics_scenario(c: &Cluster) -> Result<()> {
    let h = c.add_host(HostConfig::new("h1", DockerVersion::V26))?;
    h.start_plugin("loom-bridge", &["--metrics-addr", METRICS])?;
    // Off by default: a driver started without --metrics-addr listens on no TCP port (shown to
    // see loom-bridge's listener first, so the check can fail).
    h.start_plugin("loom-null", &[])?;
    let listeners = h.exec(&["ss", "-Hltnp"])?;
    ensure!(listeners.contains("loom-bridge"), "ss does not show loom-bridge's metrics listener: {listeners}");
    ensure!(!listeners.contains("loom-null"), "loom-null listens on TCP without --metrics-addr: {listeners}");
    let before = scrape(&h)?;
    ensure!(sample(&before, "netloom_networks", &[]) == Some(0.0), "networks before any: {before}");

    let network = h.network_create("loom-bridge", "mon", &["--subnet", "10.66.0.0/24"])?.trim().to_string();
    for name in ["m1", "m2"] {
        h.docker(&["run", "-d", "--name", name, "--network", "mon", IMAGE, "sleep", "600"])?;
    }
    let refused =
        h.docker(&["network", "create", "-d", "loom-bridge", "-o", "com.docker.network.bridge.bogus=1", "bad"]);
    ensure!(refused.is_err(), "a network with an unknown option was created");

    let text = scrape(&h)?;
    let id = format!("network=\"{network}\"");
    ensure!(sample(&text, "netloom_networks", &[]) == Some(1.0), "netloom_networks: {text}");
    ensure!(sample(&text, "netloom_endpoints", &[&id]) == Some(2.0), "netloom_endpoints of {network}: {text}");
    let create_endpoint = "method=\"NetworkDriver.CreateEndpoint\"";
    let ok = sample(&text, "netloom_requests_total", &[create_endpoint, "outcome=\"ok\""]);
    ensure!(ok == Some(2.0), "CreateEndpoint ok: {ok:?}: {text}");
    let create_network = "method=\"NetworkDriver.CreateNetwork\"";
    let failed = sample(&text, "netloom_requests_total", &[create_network, "outcome=\"error\""]);
    ensure!(failed == Some(1.0), "CreateNetwork error: {failed:?}: {text}");
    let timed = sample(&text, "netloom_request_duration_seconds_count", &[create_endpoint]);
    ensure!(timed == Some(2.0), "CreateEndpoint durations counted: {timed:?}");
    // Its records went to its store: counted by operation and outcome.
    let stored = sample(&text, "netloom_store_operations_total", &["outcome=\"ok\""]);
    ensure!(stored.is_some_and(|n| n > 0.0), "no store operation counted: {stored:?}: {text}");

    h.docker(&["rm", "-f", "m2"])?;
    let text = scrape(&h)?;
    ensure!(sample(&text, "netloom_endpoints", &[&id]) == Some(1.0), "after m2 left: {text}");
    eprintln!(
        "[metrics] {}",
        text.lines()
            .filter(|l| l.starts_with("netloom_") && !l.contains("_bucket"))
            .collect::<Vec<_>>()
            .join("\n[metrics] ")
    );

    h.docker(&["rm", "-f", "m1"])?;
    h.docker(&["network", "rm", "mon"])?;
    ensure!(sample(&scrape(&h)?, "netloom_networks", &[]) == Some(0.0), "networks after removal");
    h.plugins_still_running()
}

#[test]
fn metrics_loom_bridge_docker26() {
    scenario("metrics", metrics_scenario);
}
