//! Consistency check: every pool's bitmap and owner records must agree, every pool must be in its
//! space's index. Used by tests after random operation sequences, and useful to operators.

use std::collections::BTreeSet;

use super::bitspace::BitSpace;
use super::cidr::{ip_to_u128, Subnet};
use super::keys;
use super::records::{self, PoolRecord, SpaceIndex};
use crate::error::IpamResult;
use crate::ipam::Ipam;

impl Ipam {
    /// Describes every inconsistency found; empty when the data is sound.
    pub async fn audit(&self) -> IpamResult<Vec<String>> {
        let mut problems = Vec::new();
        for kv in self.store.list(keys::POOLS).await? {
            let rec: PoolRecord = records::decode(&kv)?;
            let Ok(subnet) = Subnet::parse(&rec.subnet) else {
                problems.push(format!("{}: bad subnet {:?}", kv.key, rec.subnet));
                continue;
            };
            if rec.hosts.is_empty() || rec.hosts.values().any(|c| *c == 0) {
                problems.push(format!("pool {subnet}: bad host references {:?}", rec.hosts));
            }
            let index: SpaceIndex = match self.store.get(&keys::space_index(&rec.space)).await? {
                Some(kv) => records::decode(&kv)?,
                None => SpaceIndex::default(),
            };
            if !index.pools.contains(&rec.subnet) {
                problems.push(format!("pool {subnet} is missing from the index of space {}", rec.space));
            }
            let bits = BitSpace::new(self.store.as_ref(), keys::addr_bits(&rec.space, &subnet), subnet.first());
            let taken: BTreeSet<u128> = bits.taken().await?.into_iter().collect();
            let pool_id = format!("{}/{subnet}", rec.space);
            let owned: BTreeSet<u128> = self.addresses(&pool_id).await?.iter().map(|a| ip_to_u128(a.ip)).collect();
            for v in taken.symmetric_difference(&owned) {
                let state = if taken.contains(v) { "taken without an owner record" } else { "owned but not taken" };
                problems.push(format!("pool {subnet}: value {v} is {state}"));
            }
            if let Some(gw) = &rec.gateway {
                if !self.addresses(&pool_id).await?.iter().any(|a| a.ip.to_string() == *gw) {
                    problems.push(format!("pool {subnet}: gateway {gw} is not taken"));
                }
            }
        }
        let vni_bits = BitSpace::new(self.store.as_ref(), keys::VNI_BITS.to_string(), 0);
        let taken: BTreeSet<u128> = vni_bits.taken().await?.into_iter().collect();
        let owned: BTreeSet<u128> = self.vnis().await?.iter().map(|v| v.vni as u128).collect();
        for v in taken.symmetric_difference(&owned) {
            problems.push(format!("VNI {v}: bitmap and owner records disagree"));
        }
        Ok(problems)
    }
}
