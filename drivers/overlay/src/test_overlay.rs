//! An `Overlay` for the crate's own tests: a shared store given by the test, private records in
//! a temporary directory, no firewall, no DNS, the kernel of the test's own namespace.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netloom_dataplane::Netlink;
use netloom_ipam::{Ipam, IpamConfig};
use netloom_plugin_api::locks::KeyedLocks;
use netloom_store::{self as store, DriverRecords, Store, DEFAULT_PREFIX};

use crate::cluster::Shared;
use crate::dns_setup::{DnsListen, DnsSettings};
use crate::fabric::Fabric;
use crate::overlay::{Config, Overlay};
use crate::records::Mode;
use crate::state::State;
use crate::tunnel_setup::CryptSettings;

/// What differs between the tests' overlays.
pub struct TestHost<'a> {
    pub host: &'a str,
    pub mode: Mode,
    /// Private records, namespaces and the key go under it.
    pub dir: &'a Path,
    pub advertise: Option<&'a str>,
    pub vxlan_port: u16,
    pub wireguard_port: u16,
    pub tun_device: PathBuf,
    pub wireguard: crate::crypt::WireguardMode,
}

impl<'a> TestHost<'a> {
    pub fn new(host: &'a str, mode: Mode, dir: &'a Path) -> Self {
        TestHost {
            host,
            mode,
            dir,
            advertise: None,
            vxlan_port: 4789,
            wireguard_port: crate::crypt::DEFAULT_PORT,
            tun_device: crate::crypt::DEFAULT_TUN_PATH.into(),
            wireguard: crate::crypt::WireguardMode::Userspace,
        }
    }

    pub async fn overlay(self, shared: Arc<dyn Store>) -> Arc<Overlay> {
        let embedded = store::open(None, &self.dir.join("private"), DEFAULT_PREFIX).await.unwrap();
        let ipam = Ipam::new(shared.clone(), self.host, IpamConfig::default()).await.unwrap();
        let config = Config {
            mode: self.mode,
            advertise: self.advertise.map(str::to_string),
            port: self.vxlan_port,
            reconcile_every: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(15),
            dead_host_grace: Duration::from_secs(300),
            peer_grace: Duration::from_secs(300),
            netns_dir: None,
            firewall: None,
            guard_firewall: netloom_firewall::BackendKind::Nftables,
            dns: DnsSettings { listen: DnsListen::Off, resolv_conf: "/etc/resolv.conf".into() },
            crypt: CryptSettings {
                port: self.wireguard_port,
                subnet: crate::tunnel_ips::DEFAULT_SUBNET.parse().unwrap(),
                tun_device: self.tun_device,
                wireguard: self.wireguard,
                state_dir: self.dir.join("state"),
            },
        };
        Arc::new(Overlay {
            config,
            host: self.host.into(),
            shared: Ok(Shared { store: shared, ipam }),
            local: DriverRecords::new(embedded, "overlay", self.host),
            fabric: Fabric::new(Netlink::connect().unwrap(), self.dir.join("netns"), self.vxlan_port),
            gateway: None,
            guard: None,
            gateway_lock: tokio::sync::Mutex::new(()),
            state: std::sync::Mutex::new(State::default()),
            turns: KeyedLocks::default(),
            fdb_turns: KeyedLocks::default(),
            directory: None,
            dns_server: std::sync::Mutex::new(None),
            crypt: tokio::sync::Mutex::new(None),
        })
    }
}
