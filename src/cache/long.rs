//! Long strings in the exact cache's key: a string value whose canonical literal (quotes
//! included) is at least [`LONG`] bytes enters the canonical text as a token, the byte
//! `0xFF` (never in UTF-8 text, so no literal can be mistaken for a token) and the BLAKE3
//! digest of the literal. The key stays a collision-resistant function of the request.
//!
//! What it buys: the digests of long strings seen lately are remembered ([`Memo`]), so a
//! long string sent again (a system prompt, the earlier turns of a conversation, a tool's
//! schema) is compared byte for byte instead of hashed again, about a tenth of the
//! instructions per byte. Remembered per cache scope: a string serves only requests of the
//! scope that sent it, so how fast a key is made tells no one what another scope sent.
//!
//! The memo is a fixed table of slots, each swapped whole (`arc-swap`: a lookup takes no
//! lock); a slot is picked by the scope and the string's length and ends, and its entry
//! serves only the scope and string it holds. Bounded: [`SLOTS`] strings of at most
//! [`MEMO_MAX`] bytes.

use arc_swap::ArcSwapOption;
use once_cell::sync::Lazy;
use std::sync::Arc;

/// Shortest literal written as a token.
pub const LONG: usize = 512;
/// Longest literal remembered (longer ones are hashed every time).
pub const MEMO_MAX: usize = 32 << 10;
/// How many literals are remembered.
pub const SLOTS: usize = 256;
/// Starts a token: not a byte of UTF-8 text.
pub const TOKEN: u8 = 0xFF;

struct Remembered {
    scope: Box<[u8]>,
    literal: Box<[u8]>,
    digest: [u8; 32],
}

/// The remembered digests.
pub struct Memo {
    slots: Vec<ArcSwapOption<Remembered>>,
    /// Keyed per process: which strings share a slot cannot be worked out offline.
    seed: ahash::RandomState,
}

impl Memo {
    pub fn new() -> Memo {
        Memo {
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
            seed: ahash::RandomState::new(),
        }
    }

    /// The BLAKE3 digest of `literal`, remembered for `scope` when it is not too long.
    pub fn digest(&self, scope: &[u8], literal: &[u8]) -> [u8; 32] {
        if literal.len() > MEMO_MAX {
            return *blake3::hash(literal).as_bytes();
        }
        let Some(slot) = self.slots.get(self.slot_of(scope, literal)) else {
            return *blake3::hash(literal).as_bytes();
        };
        if let Some(r) = slot.load().as_ref() {
            if *r.literal == *literal && *r.scope == *scope {
                return r.digest;
            }
        }
        let digest = *blake3::hash(literal).as_bytes();
        slot.store(Some(Arc::new(Remembered {
            scope: scope.into(),
            literal: literal.into(),
            digest,
        })));
        digest
    }

    /// A slot by the scope, the literal's length and its first and last 64 bytes.
    fn slot_of(&self, scope: &[u8], literal: &[u8]) -> usize {
        let head = literal.get(..64).unwrap_or(literal);
        let tail = literal
            .get(literal.len().saturating_sub(64)..)
            .unwrap_or(literal);
        let h = self.seed.hash_one((scope, literal.len(), head, tail));
        usize::try_from(h % SLOTS as u64).unwrap_or(0)
    }
}

impl Default for Memo {
    fn default() -> Self {
        Memo::new()
    }
}

static MEMO: Lazy<Memo> = Lazy::new(Memo::new);

/// The literal written at `from..` in `out` for a request of `scope`: replaced by its token
/// when it is long.
pub fn shorten(scope: &[u8], out: &mut Vec<u8>, from: usize) {
    shorten_with(&MEMO, scope, out, from);
}

fn shorten_with(memo: &Memo, scope: &[u8], out: &mut Vec<u8>, from: usize) {
    let Some(literal) = out.get(from..) else {
        return;
    };
    if literal.len() < LONG {
        return;
    }
    let digest = memo.digest(scope, literal);
    out.truncate(from);
    out.push(TOKEN);
    out.extend_from_slice(&digest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(n: usize, fill: u8) -> Vec<u8> {
        let mut v = vec![b'"'];
        v.extend(std::iter::repeat_n(fill, n - 2));
        v.push(b'"');
        v
    }

    #[test]
    fn long_literals_become_tokens_and_short_ones_stay() {
        let memo = Memo::new();
        let mut out = b"{\"a\":".to_vec();
        let short = literal(LONG - 1, b'x');
        out.extend_from_slice(&short);
        shorten_with(&memo, b"s", &mut out, 5);
        assert_eq!(&out[5..], &short[..]);
        let mut out = b"{\"a\":".to_vec();
        let long = literal(LONG, b'x');
        out.extend_from_slice(&long);
        shorten_with(&memo, b"s", &mut out, 5);
        assert_eq!(out.len(), 5 + 33);
        assert_eq!(out[5], TOKEN);
        assert_eq!(&out[6..], blake3::hash(&long).as_bytes());
    }

    #[test]
    fn the_memo_answers_only_for_the_same_bytes() {
        let memo = Memo::new();
        let a = literal(4000, b'a');
        let mut b = a.clone();
        b[2000] = b'b';
        // Same length and ends: the same slot; each is hashed, never served the other's.
        for _ in 0..3 {
            assert_eq!(memo.digest(b"s", &a), *blake3::hash(&a).as_bytes());
            assert_eq!(memo.digest(b"s", &b), *blake3::hash(&b).as_bytes());
        }
        assert_eq!(memo.digest(b"s", &a), memo.digest(b"s", &a));
        let huge = literal(MEMO_MAX + 10, b'h');
        assert_eq!(memo.digest(b"s", &huge), *blake3::hash(&huge).as_bytes());
    }

    #[test]
    fn many_strings_share_the_slots_and_stay_right() {
        let memo = Memo::new();
        let strings: Vec<Vec<u8>> = (0..3 * SLOTS)
            .map(|i| {
                let mut s = literal(LONG + i, b'z');
                s[1] = u8::try_from(i % 200).unwrap() + 32;
                s
            })
            .collect();
        for _ in 0..2 {
            for s in &strings {
                assert_eq!(memo.digest(b"s", s), *blake3::hash(s).as_bytes());
            }
        }
    }

    #[test]
    fn a_string_is_remembered_for_its_scope_only() {
        let memo = Memo::new();
        let a = literal(2000, b'a');
        let want = *blake3::hash(&a).as_bytes();
        assert_eq!(memo.digest(b"consumer:alice", &a), want);
        assert_eq!(memo.digest(b"consumer:bob", &a), want);
        // Each scope's entry holds its scope: a slot never answers for another.
        let slot = memo.slot_of(b"consumer:bob", &a);
        let held = memo.slots[slot].load_full().unwrap();
        assert_eq!(&*held.scope, b"consumer:bob");
    }
}
