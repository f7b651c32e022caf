//! Interface names: validation (the kernel's rules) and the names netloom generates.

use anyhow::{bail, Result};

/// The kernel's IFNAMSIZ less the terminating NUL.
pub const MAX_NAME_LEN: usize = 15;

/// Checks `name` the way the kernel's `dev_valid_name` does, with a message a user can act on.
pub fn validate(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("interface name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        bail!("interface name {name:?} is {} bytes long; Linux allows at most {MAX_NAME_LEN}", name.len());
    }
    if name == "." || name == ".." {
        bail!("interface name {name:?} is not allowed");
    }
    if let Some(bad) = name.chars().find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control()) {
        bail!("interface name {name:?} contains {bad:?}; use letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// `<prefix><first hex chars of id>`, cut to the kernel's limit.
/// An id with no ASCII letter or digit (never one of Docker's) gets a hash of itself instead,
/// so that two such ids never share a name.
pub fn derived(prefix: &str, id: &str) -> String {
    let room = MAX_NAME_LEN.saturating_sub(prefix.len());
    let mut tail: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).take(room).collect();
    if tail.is_empty() {
        tail = format!("{:016x}", fnv1a(id.as_bytes())).chars().take(room).collect();
    }
    format!("{prefix}{tail}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rules() {
        for ok in ["br0", "loom-0123456789", "a.b_c-d", "x"] {
            validate(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("loom-01234567890", "at most 15"),
            ("..", "not allowed"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("a:b", "':'"),
        ] {
            let err = validate(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn derived_names_fit() {
        assert_eq!(derived("br-", "0123456789abcdef0123"), "br-0123456789ab");
        assert_eq!(derived("veth", "abc"), "vethabc");
        validate(&derived("loom-br-", "ffffffffffffffffffff")).unwrap();
    }

    #[test]
    fn odd_ids_get_distinct_valid_names() {
        let a = derived("loom", "éééé");
        let b = derived("loom", "ëëëë");
        assert_ne!(a, b);
        assert!(a.len() > "loom".len());
        for name in [a, b, derived("lh", "🦀"), derived("loom", ""), derived("a-very-long-pre", "ü")] {
            validate(&name).unwrap();
        }
        assert_eq!(derived("lh", "é0123456789abcdef"), "lh0123456789abc");
    }
}
