//! The tunnel engine: a WireGuard device in the tunnel namespace, served by the kernel when it
//! has WireGuard, else in userspace (boringtun on a TUN device this process owns).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Result};

use super::{KeyPair, TunnelKind, TunnelPeer, TunnelStats};

/// What the engine is started with.
pub struct TunnelConfig<'a> {
    /// The tunnel namespace (made by the caller); the device is made inside it.
    pub netns: &'a Path,
    /// This host's address in the tunnel namespace (a /32 or /128 on the device; a route for
    /// `tunnel_subnet` through the device).
    pub tunnel_ip: IpAddr,
    pub tunnel_subnet: ipnetwork::IpNetwork,
    /// The WireGuard UDP socket, in the host's namespace (the advertise address and port).
    pub listen: SocketAddr,
    /// The device's MTU (underlay MTU less the WireGuard overhead).
    pub mtu: u32,
}

/// A running tunnel. Dropping it stops the data path; `remove` also deletes the device.
pub struct Tunnel {
    _private: (),
}

impl Tunnel {
    /// Starts (or takes over, after a restart) the device with `key`. Kernel WireGuard when the
    /// kernel has it, else userspace; an error names why neither could start.
    pub async fn start(_config: &TunnelConfig<'_>, _key: &KeyPair) -> Result<Tunnel> {
        bail!("encrypted networks are not available yet")
    }

    pub fn kind(&self) -> TunnelKind {
        TunnelKind::Userspace
    }

    /// The peers from the store: added, changed (key, endpoint) and removed at once; sessions
    /// with unchanged peers are kept.
    pub fn set_peers(&self, _peers: &[TunnelPeer]) -> Result<()> {
        Ok(())
    }

    /// A new private key (rotation): existing sessions keep carrying traffic until the peers
    /// have handshaken with the new key.
    pub fn set_key(&self, _key: &KeyPair) -> Result<()> {
        Ok(())
    }

    pub fn stats(&self) -> TunnelStats {
        TunnelStats::default()
    }

    /// Stops the data path and deletes the device.
    pub async fn remove(self) -> Result<()> {
        Ok(())
    }
}
