//! Whether this kernel has what the drivers use, read from /sys and /proc (and, for nf_tables,
//! one read-only netlink question), never by loading or changing anything.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::doctor::Check;

/// Each feature a driver needs, checked.
pub fn checks() -> Vec<Check> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let modules = Modules::read(Path::new("/"), &release);
    vec![
        module_check(&modules, "vxlan", None, "loom-overlay's VXLAN links", "modprobe vxlan (CONFIG_VXLAN)"),
        module_check(
            &modules,
            "bridge",
            Some("/proc/sys/net/bridge"),
            "loom-bridge",
            "modprobe bridge (CONFIG_BRIDGE)",
        ),
        module_check(
            &modules,
            "br_netfilter",
            Some("/proc/sys/net/bridge/bridge-nf-call-iptables"),
            "firewalling traffic between containers of one bridge",
            "modprobe br_netfilter (CONFIG_BRIDGE_NETFILTER)",
        ),
        nf_tables(&modules),
        tun(Path::new("/dev/net/tun")),
    ]
}

/// What /sys/module and the module lists of the running kernel say.
pub struct Modules {
    loaded: Vec<String>,
    builtin: String,
    loadable: String,
}

impl Modules {
    pub fn read(root: &Path, release: &str) -> Modules {
        let loaded = fs::read_dir(root.join("sys/module"))
            .map(|entries| {
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        let lists = root.join("lib/modules").join(release);
        Modules {
            loaded,
            builtin: fs::read_to_string(lists.join("modules.builtin")).unwrap_or_default(),
            loadable: fs::read_to_string(lists.join("modules.dep")).unwrap_or_default(),
        }
    }

    /// `loaded`, `built in`, `loadable` or `None`.
    pub fn presence(&self, name: &str) -> Option<&'static str> {
        let file = format!("/{name}.ko");
        if self.loaded.iter().any(|m| m == name) {
            Some("loaded")
        } else if self.builtin.lines().any(|l| l.ends_with(&file)) {
            Some("built in")
        } else if self.loadable.lines().any(|l| l.split(':').next().is_some_and(|m| m.contains(&file))) {
            Some("a module, loaded on first use")
        } else {
            None
        }
    }
}

/// A module, or a /proc path only it makes (a built-in module without parameters has no
/// /sys/module entry).
fn module_check(modules: &Modules, name: &str, proc_path: Option<&str>, for_what: &str, fix: &str) -> Check {
    let what = format!("kernel: {name}");
    match modules.presence(name) {
        Some(how) => Check::ok(what, how),
        None if proc_path.is_some_and(|p| Path::new(p).exists()) => Check::ok(what, "built in"),
        None => Check::fail(what, format!("not found; needed for {for_what}"), fix),
    }
}

fn nf_tables(modules: &Modules) -> Check {
    let what = "kernel: nf_tables".to_string();
    if let Some(how) = modules.presence("nf_tables") {
        return Check::ok(what, how);
    }
    match nft_probe() {
        Ok(()) => Check::ok(what, "answers over netlink"),
        Err(why) => Check::warn(
            what,
            format!("not usable ({why}); the drivers use the iptables backend instead"),
            "modprobe nf_tables (CONFIG_NF_TABLES), or run the drivers with --firewall iptables",
        ),
    }
}

fn tun(path: &Path) -> Check {
    let what = "kernel: TUN".to_string();
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => Check::ok(what, format!("{} opens", path.display())),
        Err(e) => Check::fail(
            what,
            format!("{} does not open ({e}); encrypted overlays need it", path.display()),
            "modprobe tun (CONFIG_TUN), and give the drivers /dev/net/tun",
        ),
    }
}

/// Asks nf_tables for its ruleset generation (NFT_MSG_GETGEN): a read that changes nothing.
fn nft_probe() -> Result<(), String> {
    use nix::sys::socket::{recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol};
    use nix::sys::time::TimeVal;
    use std::os::fd::AsRawFd;

    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETGEN: u16 = 16;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;

    let fd = socket(
        AddressFamily::Netlink,
        nix::sys::socket::SockType::Raw,
        SockFlag::empty(),
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| format!("netfilter netlink socket: {e}"))?;
    let limit = TimeVal::from(libc_timeval(Duration::from_secs(1)));
    setsockopt(&fd, sockopt::ReceiveTimeout, &limit).map_err(|e| format!("socket timeout: {e}"))?;
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&20u32.to_ne_bytes());
    request.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[0, 0, 0, 0]);
    send(fd.as_raw_fd(), &request, MsgFlags::empty()).map_err(|e| format!("asking nf_tables: {e}"))?;
    let mut reply = [0u8; 512];
    let n =
        recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty()).map_err(|e| format!("no answer from nf_tables: {e}"))?;
    if n < 20 {
        return Err("a short answer from nf_tables".into());
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind == NLMSG_ERROR {
        let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
        if code != 0 {
            return Err(format!("nf_tables answered {}", nix::errno::Errno::from_raw(-code)));
        }
    }
    Ok(())
}

fn libc_timeval(d: Duration) -> nix::libc::timeval {
    nix::libc::timeval { tv_sec: d.as_secs() as _, tv_usec: d.subsec_micros() as _ }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_found_loaded_built_in_or_loadable() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sys/module/vxlan")).unwrap();
        let lists = root.path().join("lib/modules/6.1.0");
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::write(lists.join("modules.builtin"), "kernel/net/bridge/bridge.ko\n").unwrap();
        std::fs::write(
            lists.join("modules.dep"),
            "kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\nkernel/drivers/net/tun.ko:\n",
        )
        .unwrap();
        let modules = Modules::read(root.path(), "6.1.0");
        assert_eq!(modules.presence("vxlan"), Some("loaded"));
        assert_eq!(modules.presence("bridge"), Some("built in"));
        assert_eq!(modules.presence("br_netfilter"), Some("a module, loaded on first use"));
        assert_eq!(modules.presence("nf_tables"), None);
        assert_eq!(modules.presence("netfilter"), None, "a name is matched whole, not inside another");

        let missing = module_check(&modules, "nf_tables", Some("/nonexistent/path"), "x", "modprobe nf_tables");
        assert!(!missing.passed() && missing.to_string().contains("modprobe nf_tables"), "{missing}");
    }

    #[test]
    fn tun_that_does_not_open_fails_with_a_fix() {
        let check = tun(Path::new("/nonexistent/tun"));
        assert!(!check.passed());
        assert!(check.to_string().contains("modprobe tun"), "{check}");
    }
}
