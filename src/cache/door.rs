//! The doorkeeper in front of the cache's memory (as in W-TinyLFU): while the memory is full,
//! an answer is kept only when its key was offered before, lately. moka's own admission
//! refuses such a first-seen candidate anyway (it must be asked for more often than the
//! entries it would evict, and a key missed once is not), but only after inserting it and
//! before removing it again; the doorkeeper spares that work, and the entry's allocation,
//! for the one-off requests that would have been refused. A key offered again is let
//! through, and moka's admission decides as before.
//!
//! A Bloom filter of 65,536 bits (8 KiB), two bits per key, cleared after every 8,192 new
//! keys (so at most an eighth of its bits are set and a false "seen" is about 5 %: a wasted
//! insert, as without it). Its bits come from the key, a digest (keyed in one gateway's
//! memory), so a client cannot aim at them; and a wrong answer either way only lets moka
//! decide or keeps an answer at its next miss.

use super::Key;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const WORDS: usize = 1024;
const BITS: u64 = (WORDS as u64) * 64;
/// New keys marked before the filter is cleared.
const CLEAR_AFTER: u32 = 8192;

pub struct Doorkeeper {
    bits: Box<[AtomicU64]>,
    marked: AtomicU32,
}

impl Default for Doorkeeper {
    fn default() -> Self {
        Doorkeeper {
            bits: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            marked: AtomicU32::new(0),
        }
    }
}

impl Doorkeeper {
    /// Mark `key` as offered; whether it had been (since the last clearing; a false yes is
    /// possible).
    pub fn offered_before(&self, key: &Key) -> bool {
        let [a, b] = probes(key);
        let seen = self.set(a) & self.set(b);
        if !seen && self.marked.fetch_add(1, Ordering::Relaxed) + 1 >= CLEAR_AFTER {
            self.marked.store(0, Ordering::Relaxed);
            for w in self.bits.iter() {
                w.store(0, Ordering::Relaxed);
            }
        }
        seen
    }

    /// Set bit `i`; whether it was set.
    fn set(&self, i: u64) -> bool {
        let mask = 1u64 << (i % 64);
        let word = usize::try_from(i / 64).unwrap_or(0);
        self.bits
            .get(word)
            .is_some_and(|w| w.fetch_or(mask, Ordering::Relaxed) & mask != 0)
    }
}

/// The key's two bits: from its first 16 bytes (a digest's, in either hashing).
fn probes(key: &Key) -> [u64; 2] {
    let mut a = [0; 8];
    let mut b = [0; 8];
    a.copy_from_slice(&key.0[..8]);
    b.copy_from_slice(&key.0[8..16]);
    [u64::from_le_bytes(a) % BITS, u64::from_le_bytes(b) % BITS]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Key {
        Key(*blake3::hash(&i.to_le_bytes()).as_bytes())
    }

    #[test]
    fn a_key_is_let_through_the_second_time() {
        let door = Doorkeeper::default();
        assert!(!door.offered_before(&key(1)));
        assert!(door.offered_before(&key(1)));
        assert!(door.offered_before(&key(1)));
        assert!(!door.offered_before(&key(2)));
    }

    #[test]
    fn it_is_cleared_after_so_many_new_keys_and_rarely_wrong_before() {
        let door = Doorkeeper::default();
        assert!(!door.offered_before(&key(0)));
        let wrong = (1..CLEAR_AFTER - 1)
            .filter(|&i| door.offered_before(&key(i)))
            .count();
        // At most an eighth of the bits set: a false "seen" for about 1 key in 20 at the end,
        // fewer before.
        assert!(wrong < 300, "{wrong} keys seen that were not");
        assert!(door.offered_before(&key(0)), "still remembered");
        // New keys until the count reaches the clearing: everything is forgotten.
        let mut i = CLEAR_AFTER;
        while door.marked.load(Ordering::Relaxed) != 0 {
            assert!(i < 2 * CLEAR_AFTER, "cleared after {CLEAR_AFTER} new keys");
            door.offered_before(&key(i));
            i += 1;
        }
        assert!(!door.offered_before(&key(0)), "forgotten");
    }
}
