use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use netloom_firewall::BackendKind;
use netloom_plugin_api::{CommonArgs, Plugin};

mod cache;
mod cluster;
#[allow(dead_code)] // until the encryption work wires it in
mod crypt;
mod dns;
mod dns_setup;
mod fabric;
mod garp;
mod gateway;
mod guard;
mod handlers;
mod liveness;
mod names;
mod names_sync;
mod network;
mod options;
mod overlay;
mod peers;
mod ports;
mod probe;
mod reconcile;
mod records;
mod removal;
mod rotate;
mod start;
mod state;
mod status;
mod sync;
#[cfg(test)]
mod test_overlay;
mod tunnel_ips;
mod tunnel_setup;
#[cfg(test)]
mod tunnel_tests;
mod underlay;

use dns_setup::{DnsListen, DnsSettings};
use records::Mode;

/// The longest time between two full checks of the kernel's peer entries against the store.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(10);

/// Multi-host VXLAN networks: containers on different hosts share one L2 network, with the
/// networks, VNIs and peers kept in a store every host shares (etcd or Consul).
#[derive(Parser)]
#[command(name = "loom-overlay", version, about)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,

    /// local: Docker 23+ (run the same `docker network create` on every host; hosts agree by
    /// the VNI option, else by the subnet). global: Docker up to 20.10 with --cluster-store
    /// (create once, every host sees it).
    #[arg(long, value_enum, default_value_t = Mode::Local)]
    scope: Mode,

    /// This host's tunnel endpoint on the underlay: one of its IP addresses, or an interface
    /// (its first IPv4 address is used)
    #[arg(long, value_name = "IP|IFACE")]
    advertise_addr: Option<String>,

    /// UDP port for VXLAN
    #[arg(long, default_value_t = 4789, value_parser = clap::value_parser!(u16).range(1..))]
    vxlan_port: u16,

    /// Seconds after which a host that stopped renewing its lease counts as absent (its driver is
    /// down; its containers may well run on)
    #[arg(long, default_value_t = 15, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..))]
    lease_ttl: u64,

    /// Seconds an absent host's tunnel endpoint must stay unreachable before the host counts as
    /// gone and its peers' entries are removed here; until then traffic to its containers goes
    /// on. 0: an absent host is gone at once
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    peer_grace: u64,

    /// Seconds a gone host's peer records stay in the store before a live host deletes them
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    dead_host_grace: u64,

    /// Where the per-network namespaces are bound [default: /run/netloom/loom-overlay/netns]
    #[arg(long, value_name = "DIR")]
    netns_dir: Option<std::path::PathBuf>,

    /// Firewall backend for docker_gwbridge's masquerade, isolation and published ports
    /// (needed when dockerd runs with --iptables=false; harmless otherwise) and for the VXLAN
    /// guard: auto (nftables where the kernel has nf_tables, else iptables), iptables, nftables,
    /// or none (no docker_gwbridge rules; the VXLAN guard then uses the auto-detected backend)
    #[arg(long, value_enum, default_value_t = FirewallChoice::Auto)]
    firewall: FirewallChoice,

    /// Local scope: where container names of every host are answered (add its address to
    /// dockerd's --dns): ADDR, ADDR:PORT, or none [default: the advertise address, port 53]
    #[arg(long, value_name = "ADDR[:PORT]|none")]
    dns_addr: Option<DnsListen>,

    /// The upstream resolvers names not of loom-overlay are forwarded to (re-read when it changes)
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    dns_resolv_conf: std::path::PathBuf,

    /// UDP port of the WireGuard socket (on the advertise address) that carries encrypted
    /// networks (`-o encrypted`) between hosts
    #[arg(long, default_value_t = crypt::DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    wireguard_port: u16,

    /// Where each host's tunnel address (the VXLAN endpoint of its encrypted networks, inside its
    /// tunnel namespace) is taken from; the same on every host
    #[arg(long, value_name = "CIDR", default_value = tunnel_ips::DEFAULT_SUBNET)]
    tunnel_subnet: ipnetwork::IpNetwork,

    /// Which WireGuard carries encrypted networks: the kernel's when it has WireGuard, else a
    /// userspace one on a TUN device (auto); or only one of them
    #[arg(long, value_name = "auto|kernel|userspace", default_value = "auto")]
    wireguard: crypt::WireguardMode,

    /// The TUN clone device the userspace WireGuard opens (for tests)
    #[arg(long, value_name = "PATH", default_value = crypt::DEFAULT_TUN_PATH, hide = true)]
    tun_device: std::path::PathBuf,

    /// Ask the running loom-overlay (over --socket) for a new WireGuard key for this host's
    /// tunnel, print its public key and exit
    #[arg(long)]
    rotate_key: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FirewallChoice {
    Auto,
    Iptables,
    Nftables,
    None,
}

impl FirewallChoice {
    /// (docker_gwbridge's backend, the VXLAN guard's backend).
    fn backends(self) -> (Option<BackendKind>, BackendKind) {
        match self {
            FirewallChoice::Auto => {
                let kind = BackendKind::detect();
                (Some(kind), kind)
            }
            FirewallChoice::Iptables => (Some(BackendKind::Iptables), BackendKind::Iptables),
            FirewallChoice::Nftables => (Some(BackendKind::Nftables), BackendKind::Nftables),
            FirewallChoice::None => (None, BackendKind::detect()),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.rotate_key {
        return rotate::ask_driver(&args.common.settings("loom-overlay").socket).await;
    }
    if let Err(e) = tunnel_ips::candidates(args.tunnel_subnet, "") {
        eprintln!("loom-overlay: {e:#}");
        return ExitCode::FAILURE;
    }
    let choice = args.firewall;
    let mut config = overlay::Config {
        mode: args.scope,
        advertise: args.advertise_addr.clone(),
        port: args.vxlan_port,
        // Set from the common --reconcile-interval below.
        reconcile_every: STORE_CHECK_EVERY,
        lease_ttl: Duration::from_secs(args.lease_ttl),
        dead_host_grace: Duration::from_secs(args.dead_host_grace),
        peer_grace: Duration::from_secs(args.peer_grace),
        netns_dir: args.netns_dir.clone(),
        firewall: None,
        guard_firewall: BackendKind::Nftables,
        dns: DnsSettings {
            listen: args.dns_addr.unwrap_or(DnsListen::Advertise),
            resolv_conf: args.dns_resolv_conf.clone(),
        },
        crypt: tunnel_setup::CryptSettings {
            port: args.wireguard_port,
            subnet: args.tunnel_subnet,
            tun_device: args.tun_device.clone(),
            wireguard: args.wireguard,
            // Set from the common --state-dir below.
            state_dir: std::path::PathBuf::new(),
        },
    };
    netloom_plugin_api::run("loom-overlay", &args.common, |settings| async move {
        // Resolved once logging is up: the fallback to iptables says why in the log.
        (config.firewall, config.guard_firewall) = choice.backends();
        // The store is re-checked at least this often, also when Docker is asked less often.
        config.reconcile_every = settings.reconcile_interval.min(STORE_CHECK_EVERY);
        config.crypt.state_dir = settings.state_dir.clone();
        let overlay = overlay::Overlay::start(&settings, config).await?;
        Ok(Plugin::network(handlers::Driver(overlay)))
    })
    .await
}
