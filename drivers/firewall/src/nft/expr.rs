//! Compiles [`super::layout`] rules to nf_tables expressions.
//!
//! Why not only `nftnl`'s typed expressions: they always load into register 1 and have no `fib`
//! expression, no map lookup with a destination register (`dreg`) and no verdict-map lookup.
//! Concatenated keys (`ip daddr . meta l4proto . th dport`) need each member in its own 32-bit
//! register (NFT_REG32_00, _01, …) and the DNAT map lookup needs a `dreg`. So each expression here
//! is built through `nftnl_sys` (libnftnl's generic expression API, the layer right under `nftnl`)
//! and implements `nftnl::expr::Expression`, so it goes into an ordinary `nftnl::Rule`.

use std::ffi::{c_void, CString};
use std::net::IpAddr;
use std::ptr::NonNull;

use ipnetwork::IpNetwork;
use nftnl::nftnl_sys::{self as sys, libc};

use super::layout::{Action, Cond, NftRule, PortMap};

/// `NFTA_FIB_F_DADDR` (linux/netfilter/nf_tables.h).
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
/// `NFT_FIB_RESULT_ADDRTYPE`.
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `IPS_DST_NAT` (linux/netfilter/nf_conntrack_common.h).
const IPS_DST_NAT: u32 = 1 << 5;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_STATE_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);

const REG_VERDICT: u32 = libc::NFT_REG_VERDICT as u32;
const REG_1: u32 = libc::NFT_REG_1 as u32;
const REG32_00: u32 = libc::NFT_REG32_00 as u32;

/// One expression: its libnftnl name and attributes.
pub(crate) struct RawExpr {
    name: &'static std::ffi::CStr,
    u32s: Vec<(u32, u32)>,
    bytes: Vec<(u32, Vec<u8>)>,
    strs: Vec<(u32, CString)>,
}

impl RawExpr {
    fn new(name: &'static std::ffi::CStr) -> Self {
        Self { name, u32s: Vec::new(), bytes: Vec::new(), strs: Vec::new() }
    }

    fn u32(mut self, attr: u32, v: u32) -> Self {
        self.u32s.push((attr, v));
        self
    }

    fn data(mut self, attr: u32, v: impl Into<Vec<u8>>) -> Self {
        self.bytes.push((attr, v.into()));
        self
    }

    fn str(mut self, attr: u32, v: &str) -> Self {
        self.strs.push((attr, CString::new(v).expect("no NUL in names")));
        self
    }
}

impl nftnl::expr::Expression for RawExpr {
    fn to_expr(&self, _rule: &nftnl::Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: libnftnl copies every attribute value; the pointers only live for the call.
        unsafe {
            let expr = NonNull::new(sys::nftnl_expr_alloc(self.name.as_ptr())).unwrap_or_else(|| std::process::abort());
            for (attr, v) in &self.u32s {
                sys::nftnl_expr_set_u32(expr.as_ptr(), *attr as u16, *v);
            }
            for (attr, v) in &self.bytes {
                sys::nftnl_expr_set(expr.as_ptr(), *attr as u16, v.as_ptr() as *const c_void, v.len() as u32);
            }
            for (attr, v) in &self.strs {
                sys::nftnl_expr_set_str(expr.as_ptr(), *attr as u16, v.as_ptr());
            }
            expr
        }
    }
}

fn meta(key: i32, dreg: u32) -> RawExpr {
    RawExpr::new(c"meta").u32(sys::NFTNL_EXPR_META_KEY, key as u32).u32(sys::NFTNL_EXPR_META_DREG, dreg)
}

fn meta_set(key: i32, sreg: u32) -> RawExpr {
    RawExpr::new(c"meta").u32(sys::NFTNL_EXPR_META_KEY, key as u32).u32(sys::NFTNL_EXPR_META_SREG, sreg)
}

fn payload(base: i32, offset: u32, len: u32, dreg: u32) -> RawExpr {
    RawExpr::new(c"payload")
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len)
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, dreg)
}

