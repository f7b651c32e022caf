//! The tunnel engine: a WireGuard device in the tunnel namespace, served by the kernel when it
//! has WireGuard (and `--wireguard` allows it), else in userspace (boringtun on a TUN device this
//! process owns).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ipnetwork::IpNetwork;
use netloom_dataplane::{Netlink, Netns};
use tracing::{info, warn};

use super::kernel::KernelDevice;
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
    /// Which WireGuard serves the device.
    pub mode: WireguardMode,
}

/// Which WireGuard serves the device (`--wireguard`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WireguardMode {
    /// The kernel's when it has WireGuard, else userspace.
    #[default]
    Auto,
    Kernel,
    Userspace,
}

impl std::str::FromStr for WireguardMode {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<WireguardMode> {
        match text {
            "auto" => Ok(WireguardMode::Auto),
            "kernel" => Ok(WireguardMode::Kernel),
            "userspace" => Ok(WireguardMode::Userspace),
            _ => Err(anyhow!("{text:?} is not a WireGuard mode; use auto, kernel or userspace")),
        }
    }
}

/// What serves the device.
enum Serving {
    Kernel(KernelDevice),
    Userspace(Engine),
}

/// A running tunnel. Dropping it stops the userspace data path (the device goes with it);
/// `remove` also makes sure no device of the name is left, whichever WireGuard served it.
pub struct Tunnel {
    serving: Serving,
    netlink: Netlink,
    kernel_available: bool,
}

impl Tunnel {
    /// Starts (or takes over, after a restart) the device with `key`: the kernel's WireGuard when
    /// the mode allows and the kernel has it, else userspace; an error names why none could
    /// start. Nothing is left when it fails.
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
        let use_kernel = match config.mode {
            WireguardMode::Kernel if !kernel_available => {
                bail!("--wireguard kernel: this kernel has no WireGuard (CONFIG_WIREGUARD); use --wireguard auto or userspace")
            }
            WireguardMode::Kernel => true,
            WireguardMode::Auto => kernel_available,
            WireguardMode::Userspace => false,
        };
        let started = if use_kernel {
            start_kernel(config, key, &ns, &netlink).await
        } else {
            start_userspace(config, key, &ns, &netlink).await.map(Serving::Userspace)
        };
        let serving = match started {
            Ok(serving) => serving,
            Err(e) => {
                let _ = netlink.delete_link(DEVICE).await;
                let kind = if use_kernel { TunnelKind::Kernel } else { TunnelKind::Userspace };
                return Err(e.context(format!("starting {kind}")));
            }
        };
        let tunnel = Tunnel { serving, netlink, kernel_available };
        info!(
            kind = %tunnel.kind(),
            kernel_wireguard = kernel_available,
            mode = ?config.mode,
            device = DEVICE,
            tunnel_ip = %config.tunnel_ip,
            listen = %config.listen,
            mtu = config.mtu,
            public_key = %key.public,
            "tunnel device up"
        );
        Ok(tunnel)
    }

    pub fn kind(&self) -> TunnelKind {
        match self.serving {
            Serving::Kernel(_) => TunnelKind::Kernel,
            Serving::Userspace(_) => TunnelKind::Userspace,
        }
    }

    /// Whether the kernel has WireGuard (reported in the status whichever serves).
    pub fn kernel_available(&self) -> bool {
        self.kernel_available
    }

    /// The peers from the store: added, changed (key, endpoint) and removed at once; sessions
    /// with unchanged peers are kept. A peer whose tunnel address or endpoint repeats an
    /// earlier one's (or is this host's) is left out with a warning.
    pub fn set_peers(&self, peers: &[TunnelPeer]) -> Result<()> {
        match &self.serving {
            Serving::Kernel(device) => device.set_peers(peers),
            Serving::Userspace(engine) => {
                engine.set_peers(peers);
                Ok(())
            }
        }
    }

    /// The public keys of the peers being served.
    pub fn peer_keys(&self) -> Vec<PublicKey> {
        match &self.serving {
            Serving::Kernel(device) => device.peer_keys(),
            Serving::Userspace(engine) => engine.peer_keys(),
        }
    }

    /// A new private key (rotation): every session starts over with it, which costs one
    /// handshake once the peers know the new public key.
    pub fn set_key(&self, key: &KeyPair) -> Result<()> {
        match &self.serving {
            Serving::Kernel(device) => device.set_key(key),
            Serving::Userspace(engine) => {
                engine.set_key(key);
                Ok(())
            }
        }
    }

    pub fn stats(&self) -> TunnelStats {
        match &self.serving {
            Serving::Kernel(device) => device.stats().unwrap_or_else(|e| {
                warn!(error = format!("{e:#}"), "no tunnel counters");
                TunnelStats::default()
            }),
            Serving::Userspace(engine) => engine.stats(),
        }
    }

    /// Stops the data path and deletes the device (the namespace stays, it is the caller's).
    pub async fn remove(self) -> Result<()> {
        let Tunnel { serving, netlink, .. } = self;
        // Closing the TUN device's file removes a userspace device; a kernel one is deleted.
        drop(serving);
        netlink.delete_link(DEVICE).await.context("deleting the tunnel device")?;
        info!(device = DEVICE, "tunnel removed");
        Ok(())
    }
}

async fn start_kernel(config: &TunnelConfig<'_>, key: &KeyPair, ns: &Netns, netlink: &Netlink) -> Result<Serving> {
    let device = KernelDevice::start(config, key, ns).await?;
    address_device(config, netlink).await?;
    Ok(Serving::Kernel(device))
}

async fn start_userspace(config: &TunnelConfig<'_>, key: &KeyPair, ns: &Netns, netlink: &Netlink) -> Result<Engine> {
    let tun = tun::open_in(ns, config.tun_path, DEVICE)?;
    address_device(config, netlink).await?;
    let udp = bind_socket(config)?;
    let inbound = tun::open_inbound(ns, config.tun_path, netlink).await;
    Engine::start(tun, inbound, udp, config.tunnel_ip, key)
}

/// MTU, this host's tunnel address, up, and the route to the other hosts' tunnel addresses.
async fn address_device(config: &TunnelConfig<'_>, netlink: &Netlink) -> Result<()> {
    let link =
        netlink.link(DEVICE).await?.ok_or_else(|| anyhow!("device {DEVICE} vanished right after it was made"))?;
    netlink.set_mtu(&link, config.mtu).await?;
    let host_prefix = if config.tunnel_ip.is_ipv4() { 32 } else { 128 };
    netlink.ensure_address(&link, IpNetwork::new(config.tunnel_ip, host_prefix)?).await?;
    netlink.set_up(&link).await?;
    netlink.ensure_link_route(config.tunnel_subnet, &link).await
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
