//! A range of numbers (addresses of a pool, VNIs) whose taken/free state lives in the store as
//! bitmap chunks, one key per 1024 values. A chunk that doesn't exist is all free.
//!
//! Reads here are plain reads; callers turn a [`Slot`] into a conditional write with [`BitSpace::take`]
//! or [`BitSpace::free`], so a concurrent change to the same chunk makes their transaction fail
//! and they read again.
//!
//! A [`ChunkCache`] remembers the chunks this process wrote, so the next allocation in the same
//! chunk is one transaction without a read (see [`BitSpace::find_free`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::bitmap::{split, Chunk, CHUNK_BITS};
use super::keys;
use crate::error::{IpamError, IpamResult};
use netloom_store::{Condition, KeyValue, Revision, Store, Txn, TxnOutcome};

/// More entries than this and the cache starts over (128 bytes of bitmap each).
const CACHE_LIMIT: usize = 4096;

/// Chunk key → the chunk as this process last wrote it and the revision of that write.
///
/// Only [`BitSpace::find_free`] reads it, and everything `find_free` answers is checked by the
/// allocating transaction's "chunk unchanged" condition: an entry made stale by another host (or
/// by a pool deletion) costs one conflict, after which the entry is dropped and the chunk is read
/// from the store. Reads of one specific value ([`BitSpace::slot`]) never use it, because their
/// "taken" answers are final.
#[derive(Default)]
pub struct ChunkCache {
    map: Mutex<HashMap<String, (Chunk, Revision)>>,
}

impl ChunkCache {
    fn get(&self, key: &str) -> Option<(Chunk, Revision)> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    fn put(&self, key: String, chunk: Chunk, revision: Revision) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            // Two of this process's writes finishing out of order: keep the later state.
            Some((_, known)) if *known > revision => return,
            Some(_) => {}
            None if map.len() >= CACHE_LIMIT => map.clear(),
            None => {}
        }
        map.insert(key, (chunk, revision));
    }

    fn forget(&self, key: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

pub struct BitSpace<'a> {
    store: &'a dyn Store,
    prefix: String,
    /// The value of bit 0 of chunk 0.
    origin: u128,
    cache: Option<&'a ChunkCache>,
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

    /// Both slots were read from the same chunk at the same revision (or both found it absent).
    pub fn same_chunk_state(&self, other: &Slot) -> bool {
        self.chunk_index == other.chunk_index && self.revision == other.revision
    }
}

impl<'a> BitSpace<'a> {
    pub fn new(store: &'a dyn Store, prefix: String, origin: u128) -> Self {
        Self { store, prefix, origin, cache: None }
    }

    /// Lets [`find_free`](Self::find_free) start from chunks this process wrote, and records the
    /// outcome of [`after_take`](Self::after_take) / [`after_free`](Self::after_free) there.
    pub fn with_cache(mut self, cache: &'a ChunkCache) -> Self {
        self.cache = Some(cache);
        self
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
    /// every value is taken. Costs one read when the chunk at `from` has room (none when this
    /// process wrote that chunk last and it is in the cache), else one listing.
    ///
    /// A cached chunk may be stale: a value it shows free may have been taken by another host
    /// (the take's condition fails, and the retry reads), and a value it shows taken may have been
    /// freed (it is skipped this time; the listing that follows a full chunk reads the store).
    pub async fn find_free(&self, lo: u128, hi: u128, from: u128) -> IpamResult<Option<Slot>> {
        let from = from.clamp(lo, hi);
        let (start_chunk, _) = split(from - self.origin);
        let cached = self.cache.and_then(|c| c.get(&keys::chunk(&self.prefix, start_chunk)));
        let (chunk, revision) = match cached {
            Some((chunk, revision)) => (chunk, Some(revision)),
            None => self.read_chunk(start_chunk).await?,
        };
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

    /// Tells the cache how the transaction built with [`take`](Self::take) ended.
    pub fn after_take(&self, slot: &Slot, outcome: TxnOutcome) {
        let mut chunk = slot.chunk.clone();
        chunk.set(slot.bit);
        self.settle(slot, chunk, outcome);
    }

    /// Tells the cache how the transaction built with [`free`](Self::free) ended.
    pub fn after_free(&self, slot: &Slot, outcome: TxnOutcome) {
        let mut chunk = slot.chunk.clone();
        chunk.clear(slot.bit);
        self.settle(slot, chunk, outcome);
    }

    fn settle(&self, slot: &Slot, written: Chunk, outcome: TxnOutcome) {
        let Some(cache) = self.cache else { return };
        let key = keys::chunk(&self.prefix, slot.chunk_index);
        match outcome {
            // Every key a transaction writes gets the transaction's revision. A deleted (emptied)
            // chunk is not remembered: "absent" is one read away.
            TxnOutcome::Committed(revision) if revision > 0 && !written.is_empty() => cache.put(key, written, revision),
            _ => cache.forget(&key),
        }
    }
}
