//! Helpers the attach and throughput sections share: containers' network namespaces, iperf3 runs
//! in a network namespace of a host, and the two-host Docker 20.10 cluster with a cluster store.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use netloom_tests::{wait_until, Cluster, DockerVersion, Host, HostConfig, NsProc, UnderlayEtcd};

/// The port iperf3 servers listen on inside containers.
pub const IPERF_PORT: u16 = 5201;
/// The overlay networks of `create_overlay_networks`.
pub const BUILTIN_OVERLAY: &str = "builtin-ov";
pub const LOOM_OVERLAY: &str = "loom-ov";
/// The encrypted loom-overlay network of `create_encrypted_overlay`.
pub const LOOM_OVERLAY_ENCRYPTED: &str = "loom-ov-enc";

/// A network namespace as `nsenter --net=` takes it (a path inside the host's mount namespace).
#[derive(Debug, Clone, PartialEq)]
pub enum Netns {
    /// The host's own namespace: no nsenter.
    Host,
    /// A container's, by its pid.
    Container(u32),
    /// One made with `ip netns add <name>` on the host (it lives on the host's private /run).
    Named(String),
}

impl Netns {
    pub fn of_container(h: &Host, container: &str) -> Result<Netns> {
        Ok(Netns::Container(u32::try_from(h.container_pid(container)?)?))
    }

    /// `argv` prefixed with the nsenter that runs it in this namespace.
    pub fn wrap(&self, argv: &[&str]) -> Vec<String> {
        let mut out = match self {
            Netns::Host => Vec::new(),
            Netns::Container(pid) => vec!["nsenter".to_string(), format!("--net=/proc/{pid}/ns/net")],
            Netns::Named(name) => vec!["nsenter".to_string(), format!("--net=/run/netns/{name}")],
        };
        out.extend(argv.iter().map(|a| a.to_string()));
        out
    }
}

/// Starts an iperf3 server on `h` in `netns` on `port` and waits until it listens.
pub fn spawn_iperf3_server(h: &Host, name: &str, netns: &Netns, port: u16) -> Result<NsProc> {
    let port_s = port.to_string();
    let server = h.spawn(name, &netns.wrap(&["iperf3", "-s", "-p", &port_s]))?;
    let filter = format!("sport = :{port}");
    wait_until(Duration::from_secs(10), Duration::from_millis(50), &format!("iperf3 server {name}"), || {
        let out = h.exec(&netns.wrap(&["ss", "-Hltn", &filter]))?;
        Ok(!out.trim().is_empty())
    })?;
    Ok(server)
}

/// One iperf3 TCP run from `netns` on `h` to `target:port` for `seconds`: Gbit/s received.
pub fn iperf3_gbits(h: &Host, netns: &Netns, target: &str, port: u16, seconds: u32) -> Result<f64> {
    let (port, seconds) = (port.to_string(), seconds.to_string());
    let out = h
        .exec(&netns.wrap(&["iperf3", "-c", target, "-p", &port, "-t", &seconds, "-J"]))
        .with_context(|| format!("iperf3 to {target}:{port}"))?;
    Ok(received_bits_per_second(&out)? / 1e9)
}

/// The receiver's rate from iperf3's `-J` report.
pub fn received_bits_per_second(json: &str) -> Result<f64> {
    let report: serde_json::Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(error) = report["error"].as_str() {
        anyhow::bail!("iperf3: {error}");
    }
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second in iperf3's report")
}

/// The order of the contenders in one round of an interleaved measurement: forward on even
/// rounds, backward on odd ones, so that no contender always runs right after the same other one.
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    if round.is_multiple_of(2) {
        (0..n).collect()
    } else {
        (0..n).rev().collect()
    }
}

/// Two Docker 20.10 hosts sharing a cluster store (etcd in the underlay), each running
/// loom-overlay on the same store: the built-in overlay and loom-overlay side by side.
pub fn overlay_hosts(c: &Cluster) -> Result<Vec<Arc<Host>>> {
    let store = UnderlayEtcd::start(c, 1)?.url(c);
    let dockerd_args = [
        format!("--cluster-store={store}"),
        "--cluster-advertise=eth0:2376".to_string(),
        "--log-level=warn".to_string(),
    ];
    let hosts = c.add_hosts(vec![
        HostConfig::new("h1", DockerVersion::V20).dockerd_args(&dockerd_args),
        HostConfig::new("h2", DockerVersion::V20).dockerd_args(&dockerd_args),
    ])?;
    for h in &hosts {
        h.start_plugin(
            "loom-overlay",
            &["--scope", "global", "--store", &store, "--advertise-addr", "eth0", "--log-level", "warn"],
        )?;
    }
    Ok(hosts)
}

/// Creates the overlay networks both hosts of `overlay_hosts` see: `BUILTIN_OVERLAY` and
/// `LOOM_OVERLAY`.
pub fn create_overlay_networks(h: &Host) -> Result<()> {
    h.docker(&["network", "create", "-d", "overlay", "--subnet", "10.70.0.0/24", BUILTIN_OVERLAY])?;
    h.docker(&["network", "create", "-d", "loom-overlay", "--subnet", "10.71.0.0/24", LOOM_OVERLAY])?;
    Ok(())
}

/// Creates `LOOM_OVERLAY_ENCRYPTED` (`-o encrypted`: its traffic between hosts in WireGuard
/// tunnels) on the hosts of `overlay_hosts`.
pub fn create_encrypted_overlay(h: &Host) -> Result<()> {
    let (d, o, s) = ("loom-overlay", "encrypted", "10.72.0.0/24");
    h.docker(&["network", "create", "-d", d, "-o", o, "--subnet", s, LOOM_OVERLAY_ENCRYPTED])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_receivers_rate() {
        let json = r#"{"start": {}, "intervals": [],
            "end": {"sum_sent": {"bits_per_second": 9.9e9}, "sum_received": {"bits_per_second": 9.5e9}}}"#;
        assert_eq!(received_bits_per_second(json).unwrap(), 9.5e9);
    }

    #[test]
    fn iperf3_errors_are_reported() {
        let json =
            r#"{"start": {}, "intervals": [], "end": {}, "error": "unable to connect to server: Connection refused"}"#;
        let err = received_bits_per_second(json).unwrap_err().to_string();
        assert!(err.contains("Connection refused"), "{err}");
        assert!(received_bits_per_second("iperf3: error").is_err());
        assert!(received_bits_per_second(r#"{"end": {}}"#).is_err());
    }

    #[test]
    fn rounds_alternate_direction() {
        assert_eq!(round_order(0, 3), [0, 1, 2]);
        assert_eq!(round_order(1, 3), [2, 1, 0]);
        assert_eq!(round_order(2, 2), [0, 1]);
        assert_eq!(round_order(7, 2), [1, 0]);
    }

    #[test]
    fn nsenter_prefix_by_namespace() {
        assert_eq!(Netns::Host.wrap(&["ss", "-lt"]), ["ss", "-lt"]);
        assert_eq!(Netns::Container(42).wrap(&["ip", "a"]), ["nsenter", "--net=/proc/42/ns/net", "ip", "a"]);
        assert_eq!(Netns::Named("bare1".into()).wrap(&["ip"]), ["nsenter", "--net=/run/netns/bare1", "ip"]);
    }
}
