//! This host's WireGuard key pair: made at first start, kept in the state directory (0600).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519;
use tracing::info;

/// The private key's file name in the state directory.
pub const KEY_FILE: &str = "wireguard.key";

/// A Curve25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl PublicKey {
    /// Standard base64 (as `wg` prints keys): what the store holds.
    pub fn to_base64(self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn from_base64(text: &str) -> Result<PublicKey> {
        decode_key(text).map(PublicKey).with_context(|| format!("{text:?} is not a WireGuard public key"))
    }
}

/// 32 bytes in standard base64 (44 characters with the padding).
fn decode_key(text: &str) -> Result<[u8; 32]> {
    let bytes = STANDARD.decode(text.trim()).map_err(|e| anyhow!("not base64: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| anyhow!("{} bytes where a key has 32", b.len()))
}

/// The private key never leaves this struct except to the tunnel engine.
pub struct KeyPair {
    pub secret: [u8; 32],
    pub public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPair({})", self.public)
    }
}

impl KeyPair {
    pub fn from_secret(secret: [u8; 32]) -> KeyPair {
        let public = x25519::PublicKey::from(&x25519::StaticSecret::from(secret));
        KeyPair { secret, public: PublicKey(public.to_bytes()) }
    }

    /// A fresh key pair from the kernel's random source.
    pub fn generate() -> Result<KeyPair> {
        let mut secret = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut random| random.read_exact(&mut secret))
            .context("reading /dev/urandom for a new WireGuard key")?;
        Ok(KeyPair::from_secret(secret))
    }

    /// The key as the engine takes it.
    pub(crate) fn static_secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.secret)
    }

    /// `<state_dir>/wireguard.key`, made (0600, written atomically) if missing; refused if it is
    /// readable by others or not a key.
    pub fn load_or_create(state_dir: &Path) -> Result<KeyPair> {
        let path = key_path(state_dir);
        match fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    bail!(
                        "{} is readable by group or others (mode {mode:03o}): a WireGuard private key must be \
                         0600; run `chmod 600 {}` if it was not exposed, else delete it (a new key is made \
                         and the peers learn it from the store)",
                        path.display(),
                        path.display()
                    );
                }
                let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let secret = decode_key(&text).with_context(|| {
                    format!(
                        "{} does not hold a WireGuard private key; delete it to have a new one made",
                        path.display()
                    )
                })?;
                Ok(KeyPair::from_secret(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate()?;
                write_key(state_dir, &pair)?;
                info!(path = %path.display(), public_key = %pair.public, "made a new WireGuard key");
                Ok(pair)
            }
            Err(e) => Err(anyhow!(e)).with_context(|| format!("checking {}", path.display())),
        }
    }

    /// A new key pair replaces the stored one (atomically, 0600).
    pub fn rotate(state_dir: &Path) -> Result<KeyPair> {
        let pair = KeyPair::generate()?;
        write_key(state_dir, &pair)?;
        info!(path = %key_path(state_dir).display(), public_key = %pair.public, "rotated the WireGuard key");
        Ok(pair)
    }

    /// Removes the stored key (the last encrypted network of this host is gone); false when there
    /// was none.
    pub fn delete(state_dir: &Path) -> Result<bool> {
        let path = key_path(state_dir);
        match fs::remove_file(&path) {
            Ok(()) => {
                info!(path = %path.display(), "deleted the WireGuard key");
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow!(e)).with_context(|| format!("deleting {}", path.display())),
        }
    }
}

fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

/// Writes the key to a temporary file made 0600 from the start, then renames it over the key
/// file, so a crash leaves either the old key or the new one, never a part or a readable copy.
fn write_key(state_dir: &Path, pair: &KeyPair) -> Result<()> {
    fs::create_dir_all(state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    let path = key_path(state_dir);
    let temporary = state_dir.join(format!(".{KEY_FILE}.new"));
    let _ = fs::remove_file(&temporary);
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(format!("{}\n", STANDARD.encode(pair.secret)).as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        File::open(state_dir)?.sync_all()
    };
    write()
        .map_err(|e| {
            let _ = fs::remove_file(&temporary);
            anyhow!(e)
        })
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_base64_round_trips_and_is_44_characters() {
        let pair = KeyPair::from_secret([7; 32]);
        let text = pair.public.to_base64();
        assert_eq!(text.len(), 44);
        assert!(text.ends_with('='));
        assert_eq!(PublicKey::from_base64(&text).unwrap(), pair.public);
        assert!(PublicKey::from_base64("not a key").is_err());
        assert!(PublicKey::from_base64(&STANDARD.encode([1u8; 31])).is_err());
    }

    #[test]
    fn public_key_matches_the_reference_derivation() {
        // RFC 7748 section 6.1: Alice's private and public keys.
        let secret: [u8; 32] = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public: [u8; 32] = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(KeyPair::from_secret(secret).public, PublicKey(public));
    }

    fn hex(text: &str) -> [u8; 32] {
        let bytes: Vec<u8> =
            (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect();
        bytes.try_into().unwrap()
    }

    #[test]
    fn key_is_made_0600_then_loaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let made = KeyPair::load_or_create(&state).unwrap();
        let path = state.join(KEY_FILE);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = KeyPair::load_or_create(&state).unwrap();
        assert_eq!(loaded.secret, made.secret);
        assert_eq!(loaded.public, made.public);
        let leftovers: Vec<_> = fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn key_readable_by_others_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        KeyPair::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let message = format!("{:#}", KeyPair::load_or_create(dir.path()).unwrap_err());
        assert!(message.contains("chmod 600"), "{message}");
        assert!(message.contains("644"), "{message}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(KeyPair::load_or_create(dir.path()).is_err());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(KeyPair::load_or_create(dir.path()).is_ok());
    }

    #[test]
    fn file_that_is_not_a_key_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        for junk in ["", "hello\n", "AAAA\n"] {
            fs::write(&path, junk).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
            let message = format!("{:#}", KeyPair::load_or_create(dir.path()).unwrap_err());
            assert!(message.contains("delete it"), "{message}");
            assert_eq!(fs::read_to_string(&path).unwrap(), junk);
        }
    }

    #[test]
    fn rotate_replaces_the_key_and_delete_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyPair::load_or_create(dir.path()).unwrap();
        let second = KeyPair::rotate(dir.path()).unwrap();
        assert_ne!(first.public, second.public);
        let path = dir.path().join(KEY_FILE);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(KeyPair::load_or_create(dir.path()).unwrap().public, second.public);
        assert!(KeyPair::delete(dir.path()).unwrap());
        assert!(!path.exists());
        assert!(!KeyPair::delete(dir.path()).unwrap());
    }
}
