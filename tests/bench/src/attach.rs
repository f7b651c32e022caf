//! Attach latency: the wall time of `docker run -d --network <net> IMAGE sleep 600` on a netloom
//! driver next to Docker's built-in driver on the same dockerd, interleaved so that drift (other
//! load on the machine, dockerd's own state) hits both alike. Each container is removed
//! (untimed) right after it is timed, so every run sees the same host state.

use anyhow::{Context, Result};
use netloom_tests::{Cluster, DockerVersion, Host, HostConfig, IMAGE};

use crate::config::Config;
use crate::docker_util::{create_overlay_networks, overlay_hosts, round_order, BUILTIN_OVERLAY, LOOM_OVERLAY};
use crate::report::{Report, Row, Target};
use crate::stats::{time_ms, Samples};

const WARMUP_ROUNDS: usize = 3;
const TARGET: Target = Target::AtMost(1.05);

/// A network to attach containers to, and how the table calls its driver.
struct Contender {
    driver: &'static str,
    network: &'static str,
}

/// The overlay comes last: Docker 20.10's own overlay fails now and then under load (a dockerd
/// thread left in its sandbox namespace, moby/moby#39372), and that ends the section.
pub fn run(config: &Config, report: &mut Report) -> Result<()> {
    bridge_on(DockerVersion::V20, "bnatt", config, report)?;
    bridge_on(DockerVersion::V26, "bnatt26", config, report)?;
    overlay(config, report)
}

/// loom-bridge (iptables and nftables backends) next to the built-in bridge on one host.
fn bridge_on(version: DockerVersion, cluster: &str, config: &Config, report: &mut Report) -> Result<()> {
    let c = Cluster::new(cluster)?;
    let h = c.add_host(HostConfig::new("h1", version).dockerd_args(&["--log-level=warn"]))?;
    h.start_plugin_as("loom-bridge", "loom-bridge-ipt", &["--firewall", "iptables", "--log-level", "warn"])?;
    h.start_plugin_as("loom-bridge", "loom-bridge-nft", &["--firewall", "nftables", "--log-level", "warn"])?;
    let contenders = [
        Contender { driver: "bridge", network: "att-bridge" },
        Contender { driver: "loom-bridge-ipt", network: "att-loom" },
        Contender { driver: "loom-bridge-nft", network: "att-loomnft" },
    ];
    for (i, contender) in contenders.iter().enumerate() {
        let subnet = format!("172.30.{}.0/24", i + 1);
        h.docker(&["network", "create", "-d", contender.driver, "--subnet", &subnet, contender.network])?;
    }
    let samples = interleaved(&h, &contenders, config.attach_rounds(), &version.to_string())?;
    push_pair(
        report,
        &format!("loom-bridge --firewall iptables vs bridge ({version})"),
        "bridge",
        &samples[1],
        &samples[0],
    );
    push_pair(
        report,
        &format!("loom-bridge --firewall nftables vs bridge ({version})"),
        "bridge",
        &samples[2],
        &samples[0],
    );
    Ok(())
}

/// loom-overlay next to Docker 20.10's built-in overlay (cluster store on the same etcd), timed
/// on the first of two hosts.
fn overlay(config: &Config, report: &mut Report) -> Result<()> {
    let c = Cluster::new("bnatov")?;
    let hosts = overlay_hosts(&c)?;
    create_overlay_networks(&hosts[0])?;
    let contenders = [
        Contender { driver: "overlay", network: BUILTIN_OVERLAY },
        Contender { driver: "loom-overlay", network: LOOM_OVERLAY },
    ];
    let samples = interleaved(&hosts[0], &contenders, config.attach_rounds(), "Docker 20.10 overlay");
    if samples.is_err() {
        // Its logs are printed and kept (dockerd's log says why).
        c.mark_failed();
    }
    let samples = samples?;
    push_pair(report, "loom-overlay vs overlay (Docker 20.10)", "overlay", &samples[1], &samples[0]);
    Ok(())
}

/// `rounds` timed runs per contender after the warm-up, in alternating order; samples in the
/// contenders' order.
fn interleaved(h: &Host, contenders: &[Contender], rounds: usize, label: &str) -> Result<Vec<Samples>> {
    eprintln!(
        "[bench] attach on {label}: {WARMUP_ROUNDS} warm-up + {rounds} timed rounds of {} drivers",
        contenders.len()
    );
    for round in 0..WARMUP_ROUNDS {
        for i in round_order(round, contenders.len()) {
            timed_run(h, contenders[i].network)?;
        }
    }
    let mut samples = vec![Samples::new(); contenders.len()];
    for round in 0..rounds {
        for i in round_order(round, contenders.len()) {
            samples[i].push(timed_run(h, contenders[i].network)?);
        }
    }
    for (contender, s) in contenders.iter().zip(&samples) {
        eprintln!(
            "[bench] attach on {label}: {:<16} p50 {:.1} ms, p95 {:.1} ms",
            contender.driver,
            s.median(),
            s.p95()
        );
    }
    Ok(samples)
}

/// Milliseconds `docker run -d` took on `network`; the container is then removed, untimed.
fn timed_run(h: &Host, network: &str) -> Result<f64> {
    let (out, ms) = time_ms(|| h.docker(&["run", "-d", "--network", network, IMAGE, "sleep", "600"]));
    let id = out.with_context(|| format!("docker run on {network}"))?;
    h.docker(&["rm", "-f", id.trim()]).with_context(|| format!("removing the container on {network}"))?;
    Ok(ms)
}

fn push_pair(report: &mut Report, versus: &str, anchor_name: &str, netloom: &Samples, builtin: &Samples) {
    report.push(Row::vs(
        "attach",
        format!("docker run -d p50, {versus}"),
        netloom.median(),
        "ms",
        anchor_name,
        builtin.median(),
        TARGET,
    ));
    report.push(Row::vs(
        "attach",
        format!("docker run -d p95, {versus}"),
        netloom.p95(),
        "ms",
        anchor_name,
        builtin.p95(),
        TARGET,
    ));
}
