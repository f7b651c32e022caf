//! A backend's key prefix: relative keys in, absolute keys out, and back.

use std::fmt;

/// Maps relative keys to absolute ones and back.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    pub(crate) fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub(crate) fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.prefix.as_str())
    }
}

impl fmt::Display for KeySpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_round_trip() {
        let ks = KeySpace::new("/netloom/v1/");
        assert_eq!(ks.full("ipam/x"), "/netloom/v1/ipam/x");
        assert_eq!(ks.relative("/netloom/v1/ipam/x"), Some("ipam/x"));
        assert_eq!(ks.relative("/other/ipam/x"), None);
    }
}
