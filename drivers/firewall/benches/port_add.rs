//! Time to publish (and withdraw) one port with 10, 100 and 1000 ports already published, for
//! each backend (and 10 000 for nftables), in a throw-away network namespace. Needs root.
//!
//! `cargo bench -p netloom-firewall --bench port_add` (add `-- --dump` to print the resulting
//! ruleset of a small setup instead).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{snapshot, Fw, Lab};
use netloom_firewall::{BackendKind, NetworkPolicy, PortMapping, Proto};

const SAMPLES: usize = 7;

fn policy() -> NetworkPolicy {
    NetworkPolicy {
        network_id: "ab".repeat(32),
        bridge: "loomA".into(),
        subnets: vec!["198.18.128.0/17".parse().unwrap()],
        masquerade: true,
        snat_source: None,
        icc: true,
        internal: false,
        isolate: true,
    }
}

fn mapping(i: u32) -> PortMapping {
    PortMapping {
        proto: Proto::Tcp,
        host_ip: None,
        host_port: 10_000 + i as u16,
        container_ip: IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 128, 2)) + i)),
        container_port: 80,
    }
}

/// Publishes (`publish`) or withdraws the ports of endpoint `ep`; returns how long the call took.
fn timed(fw: &Fw, ep: String, ports: Vec<PortMapping>, publish: bool) -> Duration {
    let net = policy();
    fw.call(move |fw| {
        Box::pin(async move {
            let t = Instant::now();
            let result =
                if publish { fw.add_ports(&net, &ep, &ports).await } else { fw.remove_ports(&net, &ep, &ports).await };
            result.expect("publishing or withdrawing ports");
            t.elapsed()
        })
    })
}

/// A throw-away namespace with the network's bridge, and the backend with the network added.
fn network_lab(kind: BackendKind) -> (Lab, Fw) {
    let lab = Lab::new();
    lab.bridge("loomA", "198.18.128.1/17");
    let fw = Fw::open(&lab.host, kind);
    let net = policy();
    fw.call(move |fw| Box::pin(async move { fw.add_network(&net).await })).unwrap();
    (lab, fw)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() {
    let dump = std::env::args().any(|a| a == "--dump");
    if dump {
        for kind in [BackendKind::Iptables, BackendKind::Nftables] {
            let (lab, fw) = network_lab(kind);
            let mut with_ip = mapping(1);
            with_ip.host_ip = Some("198.18.0.1".parse().unwrap());
            timed(&fw, "ep1".into(), vec![mapping(0), with_ip], true);
            println!("==== {kind}\n{}", snapshot(&lab.host));
        }
        return;
    }
    println!("backend   existing  add one port (ms, median of {SAMPLES})  remove it (ms)");
    for kind in [BackendKind::Iptables, BackendKind::Nftables] {
        let (_lab, fw) = network_lab(kind);
        let mut existing = 0u32;
        // iptables needs a process per rule to fill; 10 000 only for nftables.
        let targets: &[u32] = if kind == BackendKind::Nftables { &[10, 100, 1000, 10_000] } else { &[10, 100, 1000] };
        for &target in targets {
            // Existing ports: one endpoint per 10 ports, added in bulk.
            while existing < target {
                let batch: Vec<PortMapping> = (existing..(existing + 10).min(target)).map(mapping).collect();
                timed(&fw, format!("fill{existing}"), batch, true);
                existing = (existing + 10).min(target);
            }
            let (mut adds, mut removes) = (Vec::new(), Vec::new());
            for s in 0..SAMPLES {
                let m = vec![mapping(20_000 + s as u32)];
                adds.push(timed(&fw, format!("probe{s}"), m.clone(), true));
                removes.push(timed(&fw, format!("probe{s}"), m, false));
            }
            println!("{kind:<9} {target:>8}  {:>36}  {:>14}", ms(median(adds)), ms(median(removes)));
        }
        fw.call(|fw| Box::pin(async move { fw.remove_all().await })).unwrap();
    }
}
