//! What every driver decides the same way for a new endpoint: its MAC address, and what
//! CreateEndpoint answers.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use netloom_dataplane::mac;
use netloom_plugin_api::wire::network::{CreateEndpointResponse, EndpointInterface};
use netloom_plugin_api::{PluginError, PluginResult};

/// The IPv4 address of an endpoint's address, if it is one.
pub fn ipv4(address: Option<IpNetwork>) -> Option<Ipv4Addr> {
    match address.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => Some(v4),
        _ => None,
    }
}

/// A new endpoint's MAC: the one Docker gave (`--mac-address`), checked, or else one derived
/// from the IPv4 address the way Docker does.
pub fn mac_of_new(given: &str, address_v4: Option<IpNetwork>) -> PluginResult<String> {
    if given.is_empty() {
        return Ok(mac::format(&mac::for_endpoint(ipv4(address_v4))));
    }
    match mac::parse(given) {
        Ok(parsed) if parsed[0] & 0x01 == 0 => Ok(given.to_string()),
        Ok(_) => Err(PluginError::new(format!(
            "--mac-address {given} is a multicast address; an endpoint needs a unicast one, e.g. 02:42:ac:11:00:02"
        ))),
        Err(e) => Err(PluginError::new(format!("--mac-address: {e:#}; write it as 02:42:ac:11:00:02"))),
    }
}

/// CreateEndpoint's answer: the MAC when the driver chose it, nothing when Docker gave one.
pub fn created(given_mac: &str, mac: &str) -> CreateEndpointResponse {
    let interface =
        given_mac.is_empty().then(|| EndpointInterface { mac_address: mac.to_string(), ..Default::default() });
    CreateEndpointResponse { interface }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_derived_or_checked() {
        let v4: IpNetwork = "10.9.0.5/24".parse().unwrap();
        assert_eq!(mac_of_new("", Some(v4)).unwrap(), "02:42:0a:09:00:05");
        assert_eq!(mac_of_new("02:aa:bb:cc:dd:ee", Some(v4)).unwrap(), "02:aa:bb:cc:dd:ee");
        let err = mac_of_new("02:aa:bb", None).unwrap_err();
        assert!(
            err.message().starts_with("--mac-address: ") && err.message().contains("\"02:aa:bb\""),
            "{}",
            err.message()
        );
        let err = mac_of_new("01:00:5e:00:00:01", None).unwrap_err();
        assert!(err.message().contains("multicast"), "{}", err.message());
    }

    #[test]
    fn the_answer_carries_only_a_chosen_mac() {
        assert_eq!(created("", "02:42:0a:09:00:05").interface.unwrap().mac_address, "02:42:0a:09:00:05");
        assert!(created("02:aa:bb:cc:dd:ee", "02:aa:bb:cc:dd:ee").interface.is_none());
    }
}
