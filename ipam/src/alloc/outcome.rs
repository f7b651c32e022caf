//! Transactions whose outcome is unknown: the store timed out, or the connection dropped, after
//! the request went out, so the write may or may not have been applied. Retrying blindly would
//! apply a change twice (a second pool reference that nobody ever releases, an address claimed by
//! a write that then conflicts with itself); answering with an error would leave a claim that no
//! request knows about. So the write is read back first, and retried only if it did not happen.

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

use crate::error::IpamResult;
use crate::ipam::Ipam;
use netloom_store::{StoreError, Txn, TxnOutcome};

/// How many times a write with an unknown outcome is sent again (after reading back that it was
/// not applied), and how many times the read-back is tried before giving up.
pub(crate) const UNKNOWN_OUTCOME_ATTEMPTS: u32 = 3;

/// A failure after which the store may have applied the write: anything that is not an answer.
fn outcome_unknown(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable { .. } | StoreError::Embedded { .. })
}

impl Ipam {
    /// Sends `txn`; when its outcome is unknown, asks `applied` (a read of the store) whether it
    /// took effect. Applied reads as `Committed(0)`: committed, at a revision nobody knows.
    pub(crate) async fn commit<F, Fut>(&self, what: &str, txn: Txn, applied: F) -> IpamResult<TxnOutcome>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = IpamResult<bool>>,
    {
        let mut sent = 0;
        loop {
            sent += 1;
            let error = match self.store.txn(txn.clone()).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if outcome_unknown(&e) => e,
                Err(e) => return Err(e.into()),
            };
            warn!(what, attempt = sent, "store write outcome unknown ({error}); reading it back before retrying");
            if read_back(what, &applied).await.map_err(|_| error.clone())? {
                info!(what, "the write whose outcome was unknown had been applied");
                return Ok(TxnOutcome::Committed(0));
            }
            if sent >= UNKNOWN_OUTCOME_ATTEMPTS {
                return Err(error.into());
            }
            info!(what, "the write whose outcome was unknown had not been applied; sending it again");
        }
    }
}

/// `applied`, retried with a short backoff while the store does not answer. An error means the
/// outcome stays unknown: the caller must not send the write again.
async fn read_back<F, Fut>(what: &str, applied: &F) -> IpamResult<bool>
where
    F: Fn() -> Fut,
    Fut: Future<Output = IpamResult<bool>>,
{
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        match applied().await {
            Ok(done) => return Ok(done),
            Err(e) if tries >= UNKNOWN_OUTCOME_ATTEMPTS => {
                warn!(what, "reading back a write whose outcome is unknown: {e}; giving up, the outcome stays unknown");
                return Err(e);
            }
            Err(e) => warn!(what, "reading back a write whose outcome is unknown: {e}; trying again"),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}
