//! Opening a store with given credential files, as a binary does at start, and expecting it to
//! work or to be refused fast with an error of the right kind.

use std::path::Path;
use std::time::{Duration, Instant};

use netloom_store::{open_with, CredentialFiles, StoreError, StoreOptions};

/// A refusal must come well within this, not after retries.
pub const FAST: Duration = Duration::from_secs(10);

/// Opens the store at `url` with `files`, then writes and reads a key back.
pub async fn open(url: &str, files: &CredentialFiles, state: &Path) -> Result<(), StoreError> {
    let credentials = files.load(Some(url)).expect("the options fit together");
    let options = StoreOptions { credentials, ..StoreOptions::default() };
    let store = open_with(Some(url), state, options).await?;
    store.put("tls-test/key", b"value".to_vec()).await?;
    let read = store.get("tls-test/key").await?.expect("the key just written");
    assert_eq!(read.value, b"value");
    Ok(())
}

/// Opens with `files`, expecting a refusal of the kind `is_kind` within [`FAST`]; returns its text.
pub async fn refused(url: &str, files: &CredentialFiles, state: &Path, is_kind: fn(&StoreError) -> bool) -> String {
    let started = Instant::now();
    let err = open(url, files, state).await.expect_err("opening with wrong settings must fail");
    let took = started.elapsed();
    assert!(is_kind(&err), "wrong kind of error: {err:?}");
    assert!(took < FAST, "refused only after {took:?}: {err}");
    err.to_string()
}

pub fn is_tls(e: &StoreError) -> bool {
    matches!(e, StoreError::Tls { .. }) && e.to_string().contains("TLS")
}

pub fn is_auth(e: &StoreError) -> bool {
    matches!(e, StoreError::Auth { .. }) && e.to_string().contains("authentication")
}
