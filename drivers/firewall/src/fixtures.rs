//! The requests both backends' golden tests render.

use crate::model::{NetworkPolicy, PortMapping, Proto};

/// A dual-stack network on `br-loom1` (its IPv4 subnet given with host bits, as users may),
/// masqueraded.
pub(crate) fn network(internal: bool, isolate: bool, icc: bool) -> NetworkPolicy {
    NetworkPolicy {
        network_id: "0123456789abcdef".into(),
        bridge: "br-loom1".into(),
        subnets: vec!["198.51.100.1/24".parse().unwrap(), "2001:db8:1::/64".parse().unwrap()],
        masquerade: true,
        snat_source: None,
        icc,
        internal,
        isolate,
    }
}

/// `*:8080/tcp -> 198.51.100.2:80`.
pub(crate) fn port_v4() -> PortMapping {
    PortMapping {
        proto: Proto::Tcp,
        host_ip: None,
        host_port: 8080,
        container_ip: "198.51.100.2".parse().unwrap(),
        container_port: 80,
    }
}

/// `[2001:db8::1]:9/sctp -> [2001:db8:1::2]:9999`.
pub(crate) fn port_v6_on_address() -> PortMapping {
    PortMapping {
        proto: Proto::Sctp,
        host_ip: Some("2001:db8::1".parse().unwrap()),
        host_port: 9,
        container_ip: "2001:db8:1::2".parse().unwrap(),
        container_port: 9999,
    }
}
