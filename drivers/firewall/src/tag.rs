//! Owner tags and the comments that name owners in the kernel.
//!
//! A tag is 12 lowercase hex characters: the first 12 characters of a Docker id (which is hex),
//! or, for any other id, 12 hex digits of its FNV-1a hash. Tags name nftables chains and go into
//! set-element comments, which are too short for two full ids.

/// The short owner tag of a network or endpoint id.
pub fn owner_tag(id: &str) -> String {
    let prefix = id.get(..12).unwrap_or("");
    if prefix.len() == 12 && prefix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return prefix.to_string();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

/// Comment on the iptables skeleton (jumps, Docker-bridge isolation).
pub(crate) const IPT_BASE: &str = "netloom:base";
/// Comment on the compat rule in iptables' FORWARD (nftables backend).
pub(crate) const IPT_COMPAT: &str = "netloom:compat";
/// Comment on the VXLAN guard's iptables rules.
pub(crate) const IPT_VXLAN: &str = "netloom:vxlan";

/// Comment on an iptables rule of a network.
pub(crate) fn ipt_network_comment(network_id: &str) -> String {
    format!("netloom:net={network_id}")
}

/// Comment on an iptables published-port rule.
pub(crate) fn ipt_port_comment(network_id: &str, endpoint_id: &str) -> String {
    format!("netloom:net={network_id},ep={}", owner_tag(endpoint_id))
}

/// What an iptables comment says about its owner.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IptOwner<'a> {
    Base,
    Compat,
    Vxlan,
    Network(&'a str),
    Port { network_id: &'a str, endpoint_tag: &'a str },
}

pub(crate) fn parse_ipt_comment(comment: &str) -> Option<IptOwner<'_>> {
    let rest = comment.strip_prefix("netloom:")?;
    match rest {
        "base" => return Some(IptOwner::Base),
        "compat" => return Some(IptOwner::Compat),
        "vxlan" => return Some(IptOwner::Vxlan),
        _ => {}
    }
    let rest = rest.strip_prefix("net=")?;
    match rest.split_once(",ep=") {
        Some((network_id, endpoint_tag)) => Some(IptOwner::Port { network_id, endpoint_tag }),
        None => Some(IptOwner::Network(rest)),
    }
}

/// Comment on an nftables port-map element.
pub(crate) fn nft_elem_comment(network_id: &str, endpoint_id: &str) -> String {
    format!("netloom net={} ep={}", owner_tag(network_id), owner_tag(endpoint_id))
}

/// (network tag, endpoint tag) from an nftables element comment.
pub(crate) fn parse_nft_elem_comment(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.strip_prefix("netloom net=")?;
    let (net, ep) = rest.split_once(" ep=")?;
    Some((net, ep))
}

/// Comment on a network's nftables chains: the full network id.
pub(crate) fn nft_chain_comment(network_id: &str) -> String {
    format!("netloom net={network_id}")
}

pub(crate) fn parse_nft_chain_comment(comment: &str) -> Option<&str> {
    comment.strip_prefix("netloom net=")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_ids_keep_their_prefix() {
        let id = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
        assert_eq!(owner_tag(id), "3f2a9c1b7d4e");
    }

    #[test]
    fn other_ids_are_hashed_stably() {
        let a = owner_tag("my-network");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, owner_tag("my-network"));
        assert_ne!(a, owner_tag("my-network2"));
        // Upper-case hex is not a Docker id: hashed, so tags stay lower-case.
        assert_ne!(owner_tag("ABCDEF0123456789"), "ABCDEF012345");
        assert_eq!(owner_tag("short"), owner_tag("short"));
    }

    #[test]
    fn ipt_comments_round_trip() {
        let c = ipt_network_comment("abc123");
        assert_eq!(c, "netloom:net=abc123");
        assert_eq!(parse_ipt_comment(&c), Some(IptOwner::Network("abc123")));
        let c = ipt_port_comment("abc123", "0123456789abcdef");
        assert_eq!(c, "netloom:net=abc123,ep=0123456789ab");
        assert_eq!(parse_ipt_comment(&c), Some(IptOwner::Port { network_id: "abc123", endpoint_tag: "0123456789ab" }));
        assert_eq!(parse_ipt_comment("netloom:base"), Some(IptOwner::Base));
        assert_eq!(parse_ipt_comment("netloom:compat"), Some(IptOwner::Compat));
        assert_eq!(parse_ipt_comment("netloom:vxlan"), Some(IptOwner::Vxlan));
        assert_eq!(parse_ipt_comment("docker"), None);
    }

    #[test]
    fn nft_comments_round_trip() {
        let c = nft_elem_comment("0123456789abcdef", "fedcba9876543210");
        assert_eq!(c, "netloom net=0123456789ab ep=fedcba987654");
        assert_eq!(parse_nft_elem_comment(&c), Some(("0123456789ab", "fedcba987654")));
        assert_eq!(parse_nft_chain_comment(&nft_chain_comment("n1")), Some("n1"));
    }
}
