//! The TUN device the userspace data path reads and writes: opened inside the tunnel namespace,
//! so the device is born there; the file descriptor then works from any thread.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netloom_dataplane::{Netlink, Netns};
use tracing::info;

use super::segment::{VNET_BASIC_HDR_LEN, VNET_TUNNEL_HDR_LEN};

const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
/// The inbound device's name (the tunnel device's with a suffix).
pub(crate) const INBOUND_DEVICE: &str = "loomwg0in";
const IFF_NO_PI: libc::c_short = 0x1000;
/// Every packet read or written is preceded by a `virtio_net_hdr` (see `coalesce`).
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`: which offloads the reader of the device handles.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOW('T', 216, int)`: the size of the virtio header before each packet.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// Checksums may be left partial, TCP over IPv4 may come unsegmented, also inside a UDP tunnel
/// (VXLAN), with or without the outer UDP checksum.
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_UDP_TUNNEL_GSO: libc::c_uint = 0x080;
const TUN_F_UDP_TUNNEL_GSO_CSUM: libc::c_uint = 0x100;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// Opens `tun_path` inside `ns` and attaches a TUN device (layer 3, no packet information
/// header, a virtio header instead) named `name`. The device lives as long as the returned file.
pub(crate) fn open_in(ns: &Netns, tun_path: &Path, name: &str) -> Result<File> {
    open_device(ns, tun_path, name, IFF_TUN)
}

/// The device opened packets are written to when they can be merged (see `merge`): a TAP
/// device named after the tunnel's, up, taking UDP-tunnel segmentation offload packets. None
/// (logged) when the kernel cannot, and then everything goes to the tunnel device as before.
/// It lives as long as the returned file.
pub(crate) async fn open_inbound(ns: &Netns, tun_path: &Path, netlink: &Netlink) -> Option<(File, [u8; 6])> {
    let opened = async {
        let file = open_device(ns, tun_path, INBOUND_DEVICE, IFF_TAP)?;
        if enable_offloads(&file) != VNET_TUNNEL_HDR_LEN {
            bail!("no UDP-tunnel segmentation offload on TAP devices");
        }
        accept_any_source(ns)?;
        let link = netlink.link(INBOUND_DEVICE).await?.ok_or_else(|| anyhow!("{INBOUND_DEVICE} vanished"))?;
        netlink.set_up(&link).await?;
        let mac: [u8; 6] = link.mac.clone().try_into().map_err(|_| anyhow!("{INBOUND_DEVICE} has no MAC address"))?;
        Ok::<_, anyhow::Error>((file, mac))
    };
    match opened.await {
        Ok(opened) => Some(opened),
        Err(e) => {
            info!(error = format!("{e:#}"), "opened packets are written one run at a time to the tunnel device");
            None
        }
    }
}

/// Packets from peers come in on the inbound device while the route back to them is the tunnel
/// device, so reverse-path filtering must be off for it (the effective value is the larger of
/// `all` and the device's); the tunnel namespace holds nothing else it would protect.
fn accept_any_source(ns: &Netns) -> Result<()> {
    ns.run(|| {
        for conf in ["all", INBOUND_DEVICE] {
            let path = format!("/proc/sys/net/ipv4/conf/{conf}/rp_filter");
            std::fs::write(&path, "0").with_context(|| format!("writing {path}"))?;
        }
        Ok(())
    })
}

fn open_device(ns: &Netns, tun_path: &Path, name: &str, kind: libc::c_short) -> Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("{name:?} is not a valid interface name");
    }
    let path: PathBuf = tun_path.to_path_buf();
    let name = name.to_string();
    ns.run(move || {
        let file = OpenOptions::new().read(true).write(true).open(&path).with_context(|| {
            format!("opening {} (the TUN device userspace WireGuard needs; is the tun module loaded?)", path.display())
        })?;
        let mut request =
            IfReq { name: [0; libc::IFNAMSIZ], flags: kind | IFF_NO_PI | IFF_VNET_HDR, _union_rest: [0; 22] };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: the request is a properly sized, initialised ifreq that outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut request as *mut IfReq) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            return Err(anyhow!(err)).with_context(|| format!("creating TUN device {name} on {}", path.display()));
        }
        Ok(file)
    })
}

/// Asks the device to hand over TCP and VXLAN-carried TCP unsegmented (see `segment`); the
/// virtio header then has the tunnel layout. Returns the header size in use: the tunnel
/// header's when the kernel took the offloads, else the basic one with no offloads (a kernel
/// before 6.17), and packets come one by one as before.
pub(crate) fn enable_offloads(file: &File) -> usize {
    let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM;
    if set_int(file, TUNSETVNETHDRSZ, VNET_TUNNEL_HDR_LEN as libc::c_int).is_ok() {
        match set_int(file, TUNSETOFFLOAD, offloads as libc::c_int) {
            Ok(()) => return VNET_TUNNEL_HDR_LEN,
            Err(e) => info!(error = %e, "the kernel refused segmentation offloads on the tunnel device \
                (packets are read one by one)"),
        }
    }
    let _ = set_int(file, TUNSETOFFLOAD, 0);
    let _ = set_int(file, TUNSETVNETHDRSZ, VNET_BASIC_HDR_LEN as libc::c_int);
    VNET_BASIC_HDR_LEN
}

fn set_int(file: &File, request: libc::c_ulong, value: libc::c_int) -> std::io::Result<()> {
    // TUNSETOFFLOAD takes its value as the argument itself, TUNSETVNETHDRSZ through a pointer.
    // SAFETY: ioctls on a descriptor this file owns; the pointer refers to a live local.
    let rc = unsafe {
        if request == TUNSETOFFLOAD {
            libc::ioctl(file.as_raw_fd(), request as _, value as libc::c_ulong)
        } else {
            libc::ioctl(file.as_raw_fd(), request as _, &value as *const libc::c_int)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `file` has a packet to read; false on timeout (so a loop can check for stop).
pub(crate) fn wait_readable(file: &File, timeout: Duration) -> bool {
    let mut poll = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as libc::c_int) };
    rc > 0
}

pub(crate) fn set_nonblocking(file: &File) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this file owns.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
