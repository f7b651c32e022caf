//! What the dataplane's kernel tests share.

use std::future::Future;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

/// Runs `test` on a thread of its own, in a network namespace and a private mount namespace of
/// its own (unshare(2)), so that links, namespaces and bind mounts disappear with the thread.
pub fn in_new_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    assert!(nix::unistd::geteuid().is_root(), "dataplane tests need root (network namespaces)");
    std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).expect("unshare");
        // Mounts made by the test stay in its mount namespace.
        nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .expect("making / private");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(test());
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}
