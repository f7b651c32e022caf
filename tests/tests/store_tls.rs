//! loom-ipam and loom-overlay on two Docker 26 hosts through an etcd that serves clients only over
//! TLS and only to clients with a certificate from its CA: networks, unique addresses and
//! cross-host traffic work with the `--store-*` options, and the same binaries without the CA stop
//! within seconds saying TLS. Needs `cargo build --release --workspace --bins`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netloom_tests::{
    bin_dir, ping, scenario, Cluster, DockerVersion, Host, HostConfig, LocalOverlay, UnderlayEtcd, IMAGE,
};

const SUBNET: &str = "10.99.0.0/24";
/// A misconfigured binary must have stopped well before this.
const FAST: Duration = Duration::from_secs(8);

/// Runs `binary` on `h` with `args` (and a socket and state of its own) and expects it to exit
/// non-zero within [`FAST`] saying `want`.
fn stops_fast(h: &Host, binary: &str, args: &[&str], want: &str) -> Result<()> {
    let bin = bin_dir().join(binary).display().to_string();
    let run = format!("/tmp/{binary}-refused");
    let (socket, state) = (format!("{run}.sock"), format!("{run}.state"));
    let mut argv = vec!["timeout", "20", bin.as_str(), "--socket", &socket, "--state-dir", &state];
    argv.extend_from_slice(&["--docker-host", "none"]);
    argv.extend_from_slice(args);
    let started = Instant::now();
    let outcome = h.exec(&argv);
    let took = started.elapsed();
    let _ = h.exec(&["rm", "-rf", &socket, &state]);
    let err = match outcome {
        Ok(out) => anyhow::bail!("{binary} {args:?} kept running and exited 0: {out}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(took < FAST, "{binary} {args:?} stopped only after {took:?}: {err}");
    ensure!(err.contains(want), "{binary} {args:?}: the error does not say {want:?}:\n{err}");
    eprintln!("[store_tls] {binary} refused in {took:?}");
    Ok(())
}

fn tls_scenario(c: &Cluster) -> Result<()> {
    let etcd = UnderlayEtcd::start_tls(c, 1)?;
    let store = etcd.url(c);
    let tls = etcd.store_tls_args();
    let hosts =
        c.add_hosts(vec![HostConfig::new("t1", DockerVersion::V26), HostConfig::new("t2", DockerVersion::V26)])?;
    let (t1, t2) = (&hosts[0], &hosts[1]);

    // Without the CA, or with the CA but without the client certificate: stop, saying TLS.
    let ca_only: Vec<&str> = tls[..2].iter().map(String::as_str).collect();
    let mut refusals = 0;
    for binary in ["loom-ipam", "loom-overlay"] {
        let vtep = t1.underlay_ip().to_string();
        let overlay_args: &[&str] = if binary == "loom-overlay" { &["--advertise-addr", &vtep] } else { &[] };
        stops_fast(t1, binary, &[&["--store", &store][..], overlay_args].concat(), "TLS")?;
        stops_fast(t1, binary, &[&["--store", &store][..], &ca_only, overlay_args].concat(), "TLS")?;
        refusals += 2;
    }
    ensure!(refusals == 4);

    // With the CA and the client certificate everything works as over plain etcd.
    for h in [t1, t2] {
        LocalOverlay::new(&store).store_options(&tls).log_level("info").start(h)?;
    }
    for h in [t1, t2] {
        h.network_create("loom-overlay", "secure", &["--ipam-driver", "loom-ipam", "--subnet", SUBNET])?;
    }
    for (h, name) in [(t1, "a1"), (t2, "b1"), (t1, "a2"), (t2, "b2")] {
        h.docker(&["run", "-d", "--name", name, "--network", "secure", IMAGE, "sleep", "600"])
            .with_context(|| format!("starting {name} on {}", h.name()))?;
    }
    let mut addresses = Vec::new();
    for (h, name) in [(t1, "a1"), (t2, "b1"), (t1, "a2"), (t2, "b2")] {
        addresses.push(h.container_ip(name, "secure")?);
    }
    let mut unique = addresses.clone();
    unique.sort();
    unique.dedup();
    ensure!(unique.len() == addresses.len(), "addresses handed out twice across hosts: {addresses:?}");
    ping(t1, "a1", &addresses[1])?;
    ping(t2, "b2", &addresses[0])?;
    let keys = etcd.keys(c, 0, "/netloom/v1/")?;
    ensure!(keys.iter().any(|k| k.contains("/overlay/")), "nothing of the overlay in the TLS etcd: {keys:?}");

    for (h, name) in [(t1, "a1"), (t2, "b1"), (t1, "a2"), (t2, "b2")] {
        h.docker(&["rm", "-f", name])?;
    }
    for h in [t1, t2] {
        h.docker(&["network", "rm", "secure"])?;
    }
    Ok(())
}

#[test]
fn store_tls_client_certificates_docker26() {
    scenario("stls", tls_scenario);
}
