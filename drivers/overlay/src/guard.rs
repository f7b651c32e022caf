//! The VXLAN guard: this host accepts VXLAN (UDP `--vxlan-port`, to one of its addresses) only
//! from the tunnel endpoints of the hosts in the store, and drops forwarded traffic to that
//! port, so that neither a stranger on the underlay nor a container of this host (masqueraded to
//! this host's own VTEP) can inject frames into an overlay.
//!
//! The peer set is kept by the same watch and reconciler that program FDB and neighbour entries,
//! and a change of hosts reaches the guard before the FDB: a new host is accepted before any
//! entry points at it. The guard is on while this host has overlay networks (their VXLAN links
//! and sockets outlive the driver, so it stays on over a restart) and goes when the last one
//! goes. Until the store has been read it is left as the kernel has it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Result;
use netloom_driver_kit::guard::firewall_call;
use netloom_firewall::{BackendKind, Firewall};
use tokio::sync::Mutex;
use tracing::{info, warn};

use netloom_plugin_api::locks::lock;

use crate::state::State;

/// What the guard should be, or is known to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    Off,
    On(BTreeSet<IpAddr>),
}

pub struct VxlanGuard {
    firewall: Arc<dyn Firewall>,
    port: u16,
    /// What this process last programmed (None: not known, e.g. at start or after an error).
    /// Held while the wanted state is computed and applied, so applications never overtake each
    /// other; taken before the state lock, never while holding it.
    programmed: Mutex<Option<Guard>>,
}

/// The wanted guard from the state: None while the store's copy is not loaded and this host has
/// networks (the kernel keeps what it has).
pub fn wanted(state: &State, expect_network: bool) -> Option<Guard> {
    if state.networks.is_empty() && state.dataplanes.is_empty() && !expect_network {
        return Some(Guard::Off);
    }
    if !state.cache.loaded {
        return None;
    }
    let mut peers: BTreeSet<IpAddr> = state.cache.hosts.values().map(|(h, _)| h.vtep).collect();
    // Absent hosts' containers may run on: their traffic still comes in.
    peers.extend(state.absent_vteps());
    // Harmless (this host's own packets never come in from outside) and keeps the set non-empty.
    peers.extend(state.underlay.as_ref().map(|u| u.vtep));
    Some(Guard::On(peers))
}

impl VxlanGuard {
    /// The guard in `kind`'s firewall (the other backend's guard, left from before a switch,
    /// goes in [`crate::start`]'s sweep).
    pub async fn open(kind: BackendKind, port: u16) -> Result<VxlanGuard> {
        Ok(Self::with(netloom_firewall::open(kind).await?, port))
    }

    fn with(firewall: Arc<dyn Firewall>, port: u16) -> VxlanGuard {
        VxlanGuard { firewall, port, programmed: Mutex::new(None) }
    }

