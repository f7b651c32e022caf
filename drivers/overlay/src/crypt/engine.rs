//! The tunnel engine: a WireGuard device in the tunnel namespace, served by the kernel when it
//! has WireGuard, else in userspace (boringtun on a TUN device this process owns).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ipnetwork::IpNetwork;
use netloom_dataplane::{Netlink, Netns};
use tracing::{info, warn};

use super::userspace::Engine;
use super::{tun, KeyPair, PublicKey, TunnelKind, TunnelPeer, TunnelStats, DEVICE};

/// Where TUN devices are opened unless told otherwise.
pub const DEFAULT_TUN_PATH: &str = "/dev/net/tun";
/// Name of the link made and deleted at once to learn whether the kernel has WireGuard.
const KERNEL_PROBE: &str = "loomwgprobe";
/// Socket buffers of the WireGuard socket: bursts of a fast sender must not overflow them.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

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
    /// The TUN clone device ([`DEFAULT_TUN_PATH`]).
    pub tun_path: &'a Path,
    /// The namespace the UDP socket is made in; None: the calling thread's (the host's).
    pub underlay_netns: Option<&'a Path>,
}

/// A running tunnel. Dropping it stops the data path (the device goes with it); `remove` also
/// makes sure no device of the name is left.
pub struct Tunnel {
    engine: Engine,
    netlink: Netlink,
    kernel_available: bool,
}

impl Tunnel {
    /// Starts (or takes over, after a restart) the device with `key`. Kernel WireGuard when the
    /// kernel has it, else userspace; an error names why neither could start. Nothing is left
    /// when it fails.
    pub async fn start(config: &TunnelConfig<'_>, key: &KeyPair) -> Result<Tunnel> {
        let ns = Netns::open(config.netns)?
            .ok_or_else(|| anyhow!("tunnel namespace {} does not exist", config.netns.display()))?;
        let netlink = Netlink::connect_in(&ns).context("connecting to the tunnel namespace")?;
        let kernel_available = match netlink.kernel_has_wireguard(KERNEL_PROBE).await {
            Ok(available) => available,
            Err(e) => {
                warn!(error = format!("{e:#}"), "could not tell whether the kernel has WireGuard");
                false
            }
        };
        if netlink.delete_link(DEVICE).await? {
            info!(device = DEVICE, "replaced a tunnel device left by an earlier run");
        }
        let started = start_userspace(config, key, &ns, &netlink).await;
        let engine = match started {
            Ok(engine) => engine,
            Err(e) => {
                let _ = netlink.delete_link(DEVICE).await;
                return Err(e.context("starting userspace WireGuard"));
            }
        };
        info!(
            kind = %TunnelKind::Userspace,
            kernel_wireguard = kernel_available,
            device = DEVICE,
            tunnel_ip = %config.tunnel_ip,
            listen = %config.listen,
            mtu = config.mtu,
            public_key = %key.public,
            "tunnel started (the kernel WireGuard path is not used yet: userspace serves)"
        );
        Ok(Tunnel { engine, netlink, kernel_available })
    }

    pub fn kind(&self) -> TunnelKind {
        TunnelKind::Userspace
    }

    /// Whether the kernel could have served the device (reported, not used yet).
    pub fn kernel_available(&self) -> bool {
        self.kernel_available
    }

    /// The peers from the store: added, changed (key, endpoint) and removed at once; sessions
    /// with unchanged peers are kept. A peer whose tunnel address or endpoint repeats an
    /// earlier one's (or is this host's) is left out with a warning.
    pub fn set_peers(&self, peers: &[TunnelPeer]) -> Result<()> {
        self.engine.set_peers(peers);
        Ok(())
    }

    /// The public keys of the peers being served.
    pub fn peer_keys(&self) -> Vec<PublicKey> {
        self.engine.peer_keys()
    }

    /// A new private key (rotation): every session starts over with it, which costs one
    /// handshake once the peers know the new public key.
    pub fn set_key(&self, key: &KeyPair) -> Result<()> {
        self.engine.set_key(key);
        Ok(())
    }

    pub fn stats(&self) -> TunnelStats {
        self.engine.stats()
    }

    /// Stops the data path and deletes the device (the namespace stays, it is the caller's).
    pub async fn remove(self) -> Result<()> {
        let Tunnel { engine, netlink, .. } = self;
        // Closing the TUN device's file removes the device.
        drop(engine);
        netlink.delete_link(DEVICE).await.context("deleting the tunnel device")?;
        info!(device = DEVICE, "tunnel removed");
        Ok(())
    }
}

async fn start_userspace(config: &TunnelConfig<'_>, key: &KeyPair, ns: &Netns, netlink: &Netlink) -> Result<Engine> {
    let tun = tun::open_in(ns, config.tun_path, DEVICE)?;
    let link =
        netlink.link(DEVICE).await?.ok_or_else(|| anyhow!("TUN device {DEVICE} vanished right after it was made"))?;
    netlink.set_mtu(&link, config.mtu).await?;
    let host_prefix = if config.tunnel_ip.is_ipv4() { 32 } else { 128 };
    netlink.ensure_address(&link, IpNetwork::new(config.tunnel_ip, host_prefix)?).await?;
    netlink.set_up(&link).await?;
    netlink.ensure_link_route(config.tunnel_subnet, &link).await?;
    let udp = bind_socket(config)?;
    Engine::start(tun, udp, config.tunnel_ip, key)
}

fn bind_socket(config: &TunnelConfig<'_>) -> Result<UdpSocket> {
    let listen = config.listen;
    let bind = move || -> Result<UdpSocket> {
        let socket = UdpSocket::bind(listen).with_context(|| format!("binding the WireGuard socket to {listen}"))?;
        enlarge_buffers(&socket);
        Ok(socket)
    };
    match config.underlay_netns {
        None => bind(),
        Some(path) => {
            Netns::open(path)?.ok_or_else(|| anyhow!("underlay namespace {} does not exist", path.display()))?.run(bind)
        }
    }
}

fn enlarge_buffers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        let size = SOCKET_BUFFER;
        // SAFETY: a valid socket and an int-sized option value that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            warn!(error = %std::io::Error::last_os_error(), "could not enlarge the WireGuard socket's buffers");
        }
    }
}
