//! Named network namespaces kept alive by a bind mount (what `ip netns add` does), netlink
//! connections inside them, and links created in or moved into them.
//!
//! Switching namespaces is per thread, so everything that must run inside one (opening a netlink
//! socket, writing a `/proc/sys/net` knob) runs on a short-lived thread of its own that enters the
//! namespace and exits; the runtime's threads never change namespace.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::LinkVeth;

use crate::{is_errno, names, Link, Netlink, VethSpec};

/// A network namespace bound to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    /// The namespace bound at `path`, if that file is one.
    pub fn open(path: impl AsRef<Path>) -> Result<Option<Netns>> {
        let path = path.as_ref();
        match nix::sys::statfs::statfs(path) {
            Ok(fs) if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC => {
                Ok(Some(Netns { path: path.to_path_buf() }))
            }
            Ok(_) => Ok(None),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("checking network namespace {}", path.display())),
        }
    }

    /// The namespace bound at `path`, made (empty but for `lo`) if there is none. The directory is
    /// created and made a shared mount point first, as iproute2 does, so that removing the bind
    /// mount later frees the namespace in every mount namespace that copied it.
    pub fn ensure(path: impl AsRef<Path>) -> Result<Netns> {
        let path = path.as_ref();
        if let Some(ns) = Netns::open(path)? {
            return Ok(ns);
        }
        let dir = path.parent().ok_or_else(|| anyhow!("{} has no parent directory", path.display()))?;
        prepare_dir(dir)?;
        // A file left by a creation that died half-way is not a namespace: start over.
        let _ = fs::remove_file(path);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        let target = path.to_path_buf();
        let bound = std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .with_context(|| format!("bind-mounting the new namespace on {}", target.display()))
        })
        .join()
        .map_err(|_| anyhow!("the thread creating network namespace {} panicked", path.display()))?;
        if let Err(e) = bound {
            let _ = fs::remove_file(path);
            return Err(e.context(format!("creating network namespace {}", path.display())));
        }
        Ok(Netns { path: path.to_path_buf() })
    }

    /// Unbinds and removes the namespace file; the kernel frees the namespace (and destroys its
    /// links) once nothing else holds it. Returns false when there was none.
    pub fn delete(path: impl AsRef<Path>) -> Result<bool> {
        let path = path.as_ref();
        let existed = Netns::open(path)?.is_some();
        if existed {
            match umount2(path, MntFlags::MNT_DETACH) {
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(anyhow!(e)).with_context(|| format!("unmounting {}", path.display())),
            }
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(existed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(existed),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }

    /// The namespace files in `dir` (files that are not namespaces are left out).
    pub fn list(dir: impl AsRef<Path>) -> Result<Vec<Netns>> {
        let dir = dir.as_ref();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            if let Some(ns) = Netns::open(entry.path())? {
                out.push(ns);
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's name, e.g. `ovl-4096`.
    pub fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }

    fn file(&self) -> Result<File> {
        File::open(&self.path).with_context(|| format!("opening network namespace {}", self.path.display()))
    }

    /// Runs `f` on a thread inside the namespace (for `/proc/sys/net` knobs and sockets).
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let file = self.file()?;
        let path = self.path.clone();
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {}", path.display()))?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("a thread inside network namespace {} panicked", self.path.display()))?
    }
}

/// Makes `dir` exist and be a shared mount point of its own.
fn prepare_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            // Not a mount point yet.
            mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .with_context(|| format!("bind-mounting {} on itself", dir.display()))?;
            mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
                .with_context(|| format!("making {} a shared mount", dir.display()))
        }
        Err(e) => Err(anyhow!(e)).with_context(|| format!("making {} a shared mount", dir.display())),
    }
}

impl Netlink {
    /// A netlink connection inside `ns`; its I/O task runs on the current tokio runtime.
    pub fn connect_in(ns: &Netns) -> Result<Netlink> {
        let ns = ns.clone();
        let runtime = tokio::runtime::Handle::current();
        let open = move || {
            let runtime = runtime.clone();
            let (connection, handle, _) = ns.run(move || {
                let _entered = runtime.enter();
                rtnetlink::new_connection().context("opening a netlink socket")
            })?;
            Ok((connection, handle))
        };
        let (connection, handle) = open()?;
        Ok(Netlink::supervised(connection, handle, open))
    }

    /// Creates a veth pair across namespaces in one step: `spec.host_name` in `ns` (where its
    /// bridge is), `spec.peer_name` here (where Docker picks it up). Both ends get the MTU; the
    /// owner tag goes on the peer, so a leftover pair can be found from here. Nothing is left
    /// behind on failure. `ns_netlink` is a connection inside `ns`.
    pub async fn create_veth_across(
        &self,
        spec: &VethSpec<'_>,
        ns: &Netns,
        ns_netlink: &Netlink,
    ) -> Result<(Link, Link)> {
        names::validate(spec.host_name)?;
        names::validate(spec.peer_name)?;
        let file = ns.file()?;
        let mut builder = LinkVeth::new(spec.host_name, spec.peer_name);
        if let Some(mtu) = spec.mtu {
            builder = builder.mtu(mtu);
        }
        let msg = builder.setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&file)).build();
        match self.handle().link().add(msg).execute().await {
            Ok(()) => {}
            Err(e) if is_errno(&e, Errno::EEXIST) => bail!(
                "creating veth pair {} / {}: an interface of one of these names already exists",
                spec.host_name,
                spec.peer_name
            ),
            Err(e) => {
                return Err(anyhow!(e))
                    .with_context(|| format!("creating veth pair {} / {}", spec.host_name, spec.peer_name))
            }
        }
        let result = async {
            let mut peer =
                self.link(spec.peer_name).await?.ok_or_else(|| anyhow!("veth {} vanished", spec.peer_name))?;
            let inner =
                ns_netlink.link(spec.host_name).await?.ok_or_else(|| anyhow!("veth {} vanished", spec.host_name))?;
            if let Some(mtu) = spec.mtu {
                if peer.mtu != mtu {
                    self.set_mtu(&peer, mtu).await?;
                }
            }
            self.set_alias(&peer, spec.owner).await?;
            ns_netlink.set_alias(&inner, spec.owner).await?;
            peer = self.link(spec.peer_name).await?.ok_or_else(|| anyhow!("veth {} vanished", spec.peer_name))?;
            let inner =
                ns_netlink.link(spec.host_name).await?.ok_or_else(|| anyhow!("veth {} vanished", spec.host_name))?;
            Ok((inner, peer))
        }
        .await;
        if result.is_err() {
            let _ = self.delete_link(spec.peer_name).await;
        }
        result
    }
}
