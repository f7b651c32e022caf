//! Per-key request serialisation and bounded waits, so that no request waits forever.
//!
//! Drivers keep their in-memory state behind a plain mutex that is never held across an
//! `.await`; requests that touch the same network take that network's [`KeyedLocks`] entry
//! instead, for as long as their kernel, firewall and store calls take. A slow call then holds up
//! only its own network, and a request that cannot get its turn in time fails with a message
//! naming what it waited for and who held it.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::error::PluginError;

/// How long a request waits for its network's turn. Below dockerd's 30 s plugin timeout, so the
/// user sees our message rather than a bare timeout.
pub const LOCK_WAIT: Duration = Duration::from_secs(20);

/// How long one firewall, kernel or store call may take before its request fails.
pub const CALL_LIMIT: Duration = Duration::from_secs(15);

struct Entry {
    turn: Arc<AsyncMutex<()>>,
    /// What the current holder is doing, and since when.
    holder: Mutex<Option<(String, Instant)>>,
}

/// One async lock per key (network id), made on first use and dropped with its last user.
#[derive(Default)]
pub struct KeyedLocks {
    entries: Mutex<HashMap<String, Weak<Entry>>>,
}

/// Holds a key's turn; dropping it lets the next request in.
pub struct Turn {
    entry: Arc<Entry>,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        *lock(&self.entry.holder) = None;
    }
}

impl KeyedLocks {
    /// Waits (at most `limit`) for `key`'s turn. `what` names the resource for the error message
    /// ("network 0123456789ab"), `doing` the request taking it ("Join of endpoint …").
    pub async fn take(
        &self,
        key: &str,
        what: &str,
        doing: impl Into<String>,
        limit: Duration,
    ) -> Result<Turn, PluginError> {
        let entry = {
            let mut entries = lock(&self.entries);
            entries.retain(|_, e| e.strong_count() > 0);
            match entries.get(key).and_then(Weak::upgrade) {
                Some(entry) => entry,
                None => {
                    let entry = Arc::new(Entry { turn: Arc::new(AsyncMutex::new(())), holder: Mutex::new(None) });
                    entries.insert(key.to_string(), Arc::downgrade(&entry));
                    entry
                }
            }
        };
        match tokio::time::timeout(limit, entry.turn.clone().lock_owned()).await {
            Ok(guard) => {
                *lock(&entry.holder) = Some((doing.into(), Instant::now()));
                Ok(Turn { entry, _guard: guard })
            }
            Err(_) => {
                let holder = match lock(&entry.holder).as_ref() {
                    Some((doing, since)) => format!(", held by {doing} for {}", span(since.elapsed())),
                    None => String::new(),
                };
                Err(PluginError::new(format!(
                    "timed out after {} waiting for {what}{holder}; another request on it is still running \
                     (see the plugin's log); retry the docker command",
                    span(limit)
                )))
            }
        }
    }
}

/// Runs `call`, failing with a message naming `what` when it takes longer than `limit`. The call
/// is abandoned, not undone: callers use it for idempotent steps that a retry completes.
pub async fn bounded<T>(
    what: impl Display,
    limit: Duration,
    call: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("timed out after {} waiting for {what}", span(limit))),
    }
}

fn span(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A poisoned mutex only means a request panicked (the server turns that into an error answer);
/// the data behind these locks is still consistent, so carry on.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_key_waits_other_keys_do_not() {
        let locks = KeyedLocks::default();
        let first = locks.take("n1", "network n1", "Join of endpoint e1", LOCK_WAIT).await.unwrap();
        // Another network goes on at once.
        let other = locks.take("n2", "network n2", "Join of endpoint e2", Duration::from_millis(50)).await.unwrap();
        drop(other);
        // The same network times out, naming the network and the holder.
        let err = locks.take("n1", "network n1", "Leave", Duration::from_millis(50)).await.err().unwrap();
        assert!(
            err.message().contains("timed out after 50 ms waiting for network n1, held by Join of endpoint e1 for "),
            "{}",
            err.message()
        );
        drop(first);
        locks.take("n1", "network n1", "Leave", Duration::from_millis(50)).await.unwrap();
        assert!(lock(&locks.entries).values().all(|e| e.strong_count() == 0));
    }

    #[tokio::test]
    async fn waiters_get_their_turn() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.take("n1", "network n1", "a", LOCK_WAIT).await.unwrap();
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.take("n1", "network n1", "b", LOCK_WAIT).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn bounded_names_what_it_waited_for() {
        let err = bounded("the firewall (adding ports)", Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            anyhow::Ok(())
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "timed out after 20 ms waiting for the firewall (adding ports)");
        assert_eq!(bounded("x", Duration::from_secs(1), async { anyhow::Ok(7) }).await.unwrap(), 7);
    }
}
