//! The TUN device the userspace data path reads and writes: opened inside the tunnel namespace,
//! so the device is born there; the file descriptor then works from any thread.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netloom_dataplane::Netns;

const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// Every packet read or written is preceded by a `virtio_net_hdr` (see `coalesce`).
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

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
            IfReq { name: [0; libc::IFNAMSIZ], flags: IFF_TUN | IFF_NO_PI | IFF_VNET_HDR, _union_rest: [0; 22] };
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
