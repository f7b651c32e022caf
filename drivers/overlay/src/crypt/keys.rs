//! This host's WireGuard key pair: made at first start, kept in the state directory (0600).

use std::path::Path;

use anyhow::{bail, Result};

/// A Curve25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl PublicKey {
    /// Standard base64 (as `wg` prints keys): what the store holds.
    pub fn to_base64(self) -> String {
        String::new()
    }

    pub fn from_base64(_text: &str) -> Result<PublicKey> {
        bail!("not yet")
    }
}

/// The private key never leaves this struct except to the tunnel engine.
pub struct KeyPair {
    pub secret: [u8; 32],
    pub public: PublicKey,
}

impl KeyPair {
    /// `<state_dir>/wireguard.key`, made (0600, written atomically) if missing; refused if it is
    /// readable by others or not a key.
    pub fn load_or_create(_state_dir: &Path) -> Result<KeyPair> {
        bail!("not yet")
    }

    /// A new key pair replaces the stored one (atomically, 0600).
    pub fn rotate(_state_dir: &Path) -> Result<KeyPair> {
        bail!("not yet")
    }
}
