//! `--store` URLs: `etcd://h1:2379,h2:2379` and `consul://host:8500`.

use crate::kv::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Embedded,
    /// `host:port` endpoints, in the order given.
    Etcd(Vec<String>),
    Consul(Vec<String>),
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl { url: url.to_string(), reason };
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected etcd://host:port[,host:port...] or consul://host:port".into()))?;
        let default_port = match scheme {
            "etcd" => 2379,
            "consul" => 8500,
            other => {
                return Err(invalid(format!(
                    "unknown scheme {other:?}; use etcd:// or consul:// (or no --store for the embedded store)"
                )))
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(invalid("only host:port endpoints are supported: no path, query or credentials".into()));
        }
        let endpoints = rest
            .split(',')
            .map(|ep| parse_endpoint(ep.trim(), default_port).map_err(invalid))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match scheme {
            "etcd" => StoreUrl::Etcd(endpoints),
            _ => StoreUrl::Consul(endpoints),
        })
    }

    /// The backend (and cargo feature) that serves this URL.
    pub fn backend(&self) -> &'static str {
        match self {
            StoreUrl::Embedded => "embedded",
            StoreUrl::Etcd(_) => "etcd",
            StoreUrl::Consul(_) => "consul",
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` to `host:port`.
fn parse_endpoint(ep: &str, default_port: u16) -> Result<String, String> {
    if ep.is_empty() {
        return Err("empty endpoint".into());
    }
    let (host, port) = if let Some(rest) = ep.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| format!("endpoint {ep:?}: missing ']'"))?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| format!("endpoint {ep:?}: {host:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| format!("endpoint {ep:?}: expected ':port' after ']'"))?),
        };
        (format!("[{host}]"), port)
    } else {
        match ep.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (ep.to_string(), None),
        }
    };
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c)) {
        return Err(format!("endpoint {ep:?}: bad host name"));
    }
    let port = match port {
        None => default_port,
        Some(p) => {
            p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("endpoint {ep:?}: bad port {p:?}"))?
        }
    };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls() {
        assert_eq!(
            StoreUrl::parse("etcd://h1:2379,h2:2380").unwrap(),
            StoreUrl::Etcd(vec!["h1:2379".into(), "h2:2380".into()])
        );
        assert_eq!(StoreUrl::parse("etcd://10.0.0.1").unwrap(), StoreUrl::Etcd(vec!["10.0.0.1:2379".into()]));
        assert_eq!(StoreUrl::parse("etcd://[::1]:4000/").unwrap(), StoreUrl::Etcd(vec!["[::1]:4000".into()]));
        assert_eq!(StoreUrl::parse(" etcd://a, b:1 ").unwrap(), StoreUrl::Etcd(vec!["a:2379".into(), "b:1".into()]));
    }

    #[test]
    fn consul_urls() {
        assert_eq!(StoreUrl::parse("consul://c").unwrap(), StoreUrl::Consul(vec!["c:8500".into()]));
        assert_eq!(StoreUrl::parse("consul://[fd00::1]").unwrap(), StoreUrl::Consul(vec!["[fd00::1]:8500".into()]));
    }

    #[test]
    fn bad_urls() {
        for bad in [
            "",
            "etcd:/h",
            "zk://h:2181",
            "etcd://",
            "etcd://h:0",
            "etcd://h:99999",
            "etcd://h:x",
            "etcd://h,,g",
            "etcd://h/path",
            "etcd://user:pw@h",
            "consul://h?dc=1",
            "etcd://[::1",
            "etcd://[nothex]:1",
            "etcd://h h",
        ] {
            let err = StoreUrl::parse(bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidUrl { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn error_names_the_url() {
        let err = StoreUrl::parse("redis://x").unwrap_err().to_string();
        assert!(err.contains("redis://x") && err.contains("etcd://"), "{err}");
    }
}