fn cmp(eq: bool, sreg: u32, data: impl Into<Vec<u8>>) -> RawExpr {
    let op = if eq { libc::NFT_CMP_EQ } else { libc::NFT_CMP_NEQ };
    RawExpr::new(c"cmp")
        .u32(sys::NFTNL_EXPR_CMP_OP, op as u32)
        .u32(sys::NFTNL_EXPR_CMP_SREG, sreg)
        .data(sys::NFTNL_EXPR_CMP_DATA, data)
}

/// `reg = (reg & mask) ^ xor` over `mask.len()` bytes.
fn bitwise(reg: u32, mask: Vec<u8>, xor: Vec<u8>) -> RawExpr {
    RawExpr::new(c"bitwise")
        .u32(sys::NFTNL_EXPR_BITWISE_SREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_DREG, reg)
        .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
        .data(sys::NFTNL_EXPR_BITWISE_MASK, mask)
        .data(sys::NFTNL_EXPR_BITWISE_XOR, xor)
}

fn ct(key: i32, dreg: u32) -> RawExpr {
    RawExpr::new(c"ct").u32(sys::NFTNL_EXPR_CT_KEY, key as u32).u32(sys::NFTNL_EXPR_CT_DREG, dreg)
}

fn lookup(set: &str, sreg: u32, dreg: Option<u32>) -> RawExpr {
    let e = RawExpr::new(c"lookup").str(sys::NFTNL_EXPR_LOOKUP_SET, set).u32(sys::NFTNL_EXPR_LOOKUP_SREG, sreg);
    match dreg {
        Some(d) => e.u32(sys::NFTNL_EXPR_LOOKUP_DREG, d),
        None => e,
    }
}

fn verdict(code: i32, chain: Option<&str>) -> RawExpr {
    let e = RawExpr::new(c"immediate")
        .u32(sys::NFTNL_EXPR_IMM_DREG, REG_VERDICT)
        .u32(sys::NFTNL_EXPR_IMM_VERDICT, code as u32);
    match chain {
        Some(c) => e.str(sys::NFTNL_EXPR_IMM_CHAIN, c),
        None => e,
    }
}

fn nfproto(v6: bool) -> [RawExpr; 2] {
    let p = if v6 { libc::NFPROTO_IPV6 } else { libc::NFPROTO_IPV4 } as u8;
    [meta(libc::NFT_META_NFPROTO, REG_1), cmp(true, REG_1, vec![p])]
}

/// An interface name compared as `nft` does: the name and its NUL.
fn ifname_bytes(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

fn cond(c: &Cond) -> Vec<RawExpr> {
    use libc::{NFT_META_IIFNAME as IIF, NFT_META_OIFNAME as OIF};
    match c {
        Cond::Iif(n) => vec![meta(IIF, REG_1), cmp(true, REG_1, ifname_bytes(n))],
        Cond::Oif(n) => vec![meta(OIF, REG_1), cmp(true, REG_1, ifname_bytes(n))],
        Cond::OifNot(n) => vec![meta(OIF, REG_1), cmp(false, REG_1, ifname_bytes(n))],
        Cond::OifPrefix(p) => vec![meta(OIF, REG_1), cmp(true, REG_1, p.as_bytes())],
        Cond::IifIn(set) => vec![meta(IIF, REG_1), lookup(set, REG_1, None)],
        Cond::OifIn(set) => vec![meta(OIF, REG_1), lookup(set, REG_1, None)],
        Cond::CtReply => vec![
            ct(libc::NFT_CT_STATE, REG_1),
            bitwise(REG_1, CT_STATE_ESTABLISHED_RELATED.to_ne_bytes().to_vec(), vec![0; 4]),
            cmp(false, REG_1, vec![0; 4]),
        ],
        Cond::CtDnat => vec![
            ct(libc::NFT_CT_STATUS, REG_1),
            bitwise(REG_1, IPS_DST_NAT.to_ne_bytes().to_vec(), vec![0; 4]),
            cmp(false, REG_1, vec![0; 4]),
        ],
        Cond::Saddr(net) => addr_in(net, true),
        Cond::Daddr(net) => addr_in(net, false),
        Cond::IifNot(n) => vec![meta(IIF, REG_1), cmp(false, REG_1, ifname_bytes(n))],
        Cond::UdpDport(port) => vec![
            meta(libc::NFT_META_L4PROTO, REG_1),
            cmp(true, REG_1, vec![libc::IPPROTO_UDP as u8]),
            payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG_1),
            cmp(true, REG_1, port.to_be_bytes().to_vec()),
        ],
        Cond::SaddrNotIn { set, v6 } => {
            let (offset, len) = if *v6 { (8, 16) } else { (12, 4) };
            let mut out: Vec<RawExpr> = nfproto(*v6).into();
            out.push(payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len, REG_1));
            out.push(lookup(set, REG_1, None).u32(sys::NFTNL_EXPR_LOOKUP_FLAGS, libc::NFT_LOOKUP_F_INV as u32));
            out
        }
        Cond::FibDaddrLocal => vec![
            RawExpr::new(c"fib")
                .u32(sys::NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR)
                .u32(sys::NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE)
                .u32(sys::NFTNL_EXPR_FIB_DREG, REG_1),
            cmp(true, REG_1, u32::from(libc::RTN_LOCAL).to_ne_bytes().to_vec()),
        ],
    }
}

