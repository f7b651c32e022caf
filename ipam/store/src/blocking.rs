//! File and database work off the async threads.

use std::sync::Arc;

use crate::kv::{StoreError, StoreResult};

/// Runs `f` on `state` on tokio's blocking threads; a task that died (a panic) is reported
/// through `failed`.
pub(crate) async fn on_blocking_thread<S, T>(
    state: &Arc<S>,
    f: impl FnOnce(&S) -> StoreResult<T> + Send + 'static,
    failed: impl FnOnce(String) -> StoreError,
) -> StoreResult<T>
where
    S: Send + Sync + ?Sized + 'static,
    T: Send + 'static,
{
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state)).await.map_err(|e| failed(format!("store task failed: {e}")))?
}
