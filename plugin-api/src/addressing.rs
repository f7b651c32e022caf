//! The addresses Docker's IPAM hands a driver, parsed: a network's pools with their gateways
//! (CreateNetwork) and an endpoint's addresses (CreateEndpoint).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::error::PluginError;
/// Kept here too, where the drivers have always found it.
pub use crate::ids::short_id;
use crate::wire::network::IpamData;

/// One pool of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    pub subnet: IpNetwork,
    /// With the pool's prefix length, as Docker sends it.
    pub gateway: Option<IpNetwork>,
}

/// Parses a network's pools of one family ("IPv4"/"IPv6"); each gateway must lie in its pool.
pub fn pools(data: &[IpamData], family: &str) -> Result<Vec<Pool>, PluginError> {
    data.iter()
        .map(|pool| {
            let subnet: IpNetwork = Some(pool.pool.as_str())
                .filter(|text| text.contains('/'))
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| PluginError::new(format!("{family} pool {:?} is not a CIDR", pool.pool)))?;
            let gateway = match pool.gateway.as_deref() {
                None | Some("") => None,
                Some(text) => Some(
                    text.parse::<IpNetwork>()
                        .map_err(|_| PluginError::new(format!("{family} gateway {text:?} is not an address/prefix")))?,
                ),
            };
            if let Some(g) = gateway.filter(|g| !subnet.contains(g.ip())) {
                return Err(PluginError::new(format!("gateway {} is outside the subnet {subnet}", g.ip())));
            }
            Ok(Pool { subnet, gateway })
        })
        .collect()
}

/// Parses an endpoint's address ("" means none) and checks it lies in one of `pools`.
pub fn endpoint_address(text: &str, pools: &[Pool], family: &str) -> Result<Option<IpNetwork>, PluginError> {
    if text.is_empty() {
        return Ok(None);
    }
    let address: IpNetwork =
        text.parse().map_err(|_| PluginError::new(format!("{family} address {text:?} is not an address/prefix")))?;
    if pools.is_empty() {
        return Err(PluginError::new(format!("the network has no {family} subnet for address {text}")));
    }
    if pool_of(pools, address.ip()).is_none() {
        let subnets: Vec<String> = pools.iter().map(|p| p.subnet.to_string()).collect();
        return Err(PluginError::new(format!(
            "address {} is outside the network's subnets {}",
            address.ip(),
            subnets.join(", ")
        )));
    }
    Ok(Some(address))
}

/// The pool `ip` belongs to.
pub fn pool_of(pools: &[Pool], ip: IpAddr) -> Option<&Pool> {
    pools.iter().find(|p| p.subnet.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pool: &str, gateway: Option<&str>) -> IpamData {
        IpamData { pool: pool.into(), gateway: gateway.map(Into::into), ..IpamData::default() }
    }

    #[test]
    fn pools_and_addresses() {
        let parsed = pools(&[data("10.1.0.0/24", Some("10.1.0.1/24")), data("10.2.0.0/24", None)], "IPv4").unwrap();
        assert_eq!(parsed[0].gateway, Some("10.1.0.1/24".parse().unwrap()));
        assert_eq!(parsed[1].gateway, None);
        assert_eq!(endpoint_address("10.2.0.9/24", &parsed, "IPv4").unwrap(), Some("10.2.0.9/24".parse().unwrap()));
        assert_eq!(endpoint_address("", &parsed, "IPv4").unwrap(), None);
        assert_eq!(pool_of(&parsed, "10.2.0.9".parse().unwrap()), Some(&parsed[1]));
    }

    #[test]
    fn bad_data_is_named() {
        for (input, expected) in [
            (data("10.1.0.0", None), "not a CIDR"),
            (data("10.1.0.0/24", Some("10.9.0.1/24")), "outside the subnet 10.1.0.0/24"),
            (data("10.1.0.0/24", Some("nope")), "\"nope\" is not an address/prefix"),
        ] {
            let err = pools(&[input], "IPv4").unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        let parsed = pools(&[data("10.1.0.0/24", None)], "IPv4").unwrap();
        let err = endpoint_address("10.3.0.2/24", &parsed, "IPv4").unwrap_err().to_string();
        assert!(err.contains("outside the network's subnets 10.1.0.0/24"), "{err}");
        let err = endpoint_address("fd00::2/64", &[], "IPv6").unwrap_err().to_string();
        assert!(err.contains("no IPv6 subnet"), "{err}");
    }
}