/// `ip saddr <net>` (`source`) or `ip daddr <net>`, IPv4 or IPv6 by the network.
fn addr_in(net: &IpNetwork, source: bool) -> Vec<RawExpr> {
    let (v6, offset, len) = match (net, source) {
        (IpNetwork::V4(_), true) => (false, 12, 4),
        (IpNetwork::V4(_), false) => (false, 16, 4),
        (IpNetwork::V6(_), true) => (true, 8, 16),
        (IpNetwork::V6(_), false) => (true, 24, 16),
    };
    let mut out: Vec<RawExpr> = nfproto(v6).into();
    out.push(payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len, REG_1));
    let full = u32::from(net.prefix()) == len * 8;
    if !full {
        out.push(bitwise(REG_1, ip_bytes(net.mask()), vec![0; len as usize]));
    }
    out.push(cmp(true, REG_1, ip_bytes(net.network())));
    out
}

/// `dnat to <key> map @map`: the key members in consecutive 32-bit registers from NFT_REG32_00,
/// looked up into register 1 (address, then port in the next free 32-bit register).
fn dnat(m: &PortMap) -> Vec<RawExpr> {
    let mut out: Vec<RawExpr> = nfproto(m.v6).into();
    let mut reg = REG32_00;
    if m.by_addr {
        let (offset, len) = if m.v6 { (24, 16) } else { (16, 4) };
        out.push(payload(libc::NFT_PAYLOAD_NETWORK_HEADER, offset, len, reg));
        reg += len / 4;
    }
    out.push(meta(libc::NFT_META_L4PROTO, reg));
    out.push(payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg + 1));
    out.push(lookup(m.name, REG32_00, Some(REG_1)));
    let port_reg = REG32_00 + if m.v6 { 4 } else { 1 };
    let family = if m.v6 { libc::NFPROTO_IPV6 } else { libc::NFPROTO_IPV4 };
    out.push(
        RawExpr::new(c"nat")
            .u32(sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_DNAT as u32)
            .u32(sys::NFTNL_EXPR_NAT_FAMILY, family as u32)
            .u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, REG_1)
            .u32(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, port_reg),
    );
    out
}

