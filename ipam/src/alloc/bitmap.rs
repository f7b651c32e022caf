//! Fixed-size bitmap chunks: allocation state is kept as one store key per 1024 consecutive
//! values, so finding a free address never walks a whole /8 bit by bit.

pub const CHUNK_BITS: u32 = 1024;
const WORDS: usize = (CHUNK_BITS / 64) as usize;
pub const CHUNK_BYTES: usize = WORDS * 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    words: [u64; WORDS],
}

impl Default for Chunk {
    fn default() -> Self {
        Self::empty()
    }
}

impl Chunk {
    pub fn empty() -> Self {
        Self { words: [0; WORDS] }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != CHUNK_BYTES {
            return Err(format!("bitmap chunk has {} bytes, expected {CHUNK_BYTES}", bytes.len()));
        }
        let mut words = [0u64; WORDS];
        for (word, raw) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(raw);
            *word = u64::from_le_bytes(b);
        }
        Ok(Self { words })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    pub fn get(&self, bit: u32) -> bool {
        debug_assert!(bit < CHUNK_BITS);
        self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    pub fn set(&mut self, bit: u32) {
        self.words[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    pub fn clear(&mut self, bit: u32) {
        self.words[(bit / 64) as usize] &= !(1 << (bit % 64));
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Lowest clear bit in `from..=to`, a word at a time.
    pub fn first_clear(&self, from: u32, to: u32) -> Option<u32> {
        if from > to || to >= CHUNK_BITS {
            return None;
        }
        let (first_word, last_word) = ((from / 64) as usize, (to / 64) as usize);
        for w in first_word..=last_word {
            let mut free = !self.words[w];
            if w == first_word {
                free &= u64::MAX << (from % 64);
            }
            if w == last_word && to % 64 != 63 {
                free &= (1u64 << (to % 64 + 1)) - 1;
            }
            if free != 0 {
                return Some(w as u32 * 64 + free.trailing_zeros());
            }
        }
        None
    }

    /// Set bits, lowest first.
    pub fn iter_set(&self) -> impl Iterator<Item = u32> + '_ {
        (0..CHUNK_BITS).filter(|b| self.get(*b))
    }
}

/// Splits an offset into (chunk index, bit in chunk).
pub fn split(offset: u128) -> (u128, u32) {
    (offset / CHUNK_BITS as u128, (offset % CHUNK_BITS as u128) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn set_get_clear() {
        let mut c = Chunk::empty();
        assert!(c.is_empty());
        for bit in [0, 1, 63, 64, 500, 1023] {
            c.set(bit);
            assert!(c.get(bit));
        }
        assert_eq!(c.count(), 6);
        c.clear(63);
        assert!(!c.get(63));
        assert_eq!(c.iter_set().collect::<Vec<_>>(), vec![0, 1, 64, 500, 1023]);
    }

    #[test]
    fn bytes_round_trip() {
        let mut c = Chunk::empty();
        c.set(3);
        c.set(1000);
        let bytes = c.to_bytes();
        assert_eq!(bytes.len(), CHUNK_BYTES);
        assert_eq!(Chunk::from_bytes(&bytes).unwrap(), c);
        assert!(Chunk::from_bytes(&bytes[1..]).is_err());
    }

    #[test]
    fn first_clear_edges() {
        let mut c = Chunk::empty();
        assert_eq!(c.first_clear(0, 1023), Some(0));
        assert_eq!(c.first_clear(1023, 1023), Some(1023));
        assert_eq!(c.first_clear(5, 4), None);
        assert_eq!(c.first_clear(0, 1024), None);
        for b in 0..CHUNK_BITS {
            c.set(b);
        }
        assert_eq!(c.first_clear(0, 1023), None);
        c.clear(700);
        assert_eq!(c.first_clear(0, 699), None);
        assert_eq!(c.first_clear(0, 700), Some(700));
        assert_eq!(c.first_clear(701, 1023), None);
        assert_eq!(c.first_clear(700, 700), Some(700));
    }

    #[test]
    fn split_offsets() {
        assert_eq!(split(0), (0, 0));
        assert_eq!(split(1023), (0, 1023));
        assert_eq!(split(1024), (1, 0));
        assert_eq!(split(u128::MAX), (u128::MAX / 1024, 1023));
    }

    proptest! {
        #[test]
        fn first_clear_matches_naive(bits in proptest::collection::vec(0u32..1024, 0..1100), a in 0u32..1024, b in 0u32..1024) {
            let mut c = Chunk::empty();
            for bit in &bits {
                c.set(*bit);
            }
            let (from, to) = (a.min(b), a.max(b));
            let naive = (from..=to).find(|x| !c.get(*x));
            prop_assert_eq!(c.first_clear(from, to), naive);
        }
    }
}
