//! `--store` to a [`Store`]: the URL picks the backend, each of which is a cargo feature.

use std::path::Path;
use std::sync::Arc;

use crate::kv::{Store, StoreError, StoreOptions, StoreResult, DEFAULT_PREFIX};
use crate::url::StoreUrl;

/// Opens the store named by `url`: `None` is the embedded store in `<state_dir>/store.redb`,
/// `etcd://h1:2379,h2:2379` or `consul://host:8500` a shared one.
pub async fn open(url: Option<&str>, state_dir: &Path, prefix: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, state_dir, StoreOptions { prefix: prefix.to_string(), ..StoreOptions::default() }).await
}

pub async fn open_with(url: Option<&str>, state_dir: &Path, options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
    let url_text = url.unwrap_or("");
    let parsed = match url {
        None => StoreUrl::Embedded,
        Some(u) => StoreUrl::parse(u)?,
    };
    validate_prefix(&options.prefix).map_err(|reason| StoreError::InvalidUrl { url: url_text.to_string(), reason })?;
    let store = connect(parsed, url, state_dir, &options).await?;
    tracing::info!(store = %store.describe(), prefix = %options.prefix, "store opened");
    Ok(crate::observed::Observed::wrap(store))
}

async fn connect(
    parsed: StoreUrl,
    url: Option<&str>,
    state_dir: &Path,
    options: &StoreOptions,
) -> StoreResult<Arc<dyn Store>> {
    // Unused only in a build without any backend.
    #[cfg(not(any(feature = "embedded", feature = "etcd", feature = "consul")))]
    let _ = options;
    match parsed {
        #[cfg(feature = "embedded")]
        StoreUrl::Embedded => Ok(Arc::new(crate::embedded::EmbeddedStore::open(state_dir, options).await?)),
        #[cfg(feature = "etcd")]
        StoreUrl::Etcd(endpoints) => Ok(Arc::new(crate::etcd::EtcdStore::connect(endpoints, options).await?)),
        #[cfg(feature = "consul")]
        StoreUrl::Consul(endpoints) => Ok(Arc::new(crate::consul::ConsulStore::open(endpoints, options).await?)),
        #[allow(unreachable_patterns)]
        missing => {
            let what = match url {
                None => format!("the embedded store in {}", state_dir.join("store.redb").display()),
                Some(u) => format!("store URL {u:?}"),
            };
            Err(StoreError::NotBuilt { what, backend: missing.backend() })
        }
    }
}

fn validate_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
        return Err(format!("key prefix {prefix:?} must start and end with '/', e.g. {DEFAULT_PREFIX:?}"));
    }
    if prefix.contains("//") || prefix.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("key prefix {prefix:?} must not contain empty segments, spaces or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(validate_prefix("/netloom/v1/").is_ok());
        assert!(validate_prefix("/a/").is_ok());
        assert!(validate_prefix("netloom/").is_err());
        assert!(validate_prefix("/netloom").is_err());
        assert!(validate_prefix("/").is_err());
        assert!(validate_prefix("/a//b/").is_err());
    }

    #[cfg(not(feature = "etcd"))]
    #[tokio::test]
    async fn a_backend_left_out_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(Some("etcd://h:2379"), dir.path(), DEFAULT_PREFIX).await.err().expect("etcd is not built in");
        assert!(matches!(err, StoreError::NotBuilt { backend: "etcd", .. }), "{err}");
        assert!(err.to_string().contains("etcd://h:2379"), "{err}");
    }

    #[cfg(not(feature = "embedded"))]
    #[tokio::test]
    async fn the_embedded_store_left_out_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(None, dir.path(), DEFAULT_PREFIX).await.err().expect("redb is not built in");
        assert!(err.to_string().contains("store.redb") && err.to_string().contains("embedded"), "{err}");
    }
}