fn action(a: &Action) -> Vec<RawExpr> {
    match a {
        Action::MarkAccept => vec![
            meta(libc::NFT_META_MARK, REG_1),
            bitwise(
                REG_1,
                (!crate::compat::FORWARD_MARK).to_ne_bytes().to_vec(),
                crate::compat::FORWARD_MARK.to_ne_bytes().to_vec(),
            ),
            meta_set(libc::NFT_META_MARK, REG_1),
            verdict(libc::NF_ACCEPT, None),
        ],
        Action::Drop => vec![verdict(libc::NF_DROP, None)],
        Action::Return => vec![verdict(libc::NFT_RETURN, None)],
        Action::Jump(chain) => vec![verdict(libc::NFT_JUMP, Some(chain))],
        Action::IifVmap(map) => vec![meta(libc::NFT_META_IIFNAME, REG_1), lookup(map, REG_1, Some(REG_VERDICT))],
        Action::OifVmap(map) => vec![meta(libc::NFT_META_OIFNAME, REG_1), lookup(map, REG_1, Some(REG_VERDICT))],
        Action::Masquerade => vec![RawExpr::new(c"masq")],
        Action::Snat(ip) => {
            let family = if ip.is_ipv6() { libc::NFPROTO_IPV6 } else { libc::NFPROTO_IPV4 };
            vec![
                RawExpr::new(c"immediate")
                    .u32(sys::NFTNL_EXPR_IMM_DREG, REG_1)
                    .data(sys::NFTNL_EXPR_IMM_DATA, ip_bytes(*ip)),
                RawExpr::new(c"nat")
                    .u32(sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_SNAT as u32)
                    .u32(sys::NFTNL_EXPR_NAT_FAMILY, family as u32)
                    .u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, REG_1),
            ]
        }
        Action::Dnat(m) => dnat(m),
    }
}

/// The expressions of a rule, in order.
pub(crate) fn compile(rule: &NftRule) -> Vec<RawExpr> {
    let mut out: Vec<RawExpr> = rule.conds.iter().flat_map(cond).collect();
    out.extend(action(&rule.action));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::layout::PORT_MAPS;

    fn names(rule: &NftRule) -> Vec<&'static str> {
        compile(rule).iter().map(|e| e.name.to_str().unwrap()).collect()
    }

    #[test]
    fn dnat_uses_32bit_registers_for_the_concatenation() {
        let v6_by_addr = compile(&NftRule { conds: vec![], action: Action::Dnat(PORT_MAPS[2]) });
        let dreg = |e: &RawExpr| {
            let attr = match e.name.to_str().unwrap() {
                "meta" => sys::NFTNL_EXPR_META_DREG,
                "payload" => sys::NFTNL_EXPR_PAYLOAD_DREG,
                _ => return None,
            };
            e.u32s.iter().find(|(a, _)| *a == attr).map(|(_, r)| *r)
        };
        let regs: Vec<u32> = v6_by_addr.iter().filter_map(dreg).collect();
        // nfproto → reg 1; ip6 daddr → reg32 00..03; l4proto → 04; dport → 05.
        assert_eq!(regs, [REG_1, 8, 12, 13]);
        let nat = v6_by_addr.last().unwrap();
        assert!(nat.u32s.contains(&(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, 12)));
        let v4 = compile(&NftRule { conds: vec![], action: Action::Dnat(PORT_MAPS[1]) });
        assert!(v4.last().unwrap().u32s.contains(&(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, 9)));
    }

    #[test]
    fn the_udp_port_is_compared_before_anything_costly() {
        let r = NftRule {
            conds: vec![Cond::UdpDport(4789), Cond::FibDaddrLocal, Cond::SaddrNotIn { set: "vxlan_peers4", v6: false }],
            action: Action::Drop,
        };
        assert_eq!(
            names(&r),
            ["meta", "cmp", "payload", "cmp", "fib", "cmp", "meta", "cmp", "payload", "lookup", "immediate"]
        );
        let lookup = compile(&r).into_iter().find(|e| e.name.to_str().unwrap() == "lookup").unwrap();
        assert!(lookup.u32s.contains(&(sys::NFTNL_EXPR_LOOKUP_FLAGS, 1)), "an inverted lookup");
        let port = compile(&r).into_iter().nth(3).unwrap();
        assert_eq!(port.bytes, [(sys::NFTNL_EXPR_CMP_DATA, vec![0x12, 0xb5])]);
    }

    #[test]
    fn full_prefixes_skip_the_mask() {
        let host = NftRule { conds: vec![Cond::Saddr("192.0.2.1/32".parse().unwrap())], action: Action::Masquerade };
        assert_eq!(names(&host), ["meta", "cmp", "payload", "cmp", "masq"]);
        let net = NftRule { conds: vec![Cond::Saddr("192.0.2.0/24".parse().unwrap())], action: Action::Masquerade };
        assert_eq!(names(&net), ["meta", "cmp", "payload", "bitwise", "cmp", "masq"]);
    }
}
