//! Default pools: what a network gets when no `--subnet` is given.

use std::fmt;
use std::str::FromStr;

use super::cidr::{Family, Subnet};

/// Carve `base` into subnets of `/size`, like Docker's `--default-address-pool base=...,size=...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultPool {
    pub base: Subnet,
    pub size: u8,
}

impl DefaultPool {
    pub fn new(base: Subnet, size: u8) -> Result<Self, String> {
        if size < base.prefix() || size > base.family().bits() {
            return Err(format!(
                "default pool {base}: size /{size} must be between /{} and /{}",
                base.prefix(),
                base.family().bits()
            ));
        }
        Ok(Self { base, size })
    }

    fn step(&self) -> u128 {
        1u128 << u32::from(self.base.family().bits() - self.size)
    }
}

impl FromStr for DefaultPool {
    type Err = String;

    /// `base=172.17.0.0/16,size=16`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut base = None;
        let mut size = None;
        for part in s.split(',') {
            match part.trim().split_once('=') {
                Some(("base", v)) => base = Some(Subnet::parse(v)?),
                Some(("size", v)) => {
                    size = Some(v.trim().parse::<u8>().map_err(|_| format!("default pool {s:?}: bad size {v:?}"))?)
                }
                _ => return Err(format!("default pool {s:?}: expected base=CIDR,size=N")),
            }
        }
        match (base, size) {
            (Some(b), Some(n)) => DefaultPool::new(b, n),
            _ => Err(format!("default pool {s:?}: expected base=CIDR,size=N")),
        }
    }
}

impl fmt::Display for DefaultPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "base={},size={}", self.base, self.size)
    }
}

/// Docker's local defaults: 172.17.0.0/16 to 172.31.0.0/16, then 192.168.0.0/16 in /20s.
pub fn docker_local() -> Vec<DefaultPool> {
    let mut pools: Vec<DefaultPool> =
        (17..=31).map(|octet| DefaultPool { base: Subnet::new([172, octet, 0, 0].into(), 16), size: 16 }).collect();
    pools.push(DefaultPool { base: Subnet::new([192, 168, 0, 0].into(), 16), size: 20 });
    pools
}

/// Docker's global default: 10.0.0.0/8 in /24s.
pub fn docker_global() -> Vec<DefaultPool> {
    vec![DefaultPool { base: Subnet::new([10, 0, 0, 0].into(), 8), size: 24 }]
}

/// The first subnet carved from `defaults` (in order, `family` only) that overlaps nothing in `in_use`.
pub fn pick(defaults: &[DefaultPool], family: Family, in_use: &[Subnet]) -> Option<Subnet> {
    let taken = merged(in_use, family);
    let bits = family.bits();
    let sane = |p: &&DefaultPool| p.base.family() == family && p.size >= p.base.prefix().max(1) && p.size <= bits;
    for pool in defaults.iter().filter(sane) {
        let step = pool.step();
        let mut candidate = pool.base.first();
        // `taken` is sorted and disjoint, so one forward sweep finds every overlap.
        let mut i = taken.partition_point(|(_, last)| *last < candidate);
        loop {
            let cand_last = candidate + (step - 1);
            if cand_last > pool.base.last() {
                break;
            }
            while i < taken.len() && taken[i].1 < candidate {
                i += 1;
            }
            match taken.get(i) {
                Some(&(first, last)) if first <= cand_last => {
                    // Jump to the first aligned candidate after the blocking interval.
                    let Some(next) = last.checked_add(1) else { break };
                    let aligned = next.div_ceil(step).checked_mul(step);
                    match aligned {
                        Some(a) if a > candidate => candidate = a,
                        _ => break,
                    }
                }
                _ => return Some(Subnet::from_bounds(family, candidate, pool.size)),
            }
        }
    }
    None
}

/// `in_use` of one family as sorted, non-overlapping intervals.
fn merged(in_use: &[Subnet], family: Family) -> Vec<(u128, u128)> {
    let mut spans: Vec<(u128, u128)> =
        in_use.iter().filter(|s| s.family() == family).map(|s| (s.first(), s.last())).collect();
    spans.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
    for (first, last) in spans {
        match out.last_mut() {
            Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Subnet {
        Subnet::parse(t).unwrap()
    }

    #[test]
    fn docker_sequence() {
        let local = docker_local();
        assert_eq!(local.len(), 16);
        let mut in_use = Vec::new();
        let mut got = Vec::new();
        while let Some(next) = pick(&local, Family::V4, &in_use) {
            got.push(next.to_string());
            in_use.push(next);
        }
        assert_eq!(got.len(), 15 + 16);
        assert_eq!(got[0], "172.17.0.0/16");
        assert_eq!(got[14], "172.31.0.0/16");
        assert_eq!(got[15], "192.168.0.0/20");
        assert_eq!(got[30], "192.168.240.0/20");
    }

    #[test]
    fn skips_overlaps_of_any_shape() {
        let local = docker_local();
        assert_eq!(pick(&local, Family::V4, &[s("172.17.5.0/24")]).unwrap().to_string(), "172.18.0.0/16");
        assert_eq!(pick(&local, Family::V4, &[s("172.16.0.0/12")]).unwrap().to_string(), "192.168.0.0/20");
        let in_use = [s("192.168.0.0/24"), s("192.168.16.0/20"), s("172.16.0.0/12")];
        assert_eq!(pick(&local, Family::V4, &in_use).unwrap().to_string(), "192.168.32.0/20");
        assert_eq!(pick(&local, Family::V4, &[s("0.0.0.0/1"), s("128.0.0.0/1")]), None);
        // Other families and unrelated pools don't matter.
        assert_eq!(pick(&local, Family::V4, &[s("fd00::/8")]).unwrap().to_string(), "172.17.0.0/16");
        assert_eq!(pick(&local, Family::V6, &[]), None);
    }

    #[test]
    fn global_is_fast_with_many_pools() {
        let global = docker_global();
        let in_use: Vec<Subnet> =
            (0..20_000u32).map(|i| Subnet::from_bounds(Family::V4, (10 << 24 | i << 8) as u128, 24)).collect();
        let started = std::time::Instant::now();
        assert_eq!(pick(&global, Family::V4, &in_use).unwrap().to_string(), "10.78.32.0/24");
        assert!(started.elapsed().as_millis() < 500);
    }

    #[test]
    fn v6_defaults() {
        let pools = [DefaultPool::new(s("fd00::/48"), 64).unwrap()];
        assert_eq!(pick(&pools, Family::V6, &[]).unwrap().to_string(), "fd00::/64");
        assert_eq!(pick(&pools, Family::V6, &[s("fd00::/63")]).unwrap().to_string(), "fd00:0:0:2::/64");
        let top = [DefaultPool::new(s("ffff::/16"), 17).unwrap()];
        assert_eq!(pick(&top, Family::V6, &[s("ffff::/17")]).unwrap().to_string(), "ffff:8000::/17");
        assert_eq!(pick(&top, Family::V6, &[s("ffff::/16")]), None);
    }

    #[test]
    fn parse_default_pools() {
        let p: DefaultPool = "base=10.10.0.0/16,size=24".parse().unwrap();
        assert_eq!(p.to_string(), "base=10.10.0.0/16,size=24");
        for bad in ["base=10.0.0.0/16", "size=24", "base=10.0.0.0/16,size=8", "base=10.0.0.0/16,size=33", "x=1"] {
            assert!(bad.parse::<DefaultPool>().is_err(), "{bad}");
        }
    }
}
