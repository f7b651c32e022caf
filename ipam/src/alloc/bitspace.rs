//! A range of numbers (addresses of a pool, VNIs) whose taken/free state lives in the store as
//! bitmap chunks, one key per 1024 values. A chunk that doesn't exist is all free.
//!
//! Reads here are plain reads; callers turn a [`Slot`] into a conditional write with [`BitSpace::take`]
//! or [`BitSpace::free`], so a concurrent change to the same chunk makes their transaction fail
//! and they read again.

use std::collections::BTreeMap;

use super::bitmap::{split, Chunk, CHUNK_BITS};
use super::keys;
use crate::error::{IpamError, IpamResult};
use crate::store::{Condition, KeyValue, Revision, Store, Txn};

pub struct BitSpace<'a> {
    store: &'a dyn Store,
    prefix: String,
    /// The value of bit 0 of chunk 0.
    origin: u128,
}

/// A value and the chunk holding it, as read.
#[derive(Debug, Clone)]
pub struct Slot {
    pub value: u128,
    chunk_index: u128,
    bit: u32,
    chunk: Chunk,
    revision: Option<Revision>,
}

impl Slot {
    pub fn is_taken(&self) -> bool {
        self.chunk.get(self.bit)
    }
}

impl<'a> BitSpace<'a> {
    pub fn new(store: &'a dyn Store, prefix: String, origin: u128) -> Self {
        Self { store, prefix, origin }
    }

    fn chunk_bounds(&self, index: u128) -> (u128, u128) {
        let lo = self.origin.saturating_add(index.saturating_mul(CHUNK_BITS as u128));
        (lo, lo.saturating_add(CHUNK_BITS as u128 - 1))
    }

    fn decode(&self, kv: &KeyValue) -> IpamResult<Chunk> {
        Chunk::from_bytes(&kv.value).map_err(|detail| IpamError::Corrupt { key: kv.key.clone(), detail })
    }

    async fn read_chunk(&self, index: u128) -> IpamResult<(Chunk, Option<Revision>)> {
        match self.store.get(&keys::chunk(&self.prefix, index)).await? {
            Some(kv) => Ok((self.decode(&kv)?, Some(kv.revision))),
            None => Ok((Chunk::empty(), None)),
        }
    }

    pub async fn slot(&self, value: u128) -> IpamResult<Slot> {
        let (chunk_index, bit) = split(value - self.origin);
        let (chunk, revision) = self.read_chunk(chunk_index).await?;
        Ok(Slot { value, chunk_index, bit, chunk, revision })
    }

    /// A free value in `lo..=hi`, searching upwards from `from` and wrapping around; `None` when
    /// every value is taken. Costs one read when the chunk at `from` has room, else one listing.
    pub async fn find_free(&self, lo: u128, hi: u128, from: u128) -> IpamResult<Option<Slot>> {
        let from = from.clamp(lo, hi);
        let (start_chunk, _) = split(from - self.origin);
        let (chunk, revision) = self.read_chunk(start_chunk).await?;
        if let Some(slot) = self.free_in(start_chunk, &chunk, revision, from, hi) {
            return Ok(Some(slot));
        }
        let existing = self.list_chunks().await?;
        let (lo_chunk, _) = split(lo - self.origin);
        let (hi_chunk, _) = split(hi - self.origin);
        if start_chunk < hi_chunk {
            if let Some(slot) = self.scan(&existing, start_chunk + 1, hi_chunk, lo, hi) {
                return Ok(Some(slot));
            }
        }
        Ok(self.scan(&existing, lo_chunk, start_chunk, lo, hi))
    }

    fn free_in(&self, index: u128, chunk: &Chunk, revision: Option<Revision>, lo: u128, hi: u128) -> Option<Slot> {
        let (c_lo, c_hi) = self.chunk_bounds(index);
        let (from, to) = (lo.max(c_lo), hi.min(c_hi));
        if from > to {
            return None;
        }
        let bit = chunk.first_clear((from - c_lo) as u32, (to - c_lo) as u32)?;
        Some(Slot { value: c_lo + bit as u128, chunk_index: index, bit, chunk: chunk.clone(), revision })
    }

    /// First free value in chunks `first..=last` (limited to `lo..=hi`), given every existing chunk.
    fn scan(
        &self,
        existing: &BTreeMap<u128, (Chunk, Revision)>,
        first: u128,
        last: u128,
        lo: u128,
        hi: u128,
    ) -> Option<Slot> {
        let mut expected = first;
        for (&index, (chunk, rev)) in existing.range(first..=last) {
            if index > expected {
                break;
            }
            if let Some(slot) = self.free_in(index, chunk, Some(*rev), lo, hi) {
                return Some(slot);
            }
            expected = index + 1;
        }
        // `expected` is a chunk nobody has written yet: all free.
        if expected <= last {
            return self.free_in(expected, &Chunk::empty(), None, lo, hi);
        }
        None
    }

    async fn list_chunks(&self) -> IpamResult<BTreeMap<u128, (Chunk, Revision)>> {
        let mut out = BTreeMap::new();
        for kv in self.store.list(&self.prefix).await? {
            let index = keys::parse_chunk(&self.prefix, &kv.key)
                .ok_or_else(|| IpamError::Corrupt { key: kv.key.clone(), detail: "not a bitmap chunk key".into() })?;
            out.insert(index, (self.decode(&kv)?, kv.revision));
        }
        Ok(out)
    }

    /// Every taken value, lowest first.
    pub async fn taken(&self) -> IpamResult<Vec<u128>> {
        let mut out = Vec::new();
        for (index, (chunk, _)) in self.list_chunks().await? {
            let (c_lo, _) = self.chunk_bounds(index);
            out.extend(chunk.iter_set().map(|bit| c_lo + bit as u128));
        }
        Ok(out)
    }

    /// Adds "mark the slot taken, if its chunk is unchanged" to `txn`.
    pub fn take(&self, slot: &Slot, txn: Txn) -> Txn {
        let key = keys::chunk(&self.prefix, slot.chunk_index);
        let mut chunk = slot.chunk.clone();
        chunk.set(slot.bit);
        txn.when(Condition::unchanged(key.clone(), slot.revision)).put(key, chunk.to_bytes())
    }

    /// Adds "mark the slot free, if its chunk is unchanged" to `txn`; an emptied chunk is deleted.
    pub fn free(&self, slot: &Slot, txn: Txn) -> Txn {
        let key = keys::chunk(&self.prefix, slot.chunk_index);
        let mut chunk = slot.chunk.clone();
        chunk.clear(slot.bit);
        let txn = txn.when(Condition::unchanged(key.clone(), slot.revision));
        if chunk.is_empty() {
            txn.delete(key)
        } else {
            txn.put(key, chunk.to_bytes())
        }
    }
}
