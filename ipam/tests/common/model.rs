//! Random request/release sequences from two hosts, checked step by step against a model of what
//! the answers must be; afterwards the store must hold exactly what the model holds (nothing
//! duplicated, nothing leaked), and once everything is released, nothing at all.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use netloom_ipam::alloc::cidr::{ip_to_u128, u128_to_ip, Subnet};
use netloom_ipam::store::Store;
use netloom_ipam::{Ipam, IpamConfig, IpamError};
use proptest::prelude::*;

use super::scenarios::{gateway, none};

/// Small pools so exhaustion happens often; one IPv6.
const SUBNETS: [(&str, &str, bool); 3] = [
    ("10.9.0.0/29", "10.9.0.0/30", false),
    ("10.9.1.0/28", "10.9.1.8/29", false),
    ("fd00:9::/125", "fd00:9::4/126", true),
];
const HOSTS: usize = 2;

#[derive(Debug, Clone)]
pub enum Action {
    RequestPool { host: usize, subnet: usize, ranged: bool },
    ReleasePool { host: usize, subnet: usize, ranged: bool },
    Gateway { host: usize, subnet: usize },
    Next { host: usize, subnet: usize, ranged: bool },
    Specific { host: usize, subnet: usize, offset: u8 },
    Release { host: usize, subnet: usize, pick: u8 },
    AllocateVni { host: usize, owner: u8 },
    ReleaseVni { host: usize, pick: u8 },
}

pub fn actions(max: usize) -> impl Strategy<Value = Vec<Action>> {
    let h = 0..HOSTS;
    let s = 0..SUBNETS.len();
    let action = prop_oneof![
        3 => (h.clone(), s.clone(), any::<bool>()).prop_map(|(host, subnet, ranged)| Action::RequestPool { host, subnet, ranged }),
        1 => (h.clone(), s.clone(), any::<bool>()).prop_map(|(host, subnet, ranged)| Action::ReleasePool { host, subnet, ranged }),
        1 => (h.clone(), s.clone()).prop_map(|(host, subnet)| Action::Gateway { host, subnet }),
        6 => (h.clone(), s.clone(), any::<bool>()).prop_map(|(host, subnet, ranged)| Action::Next { host, subnet, ranged }),
        2 => (h.clone(), s.clone(), 0u8..16).prop_map(|(host, subnet, offset)| Action::Specific { host, subnet, offset }),
        4 => (h.clone(), s.clone(), any::<u8>()).prop_map(|(host, subnet, pick)| Action::Release { host, subnet, pick }),
        1 => (h.clone(), 0u8..4).prop_map(|(host, owner)| Action::AllocateVni { host, owner }),
        1 => (h, any::<u8>()).prop_map(|(host, pick)| Action::ReleaseVni { host, pick }),
    ];
    proptest::collection::vec(action, 1..max)
}

#[derive(Default)]
struct Model {
    refs: BTreeMap<(usize, usize), u32>,
    gateway: BTreeMap<usize, IpAddr>,
    /// Per subnet: address → the host holding it.
    held: BTreeMap<usize, BTreeMap<IpAddr, usize>>,
    vnis: BTreeMap<String, u32>,
}

impl Model {
    fn exists(&self, subnet: usize) -> bool {
        self.refs.iter().any(|((_, s), n)| *s == subnet && *n > 0)
    }

    fn taken(&self, subnet: usize) -> BTreeSet<IpAddr> {
        let mut t: BTreeSet<IpAddr> = self.held.get(&subnet).map(|h| h.keys().copied().collect()).unwrap_or_default();
        t.extend(self.gateway.get(&subnet));
        t
    }
}

fn subnet(i: usize) -> Subnet {
    Subnet::parse(SUBNETS[i].0).unwrap()
}

fn pool_id(i: usize, ranged: bool) -> String {
    if ranged {
        format!("LocalDefault/{}/{}", SUBNETS[i].0, SUBNETS[i].1)
    } else {
        format!("LocalDefault/{}", SUBNETS[i].0)
    }
}

