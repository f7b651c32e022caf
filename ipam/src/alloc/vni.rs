//! VXLAN network identifiers, cluster-wide. A VNI belongs to an owner (normally the network's
//! cluster-wide name): allocating or reserving again for the same owner gives the same VNI, so
//! every host creating that network agrees on it.

use tracing::info;

use super::bitspace::{BitSpace, Slot};
use super::keys;
use super::records::{self, decode_opt, Kind, OwnerRecord};
use crate::error::{IpamError, IpamResult};
use crate::ipam::{backoff, Ipam, VNI_MAX};
use netloom_store::{Condition, Txn};

const VNI_CURSOR: &str = "\0vni";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VniInfo {
    pub vni: u32,
    pub owner: OwnerRecord,
}

impl Ipam {
    /// The owner's VNI, allocating the next free one in the configured range if it has none.
    pub async fn allocate_vni(&self, owner: &str) -> IpamResult<u32> {
        check_owner(owner)?;
        let bits = self.vni_bits();
        let (lo, hi) = (self.config.vni_first as u128, self.config.vni_last as u128);
        let cursor = self.cursor(VNI_CURSOR);
        let mut cursor = cursor.lock().await;
        for attempt in 0..self.config.max_attempts {
            if let Some(vni) = self.vni_of(owner).await? {
                return Ok(vni);
            }
            let slot = bits.find_free(lo, hi, (*cursor).max(lo)).await?.ok_or_else(|| {
                IpamError::Exhausted(format!("no free VNI left in {}-{}", self.config.vni_first, self.config.vni_last))
            })?;
            let vni = slot.value as u32;
            if self.take_vni(&bits, &slot, owner).await? {
                *cursor = if slot.value >= hi { lo } else { slot.value + 1 };
                info!(vni, owner, "VNI allocated");
                return Ok(vni);
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("allocating a VNI for {owner}")))
    }

    /// Takes a specific VNI (any valid one, also outside the automatic range) for `owner`.
    pub async fn reserve_vni(&self, vni: u32, owner: &str) -> IpamResult<()> {
        check_owner(owner)?;
        check_vni(vni)?;
        let bits = self.vni_bits();
        for attempt in 0..self.config.max_attempts {
            match self.vni_of(owner).await? {
                Some(have) if have == vni => return Ok(()),
                Some(have) => {
                    return Err(IpamError::InUse(format!(
                        "{owner} already has VNI {have}; release it before reserving {vni}"
                    )))
                }
                None => {}
            }
            let slot = bits.slot(vni as u128).await?;
            if slot.is_taken() {
                let holder = decode_opt::<OwnerRecord>(self.store.get(&keys::vni_id(vni)).await?)?.0;
                // Another host may have reserved it for the same owner since `vni_of` above.
                if holder.as_ref().is_some_and(|h| h.owner == owner) {
                    return Ok(());
                }
                let by = holder.map(|h| format!(" by {} (host {})", h.owner, h.host)).unwrap_or_default();
                return Err(IpamError::InUse(format!("VNI {vni} is already in use{by}")));
            }
            if self.take_vni(&bits, &slot, owner).await? {
                info!(vni, owner, "VNI reserved");
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("reserving VNI {vni}")))
    }

    /// Frees a VNI whatever holds it; one that isn't taken is already free. Prefer
    /// [`release_vni_of`](Self::release_vni_of), which frees it only for its owner.
    pub async fn release_vni(&self, vni: u32) -> IpamResult<()> {
        self.free_vni(vni, None).await
    }

    /// Frees `owner`'s VNI. A VNI held by another owner is refused: a network leaving must not free
    /// the VNI that another network took since. VNIs belong to networks, not hosts: the last host
    /// to leave a network frees its VNI, whichever host took it.
    pub async fn release_vni_of(&self, vni: u32, owner: &str) -> IpamResult<()> {
        check_owner(owner)?;
        self.free_vni(vni, Some(owner)).await
    }

