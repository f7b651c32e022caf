//! The Engine API's JSON as dockerd 20.10 (API 1.41) to 26 (1.45) writes it, read leniently
//! (absent, null and empty fields alike) and turned into the model.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::engine::model::NetworkEvent;
use crate::engine::model::{
    container_id_of_key, container_name, ContainerNames, DockerEndpoint, DockerNetwork, DockerPool,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawVersion {
    pub api_version: String,
}

/// `GET /info`, the part reconciliation needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawInfo {
    pub cluster_store: Option<String>,
}

/// An entry of `GET /networks` or the answer of `GET /networks/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawNetwork {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub scope: String,
    pub internal: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Option<RawIpam>,
    pub options: Option<BTreeMap<String, String>>,
    pub containers: Option<BTreeMap<String, RawEndpoint>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawIpam {
    pub driver: String,
    pub config: Option<Vec<RawPoolConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawPoolConfig {
    pub subnet: Option<String>,
    #[serde(rename = "IPRange")]
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
    #[serde(rename = "AuxiliaryAddresses")]
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawEndpoint {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "MacAddress")]
    pub mac: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6: String,
}

/// `GET /containers/{id}/json`, the parts naming the container on its networks.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawContainer {
    pub name: String,
    pub network_settings: Option<RawNetworkSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawNetworkSettings {
    pub networks: Option<BTreeMap<String, RawAttachment>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RawAttachment {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Aliases")]
    pub aliases: Option<Vec<String>>,
    /// API 1.44 and later.
    #[serde(rename = "DNSNames")]
    pub dns_names: Option<Vec<String>>,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "GlobalIPv6Address")]
    pub global_ipv6_address: String,
}

/// One object of the `GET /events` stream.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawEvent {
    #[serde(rename = "Type")]
    pub kind: String,
    pub action: String,
    pub actor: RawActor,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub(crate) struct RawActor {
    #[serde(rename = "ID")]
    pub id: String,
    pub attributes: Option<BTreeMap<String, String>>,
}

/// An address or prefix Docker wrote, or nothing for an empty or unreadable one.
fn parse_opt<T: std::str::FromStr>(text: Option<&str>) -> Option<T> {
    text.map(str::trim).filter(|t| !t.is_empty()).and_then(|t| t.parse().ok())
}

impl RawNetwork {
    pub(crate) fn ipam_driver(&self) -> &str {
        self.ipam.as_ref().map(|i| i.driver.as_str()).unwrap_or("")
    }

    pub(crate) fn into_model(self) -> DockerNetwork {
        let ipam = self.ipam.unwrap_or_default();
        let pools = ipam.config.unwrap_or_default().into_iter().map(RawPoolConfig::into_model).collect();
        let endpoints = self
            .containers
            .unwrap_or_default()
            .into_iter()
            .map(|(key, ep)| DockerEndpoint {
                container_id: container_id_of_key(&key),
                name: if key.starts_with("ep-") { String::new() } else { container_name(&ep.name) },
                endpoint_id: ep.endpoint_id,
                ipv4: parse_opt::<IpNetwork>(Some(&ep.ipv4)),
                ipv6: parse_opt::<IpNetwork>(Some(&ep.ipv6)),
                mac: Some(ep.mac).filter(|m| !m.is_empty()),
            })
            .collect();
        DockerNetwork {
            id: self.id,
            name: self.name,
            driver: self.driver,
            scope: self.scope,
            internal: self.internal,
            ipam_driver: ipam.driver,
            pools,
            options: self.options.unwrap_or_default(),
            endpoints,
        }
    }
}

impl RawPoolConfig {
    fn into_model(self) -> DockerPool {
        let aux_addresses =
            self.aux_addresses.unwrap_or_default().values().filter_map(|a| parse_opt::<IpAddr>(Some(a))).collect();
        DockerPool {
            subnet: parse_opt(self.subnet.as_deref()),
            ip_range: parse_opt(self.ip_range.as_deref()),
            gateway: parse_opt(self.gateway.as_deref()),
            aux_addresses,
        }
    }
}

impl RawContainer {
    /// The container's addresses on every network it is on.
    pub(crate) fn addresses(&self) -> Vec<IpAddr> {
        let networks = self.network_settings.as_ref().and_then(|s| s.networks.as_ref());
        networks
            .into_iter()
            .flat_map(|n| n.values())
            .flat_map(|a| [parse_opt::<IpAddr>(Some(&a.ip_address)), parse_opt(Some(&a.global_ipv6_address))])
            .flatten()
            .collect()
    }

    /// The container's names on `network` (the network's name or full id).
    pub(crate) fn names_on(self, network: &str) -> Option<ContainerNames> {
        let networks = self.network_settings?.networks?;
        let attachment = networks
            .get(network)
            .or_else(|| networks.values().find(|a| !a.network_id.is_empty() && a.network_id == network))?;
        let aliases = attachment.aliases.iter().flatten().chain(attachment.dns_names.iter().flatten()).cloned();
        Some(ContainerNames::new(&self.name, aliases))
    }
}

