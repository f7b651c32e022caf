//! Keeps a netlink connection's I/O task alive: if it panics or ends, a new connection is made
//! (with backoff) and the handle every [`Netlink`] clone uses is swapped for the new one, so one
//! bad message does not leave a driver whose every request fails until it is restarted.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use rtnetlink::Handle;
use tracing::{error, info, warn};

use crate::Netlink;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A task that ran this long before failing starts the next backoff from the beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Shared by every clone of a [`Netlink`]; replaced when the connection is remade.
pub(crate) type SharedHandle = Arc<Mutex<Handle>>;

pub(crate) fn current(shared: &SharedHandle) -> Handle {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
}

impl Netlink {
    /// Wraps a fresh connection: spawns its task under supervision; `reconnect` makes a new one
    /// (in the same network namespace) when the task dies.
    pub(crate) fn supervised<C, R>(connection: C, handle: Handle, reconnect: R) -> Netlink
    where
        C: Future<Output = ()> + Send + 'static,
        R: Fn() -> Result<(C, Handle)> + Send + 'static,
    {
        let shared: SharedHandle = Arc::new(Mutex::new(handle));
        // Weak: once every Netlink clone is dropped, the last Handle goes, the connection task
        // ends and its socket closes (a namespace with nothing else in it can then go away).
        let wanted = Arc::downgrade(&shared);
        let swap = wanted.clone();
        let install = move |handle| {
            if let Some(shared) = swap.upgrade() {
                *shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = handle;
            }
        };
        tokio::spawn(supervise(
            "netlink connection",
            connection,
            move || wanted.strong_count() > 0,
            reconnect,
            install,
        ));
        Netlink { handle: shared }
    }
}

/// Runs `task`; when it panics or ends while still `wanted`, waits (doubling from 100 ms up to
/// 30 s), makes a new one with `remake`, hands its companion value to `install`, and runs that.
/// Returns when the task is no longer wanted or the runtime cancels it (shutdown).
pub async fn supervise<T, V, W, R, I>(what: &'static str, mut task: T, wanted: W, remake: R, install: I)
where
    T: Future<Output = ()> + Send + 'static,
    W: Fn() -> bool,
    R: Fn() -> Result<(T, V)>,
    I: Fn(V),
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let outcome = tokio::spawn(task).await;
        if !wanted() {
            return;
        }
        match outcome {
            Ok(()) => warn!(task = what, "background task ended; starting it again"),
            Err(e) if e.is_panic() => error!(task = what, "background task panicked; starting it again"),
            Err(_) => return,
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        task = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match remake() {
                Ok((task, value)) => {
                    install(value);
                    info!(task = what, "background task started again");
                    break task;
                }
                Err(e) => warn!(task = what, "starting the background task again: {e:#}"),
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    type BoxedTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    #[tokio::test]
    async fn a_panicking_task_is_started_again_with_backoff() {
        let runs = Arc::new(AtomicUsize::new(0));
        let installed = Arc::new(AtomicUsize::new(0));
        let make = {
            let runs = runs.clone();
            move || -> Result<(BoxedTask, usize)> {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let task: BoxedTask = Box::pin(async move {
                    if run < 3 {
                        panic!("run {run} fails");
                    }
                    std::future::pending::<()>().await
                });
                Ok((task, run))
            }
        };
        let (first, _) = make().unwrap();
        let install = {
            let installed = installed.clone();
            move |run: usize| installed.store(run, Ordering::SeqCst)
        };
        let supervisor = tokio::spawn(supervise("test task", first, || true, make, install));
        // 100 + 200 + 400 ms of backoff (plus the time panics take to print): the fourth run
        // comes up and stays.
        let started = Instant::now();
        while runs.load(Ordering::SeqCst) < 4 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(700), "restarted without backoff");
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(installed.load(Ordering::SeqCst), 3, "the last remade value was installed");
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "a healthy task is left alone");
        supervisor.abort();
    }

    #[tokio::test]
    async fn a_task_no_longer_wanted_is_not_started_again() {
        let remade = Arc::new(AtomicUsize::new(0));
        let counter = remade.clone();
        let make = move || -> Result<(std::future::Ready<()>, ())> {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok((std::future::ready(()), ()))
        };
        supervise("test task", std::future::ready(()), || false, make, |()| {}).await;
        assert_eq!(remade.load(Ordering::SeqCst), 0);
    }
}