fn bounds(i: usize, ranged: bool) -> (u128, u128) {
    let (mut lo, mut hi) = subnet(i).usable();
    if ranged {
        let r = Subnet::parse(SUBNETS[i].1).unwrap();
        lo = lo.max(r.first());
        hi = hi.min(r.last());
    }
    (lo, hi)
}

fn not_found(r: Result<impl std::fmt::Debug, IpamError>) {
    assert!(matches!(r, Err(IpamError::NotFound(_))), "expected unknown pool, got {r:?}");
}

pub async fn run(store: Arc<dyn Store>, actions: Vec<Action>) {
    let mut hosts = Vec::new();
    for h in 0..HOSTS {
        hosts.push(Ipam::new(store.clone(), &format!("host{h}"), IpamConfig::default()).await.unwrap());
    }
    let mut m = Model::default();
    for action in actions {
        step(&hosts, &mut m, action).await;
    }
    check_store(&hosts[0], &m).await;
    release_everything(&hosts, &mut m).await;
    let left: Vec<String> = store.list("ipam/").await.unwrap().into_iter().map(|kv| kv.key).collect();
    assert!(left.is_empty(), "after releasing everything the store still holds {left:?}");
}

async fn step(hosts: &[Ipam], m: &mut Model, action: Action) {
    match action {
        Action::RequestPool { host, subnet: s, ranged } => {
            let range = if ranged { SUBNETS[s].1 } else { "" };
            let got =
                hosts[host].request_pool("LocalDefault", SUBNETS[s].0, range, &none(), SUBNETS[s].2).await.unwrap();
            assert_eq!(got.pool_id, pool_id(s, ranged));
            *m.refs.entry((host, s)).or_default() += 1;
        }
        Action::ReleasePool { host, subnet: s, ranged } => {
            hosts[host].release_pool(&pool_id(s, ranged)).await.unwrap();
            if let Some(n) = m.refs.get_mut(&(host, s)) {
                *n -= 1;
                if *n == 0 {
                    m.refs.remove(&(host, s));
                }
            }
            if !m.exists(s) {
                m.gateway.remove(&s);
                m.held.remove(&s);
            }
        }
        Action::Gateway { host, subnet: s } => {
            let got = hosts[host].request_address(&pool_id(s, false), "", &gateway()).await;
            if !m.exists(s) {
                return not_found(got);
            }
            let (lo, hi) = subnet(s).usable();
            let taken = m.taken(s);
            let free = (lo..=hi).filter(|v| !taken.contains(&u128_to_ip(subnet(s).family(), *v))).count();
            if !m.gateway.contains_key(&s) && free == 0 {
                return assert!(matches!(got, Err(IpamError::Exhausted(_))), "{got:?}");
            }
            let ip = got.unwrap().ip;
            match m.gateway.get(&s) {
                Some(gw) => assert_eq!(ip, *gw, "every gateway request gets the same gateway"),
                None => {
                    assert!(!m.taken(s).contains(&ip), "gateway {ip} was already taken");
                    m.gateway.insert(s, ip);
                }
            }
        }
        Action::Next { host, subnet: s, ranged } => {
            let got = hosts[host].request_address(&pool_id(s, ranged), "", &none()).await;
            if !m.exists(s) {
                return not_found(got);
            }
            let (lo, hi) = bounds(s, ranged);
            let taken = m.taken(s);
            let free = (lo..=hi).filter(|v| !taken.contains(&u128_to_ip(subnet(s).family(), *v))).count();
            match got {
                Ok(grant) => {
                    let v = ip_to_u128(grant.ip);
                    assert!(v >= lo && v <= hi, "{} outside {lo}..={hi}", grant.ip);
                    assert!(!taken.contains(&grant.ip), "duplicate address {}", grant.ip);
                    assert_eq!(grant.prefix, subnet(s).prefix());
                    m.held.entry(s).or_default().insert(grant.ip, host);
                }
                Err(IpamError::Exhausted(_)) => assert_eq!(free, 0, "exhausted with {free} free"),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        Action::Specific { host, subnet: s, offset } => {
            let net = subnet(s);
            let size = net.last() - net.first() + 1;
            let ip = u128_to_ip(net.family(), net.first() + offset as u128 % size);
            let got = hosts[host].request_address(&pool_id(s, false), &ip.to_string(), &none()).await;
            if net.reserved_reason(ip).is_some() {
                assert!(matches!(got, Err(IpamError::Invalid(_))), "{got:?}");
            } else if !m.exists(s) {
                not_found(got);
            } else if m.taken(s).contains(&ip) {
                assert!(matches!(got, Err(IpamError::InUse(_))), "{ip} is taken: {got:?}");
            } else {
                assert_eq!(got.unwrap().ip, ip);
                m.held.entry(s).or_default().insert(ip, host);
            }
        }
        Action::Release { host, subnet: s, pick } => {
            let net = subnet(s);
            let taken: Vec<IpAddr> = m.taken(s).into_iter().collect();
            let ip = match taken.len() {
                0 => u128_to_ip(net.family(), net.usable().0 + pick as u128 % 4),
                n => taken[pick as usize % n],
            };
            let got = hosts[host].release_address(&pool_id(s, false), &ip.to_string()).await;
            if !m.exists(s) {
                return not_found(got);
            }
            let holder = m.held.get(&s).and_then(|h| h.get(&ip)).copied();
            if holder.is_some_and(|h| h != host) {
                return assert!(matches!(got, Err(IpamError::NotHolder(_))), "{ip} is another host's: {got:?}");
            }
            got.unwrap();
            if let Some(held) = m.held.get_mut(&s) {
                held.remove(&ip);
            }
        }
        Action::AllocateVni { host, owner } => {
            let owner = format!("net{owner}");
            let vni = hosts[host].allocate_vni(&owner).await.unwrap();
            match m.vnis.get(&owner) {
                Some(v) => assert_eq!(*v, vni),
                None => {
                    assert!(!m.vnis.values().any(|v| *v == vni), "VNI {vni} handed out twice");
                    m.vnis.insert(owner, vni);
                }
            }
        }
        Action::ReleaseVni { host, pick } => {
            let held: Vec<(String, u32)> = m.vnis.iter().map(|(o, v)| (o.clone(), *v)).collect();
            let (owner, vni) = match held.len() {
                0 => ("net-none".to_string(), 4096 + pick as u32),
                n => held[pick as usize % n].clone(),
            };
            hosts[host].release_vni_of(vni, &owner).await.unwrap();
            m.vnis.retain(|_, v| *v != vni);
        }
    }
}

async fn check_store(ipam: &Ipam, m: &Model) {
    assert_eq!(ipam.audit().await.unwrap(), Vec::<String>::new());
    let pools: BTreeMap<String, BTreeMap<String, u32>> =
        ipam.pools().await.unwrap().into_iter().map(|p| (p.pool_id, p.hosts)).collect();
    for s in 0..SUBNETS.len() {
        let id = pool_id(s, false);
        if !m.exists(s) {
            assert!(!pools.contains_key(&id), "pool {id} should be gone");
            continue;
        }
        let expected: BTreeMap<String, u32> =
            m.refs.iter().filter(|((_, sub), _)| *sub == s).map(|((h, _), n)| (format!("host{h}"), *n)).collect();
        assert_eq!(pools[&id], expected, "references of {id}");
        let stored: BTreeSet<IpAddr> = ipam.addresses(&id).await.unwrap().into_iter().map(|a| a.ip).collect();
        assert_eq!(stored, m.taken(s), "addresses of {id}");
    }
    let vnis: BTreeMap<String, u32> = ipam.vnis().await.unwrap().into_iter().map(|v| (v.owner.owner, v.vni)).collect();
    assert_eq!(vnis, m.vnis);
}

async fn release_everything(hosts: &[Ipam], m: &mut Model) {
    for ((host, s), n) in std::mem::take(&mut m.refs) {
        for _ in 0..n {
            hosts[host].release_pool(&pool_id(s, false)).await.unwrap();
        }
    }
    for (owner, vni) in std::mem::take(&mut m.vnis) {
        hosts[0].release_vni_of(vni, &owner).await.unwrap();
    }
}