    /// Brings the guard in line with the state (see [`wanted`]). `force` re-applies it even if
    /// this process thinks it is in place (the reconciler: someone may have flushed it);
    /// `expect_network` turns it on before a network's first VXLAN link exists.
    pub async fn sync(&self, state: &std::sync::Mutex<State>, force: bool, expect_network: bool) {
        let mut programmed = self.programmed.lock().await;
        let want = wanted(&lock(state), expect_network);
        let Some(want) = want else { return };
        if !force && programmed.as_ref() == Some(&want) {
            return;
        }
        let result = match &want {
            Guard::On(peers) => {
                let list: Vec<IpAddr> = peers.iter().copied().collect();
                firewall_call(&*self.firewall, "VXLAN guard".into(), self.firewall.set_vxlan_guard(self.port, &list))
                    .await
            }
            Guard::Off => {
                firewall_call(&*self.firewall, "VXLAN guard".into(), self.firewall.remove_vxlan_guard()).await
            }
        };
        match result {
            Ok(()) => {
                if programmed.as_ref() != Some(&want) {
                    match &want {
                        Guard::On(peers) => {
                            info!(port = self.port, peers = ?peers, "VXLAN accepted only from member hosts")
                        }
                        Guard::Off => info!(port = self.port, "no overlay network here; VXLAN guard removed"),
                    }
                }
                *programmed = Some(want);
            }
            Err(e) => {
                warn!("VXLAN guard: {e:#}; retrying at the next reconcile");
                *programmed = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use netloom_firewall::{NetworkPolicy, PortMapping};

    use super::*;
    use crate::records::HostRecord;

    /// Records the guard calls; each takes `delay` (a slow firewall).
    struct SlowFirewall {
        delay: Duration,
        calls: StdMutex<Vec<String>>,
    }

    #[async_trait]
    impl Firewall for SlowFirewall {
        fn kind(&self) -> BackendKind {
            BackendKind::Nftables
        }
        async fn add_network(&self, _: &NetworkPolicy) -> Result<()> {
            Ok(())
        }
        async fn remove_network_by_id(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn add_ports(&self, _: &NetworkPolicy, _: &str, _: &[PortMapping]) -> Result<()> {
            Ok(())
        }
        async fn remove_ports(&self, _: &NetworkPolicy, _: &str, _: &[PortMapping]) -> Result<()> {
            Ok(())
        }
        async fn retain_endpoints(&self, _: &NetworkPolicy, _: &[String]) -> Result<usize> {
            Ok(0)
        }
        async fn owned_networks(&self) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
        async fn set_vxlan_guard(&self, port: u16, peers: &[IpAddr]) -> Result<()> {
            tokio::time::sleep(self.delay).await;
            self.calls.lock().unwrap().push(format!("set {port} {peers:?}"));
            Ok(())
        }
        async fn remove_vxlan_guard(&self) -> Result<()> {
            tokio::time::sleep(self.delay).await;
            self.calls.lock().unwrap().push("remove".into());
            Ok(())
        }
        async fn remove_all(&self) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_state_is_not_locked_while_the_firewall_works() {
        let fw = Arc::new(SlowFirewall { delay: Duration::from_millis(1500), calls: StdMutex::new(Vec::new()) });
        let guard = Arc::new(VxlanGuard::with(fw.clone(), 4789));
        let mut state = State::default();
        state.cache.loaded = true;
        state.cache.hosts.insert("h1".into(), (host("10.250.0.1"), 3));
        let state = Arc::new(std::sync::Mutex::new(state));
        let (g, s) = (guard.clone(), state.clone());
        let slow = tokio::spawn(async move { g.sync(&s, false, true).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Meanwhile the peer sync (anything needing the state) goes on.
        drop(state.try_lock().expect("the state lock was held across a firewall call"));
        slow.await.unwrap();
        // Unchanged: no second call; forced (the reconciler): one more.
        guard.sync(&state, false, true).await;
        assert_eq!(fw.calls.lock().unwrap().len(), 1);
        guard.sync(&state, true, true).await;
        assert_eq!(*fw.calls.lock().unwrap(), ["set 4789 [10.250.0.1]", "set 4789 [10.250.0.1]"]);
        // The last network gone: removed.
        guard.sync(&state, false, false).await;
        assert_eq!(fw.calls.lock().unwrap().last().map(String::as_str), Some("remove"));
    }

    fn host(vtep: &str) -> HostRecord {
        HostRecord { vtep: vtep.parse().unwrap(), port: 4789, pid: 1, version: "t".into(), started_at: 0 }
    }

    #[test]
    fn on_with_the_hosts_vteps_while_there_are_networks() {
        let mut state = State::default();
        assert_eq!(wanted(&state, false), Some(Guard::Off));
        // About to create the first network, but the store is not read yet: leave it be.
        assert_eq!(wanted(&state, true), None);
        state.cache.loaded = true;
        state.cache.hosts.insert("h1".into(), (host("10.250.0.1"), 3));
        state.cache.hosts.insert("h2".into(), (host("2001:db8::2"), 4));
        let both: BTreeSet<IpAddr> = ["10.250.0.1".parse().unwrap(), "2001:db8::2".parse().unwrap()].into();
        assert_eq!(wanted(&state, true), Some(Guard::On(both.clone())));
        assert_eq!(wanted(&state, false), Some(Guard::Off));
        state.cache.hosts.remove("h2");
        state.dataplanes.clear();
        state.networks.insert(
            "n1".into(),
            crate::records::LocalNetwork {
                docker_id: "n1".into(),
                config: crate::records::NetworkConfig {
                    key: "vni-5000".into(),
                    mode: crate::records::Mode::Local,
                    vni: 5000,
                    subnet_v4: None,
                    subnet_v6: None,
                    mtu: 1450,
                    internal: false,
                    encrypted: false,
                    created_by: "h1".into(),
                    created_at: 0,
                    members: Default::default(),
                },
            },
        );
        assert_eq!(wanted(&state, false), Some(Guard::On(["10.250.0.1".parse().unwrap()].into())));

        // h3's lease expired but it has endpoints: its traffic still comes in, until it is gone.
        let peer = crate::records::PeerRecord {
            host: "h3".into(),
            endpoint: "e3".into(),
            vtep: "10.250.0.3".parse().unwrap(),
            port: 4789,
            mac: "02:42:0a:09:00:03".into(),
            ipv4: None,
            ipv6: None,
        };
        state.cache.peers.entry("vni-5000".into()).or_default().insert("e3".into(), (peer, 7));
        let with_h3: BTreeSet<IpAddr> = ["10.250.0.1".parse().unwrap(), "10.250.0.3".parse().unwrap()].into();
        assert_eq!(wanted(&state, false), Some(Guard::On(with_h3)));
        let absence = crate::liveness::Absence {
            since: std::time::Instant::now(),
            vtep: Some("10.250.0.3".parse().unwrap()),
            answered: None,
            gone: true,
        };
        state.absent.insert("h3".into(), absence);
        assert_eq!(wanted(&state, false), Some(Guard::On(["10.250.0.1".parse().unwrap()].into())));
    }
}
