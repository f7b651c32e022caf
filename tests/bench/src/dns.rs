//! Container names across hosts (Docker 26, loom-overlay local scope answering dockerd's `--dns`):
//! how fast a container's lookup of a container on the other host is answered through Docker's
//! embedded resolver (p50/p99 of a burst, next to a name Docker answers itself and to the same
//! lookup asked of loom-overlay directly), and how long after
//! `docker run` (and `docker rm`) on one host the name resolves (stops resolving) on the other.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{ensure, Result};
use netloom_tests::{
    bin_dir, AskFrom, Cluster, DnsProbe, DnsUpstream, DockerVersion, Host, HostConfig, LocalOverlay, UnderlayEtcd,
    EMBEDDED_RESOLVER, IMAGE,
};

use crate::config::Config;
use crate::report::{Report, Row};
use crate::stats::Samples;

const NET: &str = "bench-names";
/// Targets: a lookup's p99, and a name coming or going on the other host.
const LOOKUP_P99_MS: f64 = 5.0;
const PROPAGATION_MS: f64 = 1000.0;
/// Queries before the timed burst (first forwards, caches of the path warmed alike).
const WARMUP_QUERIES: usize = 20;

fn sleeper(h: &Host, name: &str) -> Result<String> {
    h.docker(&["run", "-d", "--name", name, "--network", NET, IMAGE, "sleep", "3600"])
}

pub fn run(config: &Config, report: &mut Report) -> Result<()> {
    let c = Cluster::new("bndns")?;
    let probe_bin = bin_dir().join("netloom-probe").display().to_string();
    let store = UnderlayEtcd::start(&c, 1)?.url(&c);
    let upstream = DnsUpstream::start(&c, &probe_bin, &[("outside.example", Ipv4Addr::new(10, 123, 45, 67))])?;
    let host =
        |name: &str| HostConfig::new(name, DockerVersion::V26).dns_on_own_address().dockerd_args(&["--log-level=warn"]);
    let hosts = c.add_hosts(vec![host("h1"), host("h2")])?;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let resolv_conf = upstream.resolv_conf().display().to_string();
    for h in [h1, h2] {
        LocalOverlay::new(&store).log_level("warn").overlay_args(&["--dns-resolv-conf", &resolv_conf]).start(h)?;
        let vni = "com.docker.network.driver.overlay.vxlanid_list=5700";
        h.network_create("loom-overlay", NET, &["--ipam-driver", "loom-ipam", "--subnet", "10.72.0.0/24", "-o", vni])?;
    }
    sleeper(h1, "asker")?;
    sleeper(h1, "neighbour")?;
    sleeper(h2, "remote")?;
    let probe = DnsProbe::new(&probe_bin);
    let asker = AskFrom::Container(h1, "asker");
    probe.wait(asker, EMBEDDED_RESOLVER, "remote", true, Duration::from_secs(10))?;

    // ---- lookup latency through Docker's embedded resolver ----
    let count = config.dns_queries();
    let dns_addr = format!("{}:53", h1.underlay_ip());
    let paths = [
        ("remote", EMBEDDED_RESOLVER, "another host's container through Docker's resolver (loom-overlay answers)"),
        ("neighbour", EMBEDDED_RESOLVER, "a same-host container (Docker answers)"),
        ("remote", dns_addr.as_str(), "another host's container asked of loom-overlay directly"),
    ];
    let mut bursts = Vec::new();
    for (name, server, what) in paths {
        probe.burst(asker, server, name, WARMUP_QUERIES)?;
        let burst = probe.burst(asker, server, name, count)?;
        ensure!(burst.failed == 0, "{} of {count} lookups of {name} at {server} got no address", burst.failed);
        eprintln!(
            "[bench] dns: {count} lookups of {name} at {server}: p50 {:?}, p99 {:?}, max {:?}",
            burst.p50, burst.p99, burst.max
        );
        bursts.push((what, burst));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (i, (what, burst)) in bursts.into_iter().enumerate() {
        let what = format!("lookup of {what} from a container, p99 of {count} (p50 {:.2} ms)", ms(burst.p50));
        report.push(if i == 0 {
            Row::budget("dns", what, ms(burst.p99), "ms", LOOKUP_P99_MS)
        } else {
            Row::info("dns", what, ms(burst.p99), "ms")
        });
    }

    // ---- a name coming and going on the other host ----
    let (mut appear, mut appear_returned, mut gone) = (Samples::new(), Samples::new(), Samples::new());
    for round in 0..config.dns_rounds() {
        let name = format!("fresh{round}");
        let limit = Duration::from_secs(10);
        let arrival = probe.during(asker, EMBEDDED_RESOLVER, (&name, true), limit, || sleeper(h2, &name))?;
        let removal =
            probe.during(asker, EMBEDDED_RESOLVER, (&name, false), limit, || h2.docker(&["rm", "-f", &name]))?;
        appear.push_duration(arrival.since_start);
        appear_returned.push_duration(arrival.since_return);
        gone.push_duration(removal.since_start);
        eprintln!(
            "[bench] dns: {name} resolved on h1 {:?} after docker run started on h2 ({:?} after it returned), \
             gone {:?} after docker rm -f started ({:?} after it returned)",
            arrival.since_start, arrival.since_return, removal.since_start, removal.since_return
        );
    }
    let rounds = config.dns_rounds();
    report.push(Row::budget(
        "dns",
        format!(
            "docker run on one host to the name resolving on the other, median of {rounds} ({:.0} ms after docker run returned)",
            appear_returned.median()
        ),
        appear.median(),
        "ms",
        PROPAGATION_MS,
    ));
    report.push(Row::budget(
        "dns",
        format!("docker rm -f on one host to the name gone on the other, median of {rounds}"),
        gone.median(),
        "ms",
        PROPAGATION_MS,
    ));
    Ok(())
}
