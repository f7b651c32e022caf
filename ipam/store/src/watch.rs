//! The one shape of every backend's watch stream: pull a batch of changes from the backend, hand
//! them out one by one, and end after the first error.

use std::collections::VecDeque;

use async_trait::async_trait;
use futures::StreamExt;

use crate::kv::{StoreResult, WatchEvent, WatchStream};

/// Where a backend's changes come from.
#[async_trait]
pub(crate) trait WatchSource: Send + 'static {
    /// The next changes under the watched prefix (possibly none); `None` once the source has
    /// closed quietly. An error ends the stream after it is handed out.
    async fn next_batch(&mut self) -> StoreResult<Option<Vec<WatchEvent>>>;
}

pub(crate) fn stream(source: impl WatchSource) -> WatchStream {
    let state = (source, VecDeque::new(), false);
    futures::stream::unfold(state, |(mut source, mut pending, done)| async move {
        loop {
            if let Some(event) = pending.pop_front() {
                return Some((Ok(event), (source, pending, done)));
            }
            if done {
                return None;
            }
            match source.next_batch().await {
                Ok(Some(batch)) => pending.extend(batch),
                Ok(None) => return None,
                Err(err) => return Some((Err(err), (source, pending, true))),
            }
        }
    })
    .boxed()
}