impl RawEvent {
    /// A network event, or `None` for any other kind.
    pub(crate) fn into_network_event(self) -> Option<NetworkEvent> {
        if self.kind != "network" {
            return None;
        }
        let mut attributes = self.actor.attributes.unwrap_or_default();
        Some(NetworkEvent {
            action: self.action,
            network_id: self.actor.id,
            network_name: attributes.remove("name"),
            driver: attributes.remove("type"),
            container_id: attributes.remove("container"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_inspect_of_docker_26_is_read() {
        let json = r#"{"Name":"web","Id":"n1","Scope":"local","Driver":"loom-bridge","EnableIPv6":false,
            "IPAM":{"Driver":"loom-ipam","Options":null,"Config":[{"Subnet":"10.40.0.0/24","Gateway":"10.40.0.1",
              "AuxiliaryAddresses":{"router":"10.40.0.2"}},{"Subnet":"fd00::/64"}]},
            "Internal":true,"Containers":{
              "c1":{"Name":"app","EndpointID":"e1","MacAddress":"02:42:0a:28:00:03","IPv4Address":"10.40.0.3/24","IPv6Address":""},
              "ep-e2":{"Name":"gone","EndpointID":"e2","MacAddress":"","IPv4Address":"","IPv6Address":"fd00::5/64"}},
            "Options":{"com.docker.network.driver.mtu":"1400"},"Labels":{}}"#;
        let net = serde_json::from_str::<RawNetwork>(json).unwrap().into_model();
        assert_eq!((net.id.as_str(), net.name.as_str(), net.driver.as_str()), ("n1", "web", "loom-bridge"));
        assert!(net.internal);
        assert_eq!(net.ipam_driver, "loom-ipam");
        assert_eq!(net.pools[0].gateway, Some("10.40.0.1".parse().unwrap()));
        assert_eq!(net.pools[0].aux_addresses, vec!["10.40.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(net.pools[1].gateway, None);
        assert_eq!(net.options["com.docker.network.driver.mtu"], "1400");
        assert_eq!(
            net.endpoints[0],
            DockerEndpoint {
                endpoint_id: "e1".into(),
                container_id: "c1".into(),
                name: "app".into(),
                ipv4: Some("10.40.0.3/24".parse().unwrap()),
                ipv6: None,
                mac: Some("02:42:0a:28:00:03".into()),
            }
        );
        assert_eq!((net.endpoints[1].container_id.as_str(), net.endpoints[1].name.as_str()), ("", ""));
        assert_eq!(net.endpoints[1].ipv6, Some("fd00::5/64".parse().unwrap()));
    }

    #[test]
    fn nulls_and_absent_fields_are_empty() {
        let json = r#"{"Name":"n","Id":"x","Driver":"loom-null","IPAM":{"Driver":"default","Config":null},"Containers":null,"Options":null}"#;
        let net = serde_json::from_str::<RawNetwork>(json).unwrap().into_model();
        assert!(net.pools.is_empty() && net.endpoints.is_empty() && net.options.is_empty());
        let bare = serde_json::from_str::<RawNetwork>(r#"{"Id":"y"}"#).unwrap();
        assert_eq!(bare.ipam_driver(), "");
    }

    #[test]
    fn a_container_is_found_by_network_name_or_id() {
        let json = r#"{"Name":"/web","NetworkSettings":{"Networks":{"front":{"NetworkID":"n1",
            "Aliases":["www","web"],"DNSNames":["web","www","0123456789ab"]}}}}"#;
        let raw = || serde_json::from_str::<RawContainer>(json).unwrap();
        let expected = ContainerNames { name: "web".into(), aliases: vec!["www".into(), "0123456789ab".into()] };
        assert_eq!(raw().names_on("front"), Some(expected.clone()));
        assert_eq!(raw().names_on("n1"), Some(expected));
        assert_eq!(raw().names_on("other"), None);
        let on_20_10 = r#"{"Name":"/db","NetworkSettings":{"Networks":{"back":{"NetworkID":"n2","Aliases":null}}}}"#;
        let names = serde_json::from_str::<RawContainer>(on_20_10).unwrap().names_on("back").unwrap();
        assert_eq!(names, ContainerNames { name: "db".into(), aliases: vec![] });
    }

    #[test]
    fn a_containers_addresses_on_every_network() {
        let json = r#"{"Name":"/web","NetworkSettings":{"Networks":{
            "bridge":{"NetworkID":"b","IPAddress":"172.17.0.2","GlobalIPv6Address":""},
            "front":{"NetworkID":"n1","IPAddress":"10.9.0.2","GlobalIPv6Address":"fd00::2"},
            "none":{"NetworkID":"z","IPAddress":"","GlobalIPv6Address":""}}}}"#;
        let raw = serde_json::from_str::<RawContainer>(json).unwrap();
        let want: Vec<IpAddr> = ["172.17.0.2", "10.9.0.2", "fd00::2"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(raw.addresses(), want);
        assert!(RawContainer::default().addresses().is_empty());
    }

    #[test]
    fn events_keep_network_ones_only() {
        let create = r#"{"Type":"network","Action":"create","Actor":{"ID":"n1","Attributes":{"name":"web","type":"loom-null"}},"scope":"local","time":1}"#;
        let event = serde_json::from_str::<RawEvent>(create).unwrap().into_network_event().unwrap();
        assert_eq!(
            event,
            NetworkEvent {
                action: "create".into(),
                network_id: "n1".into(),
                network_name: Some("web".into()),
                driver: Some("loom-null".into()),
                container_id: None,
            }
        );
        let other = r#"{"Type":"container","Action":"start","Actor":{"ID":"c1"}}"#;
        assert_eq!(serde_json::from_str::<RawEvent>(other).unwrap().into_network_event(), None);
    }
}