    async fn free_vni(&self, vni: u32, owner: Option<&str>) -> IpamResult<()> {
        check_vni(vni)?;
        let bits = self.vni_bits();
        let id_key = keys::vni_id(vni);
        for attempt in 0..self.config.max_attempts {
            let slot = bits.slot(vni as u128).await?;
            if !slot.is_taken() {
                return Ok(());
            }
            let mut txn = bits.free(&slot, Txn::new()).delete(&id_key);
            let holder = decode_opt::<OwnerRecord>(self.store.get(&id_key).await?)?.0;
            if let (Some(wanted), Some(holder)) = (owner, &holder) {
                if !holder.owner.is_empty() && holder.owner != wanted {
                    return Err(IpamError::NotHolder(format!(
                        "VNI {vni} is held by {} (host {}), not by {wanted}: only its holder can release it",
                        holder.owner, holder.host
                    )));
                }
            }
            let claim = holder.as_ref().map(|h| h.claim.clone()).unwrap_or_default();
            if let Some(owner) = holder.map(|h| h.owner).filter(|o| !o.is_empty()) {
                let owner_key = keys::vni_owner(&owner);
                if let Some(kv) = self.store.get(&owner_key).await? {
                    if kv.value == vni.to_string().as_bytes() {
                        txn = txn.when(Condition::Revision(owner_key.clone(), kv.revision)).delete(owner_key);
                    }
                }
            }
            let what = format!("releasing VNI {vni}");
            let outcome = self.commit(&what, txn, || self.claim_gone(&id_key, &claim)).await?;
            bits.after_free(&slot, outcome);
            if outcome.committed() {
                info!(vni, "VNI released");
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(self.contention(&format!("releasing VNI {vni}")))
    }

    /// The VNI `owner` holds, if any.
    pub async fn vni_of(&self, owner: &str) -> IpamResult<Option<u32>> {
        let Some(kv) = self.store.get(&keys::vni_owner(owner)).await? else { return Ok(None) };
        let text = String::from_utf8_lossy(&kv.value);
        text.parse::<u32>()
            .map(Some)
            .map_err(|_| IpamError::Corrupt { key: kv.key.clone(), detail: format!("{text:?} is not a VNI") })
    }

    /// Every taken VNI with its owner, lowest first.
    pub async fn vnis(&self) -> IpamResult<Vec<VniInfo>> {
        let mut out = Vec::new();
        for kv in self.store.list(keys::VNI_IDS).await? {
            let vni = kv.key[keys::VNI_IDS.len()..]
                .parse::<u32>()
                .map_err(|_| IpamError::Corrupt { key: kv.key.clone(), detail: "not a VNI key".into() })?;
            out.push(VniInfo { vni, owner: records::decode(&kv)? });
        }
        out.sort_by_key(|v| v.vni);
        Ok(out)
    }

    fn vni_bits(&self) -> BitSpace<'_> {
        BitSpace::new(self.store.as_ref(), keys::VNI_BITS.to_string(), 0).with_cache(&self.chunks)
    }

    /// Takes the VNI `slot` for `owner` in one transaction, on the condition that the owner has
    /// none yet; returns whether it committed.
    async fn take_vni(&self, bits: &BitSpace<'_>, slot: &Slot, owner: &str) -> IpamResult<bool> {
        let (vni, owner_key, claim) = (slot.value as u32, keys::vni_owner(owner), records::claim_id());
        let txn = Txn::new()
            .when(Condition::Absent(owner_key.clone()))
            .put(keys::vni_id(vni), self.vni_record(owner, &claim))
            .put(owner_key, vni.to_string());
        let (what, id_key) = (format!("taking VNI {vni} for {owner}"), keys::vni_id(vni));
        let outcome = self.commit(&what, bits.take(slot, txn), || self.claim_present(&id_key, &claim)).await?;
        bits.after_take(slot, outcome);
        Ok(outcome.committed())
    }

    fn vni_record(&self, owner: &str, claim: &str) -> Vec<u8> {
        records::encode(&OwnerRecord {
            host: self.host.clone(),
            owner: owner.to_string(),
            kind: Kind::Vni,
            at: records::now(),
            claim: claim.to_string(),
        })
    }
}

fn check_vni(vni: u32) -> IpamResult<()> {
    if vni == 0 || vni > VNI_MAX {
        return Err(IpamError::Invalid(format!("VNI {vni} is not valid: VXLAN ids are 1-{VNI_MAX}")));
    }
    Ok(())
}

fn check_owner(owner: &str) -> IpamResult<()> {
    if owner.trim().is_empty() || owner.len() > 256 {
        return Err(IpamError::Invalid(format!(
            "VNI owner {owner:?} is not valid: give the network's name or id (1 to 256 characters)"
        )));
    }
    Ok(())
}
