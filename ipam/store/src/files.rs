//! Records as files: one file per key under a directory, for a driver whose records concern this
//! host only and that should not carry a database for them.
//!
//! A key `a/b/c` is the file `<root>/a/b/c`. A write goes to `c~` first, is synced, and is renamed
//! over `c`, so a killed process leaves either the old record or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::blocking::on_blocking_thread;
use crate::kv::{StoreError, StoreResult};
use crate::records::RecordStore;

pub struct FileRecords {
    root: Arc<Path>,
}

impl FileRecords {
    /// Keeps records under `root`, made if missing.
    pub fn open(root: impl Into<PathBuf>) -> StoreResult<Self> {
        let root = root.into();
        private_dirs(&root).map_err(|e| failed(&root, "creating the directory", e))?;
        Ok(Self { root: root.into() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let failed = |detail| StoreError::Files { path: self.root.display().to_string(), detail };
        on_blocking_thread(&self.root, f, failed).await
    }
}

#[async_trait]
impl RecordStore for FileRecords {
    async fn list(&self, prefix: &str) -> StoreResult<Vec<(String, Vec<u8>)>> {
        // Only the directory the prefix names can hold matching keys.
        let dir = match prefix.rsplit_once('/') {
            Some((dir, _)) => {
                validate_key(dir)?;
                dir.to_string()
            }
            None => String::new(),
        };
        let prefix = prefix.to_string();
        self.blocking(move |root| {
            let mut found = Vec::new();
            collect(root, &dir, &mut found)?;
            found.retain(|(key, _)| key.starts_with(&prefix));
            found.sort();
            Ok(found)
        })
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> StoreResult<()> {
        validate_key(key)?;
        let key = key.to_string();
        self.blocking(move |root| write_atomically(&root.join(&key), &value)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<bool> {
        validate_key(key)?;
        let key = key.to_string();
        self.blocking(move |root| {
            let path = root.join(&key);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(failed(&path, "removing", e)),
            }
            // Directories left empty go too (fails, as it should, on the first one that is not).
            for dir in path.ancestors().skip(1).take_while(|dir| *dir != root) {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
            Ok(true)
        })
        .await
    }
}

/// Key segments are file names: letters, digits, '.', '_' and '-', never "." or "..".
fn validate_key(key: &str) -> StoreResult<()> {
    let bad_segment = key.split('/').find(|segment| !valid_segment(segment));
    match bad_segment {
        None => Ok(()),
        Some(segment) => Err(StoreError::InvalidKey {
            key: key.to_string(),
            reason: format!(
                "segment {segment:?} is not a file name: use letters, digits, '.', '_' or '-', not \".\" or \"..\""
            ),
        }),
    }
}

fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Every record below `<root>/<dir>`, as (key, value); files that no key names (a `~` left by a
/// killed write) are skipped.
fn collect(root: &Path, dir: &str, found: &mut Vec<(String, Vec<u8>)>) -> StoreResult<()> {
    let path = root.join(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(&path, "listing", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| failed(&path, "listing", e))?;
        let Some(name) = entry.file_name().to_str().filter(|name| valid_segment(name)).map(str::to_string) else {
            continue;
        };
        let key = if dir.is_empty() { name } else { format!("{dir}/{name}") };
        let file_type = entry.file_type().map_err(|e| failed(&entry.path(), "reading", e))?;
        if file_type.is_dir() {
            collect(root, &key, found)?;
        } else if file_type.is_file() {
            let value = std::fs::read(entry.path()).map_err(|e| failed(&entry.path(), "reading", e))?;
            found.push((key, value));
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, value: &[u8]) -> StoreResult<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut partial = path.as_os_str().to_owned();
    partial.push("~");
    let partial = PathBuf::from(partial);
    let create = || {
        private_dirs(dir)?;
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)
    };
    // A delete of the last record beside it may remove the directory between the two steps.
    let mut file = create().or_else(|_| create()).map_err(|e| failed(&partial, "creating", e))?;
    file.write_all(value).and_then(|()| file.sync_all()).map_err(|e| failed(&partial, "writing", e))?;
    std::fs::rename(&partial, path).map_err(|e| failed(path, "renaming the new record into place", e))?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| failed(dir, "syncing", e))
}

/// Records are only for the driver (root): directories 0700, files 0600.
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn failed(path: &Path, doing: &str, e: std::io::Error) -> StoreError {
    StoreError::Files { path: path.display().to_string(), detail: format!("{doing}: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileRecords::open(dir.path().join("records")).unwrap();
        files.put("null/h1/networks/n1", b"one".to_vec()).await.unwrap();
        files.put("null/h1/networks/n2", b"two".to_vec()).await.unwrap();
        files.put("null/h1/endpoints/n1/e1", b"ep".to_vec()).await.unwrap();
        files.put("null/h2/networks/n3", b"other host".to_vec()).await.unwrap();
        files.put("null/h1/networks/n1", b"one again".to_vec()).await.unwrap();

        let networks = files.list("null/h1/networks/").await.unwrap();
        assert_eq!(
            networks,
            [
                ("null/h1/networks/n1".to_string(), b"one again".to_vec()),
                ("null/h1/networks/n2".into(), b"two".to_vec())
            ]
        );
        assert_eq!(files.list("null/h1/").await.unwrap().len(), 3);
        assert_eq!(files.list("null/h1/networks/n").await.unwrap().len(), 2, "a prefix need not end at a '/'");
        assert!(files.list("absent/").await.unwrap().is_empty());

        assert!(files.delete("null/h1/endpoints/n1/e1").await.unwrap());
        assert!(!files.delete("null/h1/endpoints/n1/e1").await.unwrap());
        assert!(!dir.path().join("records/null/h1/endpoints").exists(), "emptied directories go");
        assert!(dir.path().join("records").exists(), "the root stays");
    }

    #[tokio::test]
    async fn a_killed_write_leaves_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileRecords::open(dir.path()).unwrap();
        files.put("d/k", b"old".to_vec()).await.unwrap();
        std::fs::write(dir.path().join("d/k~"), b"half of the n").unwrap();
        assert_eq!(files.list("d/").await.unwrap(), [("d/k".to_string(), b"old".to_vec())]);
        files.put("d/k", b"new".to_vec()).await.unwrap();
        assert_eq!(files.list("").await.unwrap(), [("d/k".to_string(), b"new".to_vec())]);
    }

    #[tokio::test]
    async fn keys_that_are_not_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileRecords::open(dir.path()).unwrap();
        for bad in ["", "a//b", "a/../b", "..", "a/./b", "/a", "a/", "a/b c", "a/b~", "a\0b"] {
            let err = files.put(bad, vec![]).await.unwrap_err();
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{bad:?}: {err}");
            assert!(files.delete(bad).await.is_err(), "{bad:?}");
        }
        assert!(files.list("../").await.is_err());
    }

    #[tokio::test]
    async fn records_are_readable_only_by_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = FileRecords::open(dir.path().join("records")).unwrap();
        files.put("null/h1/networks/n1", b"one".to_vec()).await.unwrap();
        let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("records"), 0o700);
        assert_eq!(mode("records/null/h1/networks"), 0o700);
        assert_eq!(mode("records/null/h1/networks/n1"), 0o600);
    }
}
