//! The plugin socket's lifecycle and the state directory's single-instance lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::{umask, Mode};
use tokio::net::UnixListener;

/// Makes `path` ready to bind: creates its directory and removes a stale socket left by a dead
/// process. Refuses when a live process still answers on it.
pub fn prepare(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating socket directory {}", dir.display()))?;
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket; remove it or choose another --socket", path.display());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            bail!("another process is already serving {}; stop it first or choose another --socket", path.display())
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused || e.kind() == io::ErrorKind::NotFound => {
            fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("probing existing socket {}", path.display())),
    }
}

/// A bound plugin socket; dropping it removes the socket file if it is still ours.
pub struct BoundSocket {
    path: PathBuf,
    inode: u64,
}

impl BoundSocket {
    pub fn bind(path: &Path) -> Result<(Self, UnixListener)> {
        // dockerd runs as root; 0660 keeps other users from driving the plugin. The mode comes
        // from the umask at bind time: a chmod afterwards would leave a window in which the
        // socket is open to everyone.
        let listener = {
            let _umask = UmaskGuard::set(SOCKET_UMASK);
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?
        };
        let meta = fs::metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & !0o660 != 0 {
            bail!("{} was created with mode {mode:o}, wider than 0660", path.display());
        }
        Ok((Self { path: path.to_path_buf(), inode: meta.ino() }, listener))
    }
}

/// Leaves group read/write and nothing for others: sockets bound under it get mode 0660.
const SOCKET_UMASK: u32 = 0o117;

/// Sets the process umask until dropped. The umask is process-wide; the plugin binds its socket
/// once, at start-up, before it serves anything.
struct UmaskGuard {
    previous: Mode,
}

impl UmaskGuard {
    fn set(mask: u32) -> Self {
        Self { previous: umask(Mode::from_bits_truncate(mask as nix::libc::mode_t)) }
    }
}

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        umask(self.previous);
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        // A newer instance may have replaced the file; only remove the one we created.
        if fs::metadata(&self.path).map(|m| m.ino() == self.inode).unwrap_or(false) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// An exclusive lock on the state directory, held for the life of the process, so that two
/// instances never run over the same state.
pub struct StateLock {
    _lock: Flock<File>,
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<Self> {
        fs::create_dir_all(state_dir).with_context(|| format!("creating state directory {}", state_dir.display()))?;
        let lock_path = state_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
                "another instance is already running with state directory {}; stop it first or choose another --state-dir",
                state_dir.display()
            ),
            Err((_, e)) => Err(e).with_context(|| format!("locking {}", lock_path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/x.sock");
        prepare(&path).unwrap();
        let (bound, listener) = BoundSocket::bind(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o660);
        // The umask is back to what it was (0o022 for tests started from a normal shell).
        let now = umask(Mode::from_bits_truncate(0o022));
        umask(now);
        assert_ne!(now.bits(), SOCKET_UMASK as nix::libc::mode_t);
        let err = prepare(&path).unwrap_err().to_string();
        assert!(err.contains("already serving"), "{err}");
        drop(listener);
        std::mem::forget(bound); // leave the file behind, as a killed process would
        prepare(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn regular_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sock");
        fs::write(&path, "keep").unwrap();
        assert!(prepare(&path).is_err());
        assert!(path.exists());
    }

    #[test]
    fn state_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains("another instance"), "{err}");
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
