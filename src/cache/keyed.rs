//! The keyed hash of keys kept in one gateway's memory only: a PRF of 128 bits under a
//! secret drawn from the OS when the process starts, so that nobody without the secret can
//! compute a key, let alone make two requests' keys collide.
//!
//! - Where the CPU has AES instructions (x86-64 AES-NI, ARMv8's AES): AES-CMAC (NIST SP
//!   800-38B, RFC 4493) on the `aes` crate's block cipher, its backend chosen once per text
//!   (the blocks of one MAC depend on each other: one AES call a 16 bytes, about 30
//!   instructions, where SipHash-2-4 takes about 80).
//! - Elsewhere SipHash-2-4 (AES in software would be slower than it).
//!
//! The two never meet in one process (the choice is made once), and each marks the second
//! half of its 32-byte [`Key`](super::Key) with its own 16 bytes, so neither equals a
//! BLAKE3 key but by a chance of 2^-128.

use aes::cipher::consts::U16;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, KeyInit};
use aes::Aes128Enc;
use once_cell::sync::Lazy;
use siphasher::sip128::SipHasher24;

/// This process's keyed hash; `None` when the OS gave no randomness.
pub(super) static KEYED: Lazy<Option<Keyed>> = Lazy::new(|| {
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).ok()?;
    Some(if has_aes() {
        Keyed::Cmac(Box::new(Cmac::new(&secret)))
    } else {
        Keyed::Sip(SipHasher24::new_with_key(&secret))
    })
});

/// Whether this CPU runs AES in hardware.
pub(super) fn has_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("sse2");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return false;
}

/// A keyed hash of 128 bits.
pub(super) enum Keyed {
    /// Boxed: the cipher's round keys for its software fallback too (over 700 bytes).
    Cmac(Box<Cmac>),
    Sip(SipHasher24),
}

impl Keyed {
    /// The 32 bytes of `text`'s key: the tag, then this hash's mark.
    pub(super) fn key(&self, text: &[u8]) -> [u8; 32] {
        let (tag, mark) = match self {
            Keyed::Cmac(c) => (c.tag(text), b"tollgate:aescmac"),
            Keyed::Sip(s) => (s.hash(text).as_bytes(), b"tollgate:siphash"),
        };
        let mut key = [0u8; 32];
        let (head, tail) = key.split_at_mut(16);
        head.copy_from_slice(&tag);
        tail.copy_from_slice(mark);
        key
    }
}

/// AES-128-CMAC under one key: the cipher's round keys and the two subkeys.
pub(super) struct Cmac {
    aes: Aes128Enc,
    /// The subkey for a last block that is whole (K1), and for one padded (K2).
    k1: u128,
    k2: u128,
}

impl Cmac {
    pub(super) fn new(key: &[u8; 16]) -> Cmac {
        let aes = Aes128Enc::new(GenericArray::from_slice(key));
        let mut l = GenericArray::from([0u8; 16]);
        aes.encrypt_block(&mut l);
        let k1 = double(u128::from_be_bytes(l.into()));
        Cmac {
            aes,
            k1,
            k2: double(k1),
        }
    }

    /// The MAC of `text`.
    pub(super) fn tag(&self, text: &[u8]) -> [u8; 16] {
        let mut run = Chain {
            text,
            k1: self.k1,
            k2: self.k2,
            tag: [0; 16],
        };
        self.aes.encrypt_with_backend(&mut run);
        run.tag
    }
}

/// Multiplication by x in GF(2^128) (RFC 4493's subkey step), the block read big-endian.
fn double(v: u128) -> u128 {
    (v << 1) ^ if v >> 127 == 1 { 0x87 } else { 0 }
}

/// One MAC's chain of blocks, run with the cipher's backend in hand (one dispatch a text,
/// not a block).
struct Chain<'t> {
    text: &'t [u8],
    k1: u128,
    k2: u128,
    tag: [u8; 16],
}

impl BlockSizeUser for &mut Chain<'_> {
    type BlockSize = U16;
}

impl BlockClosure for &mut Chain<'_> {
    #[inline(always)]
    fn call<B: BlockBackend<BlockSize = U16>>(self, backend: &mut B) {
        // Every block but the last is chained as it is; the last (possibly empty or short)
        // is padded with 0x80 0… and takes K2, or, whole, K1.
        let whole = self.text.len().saturating_sub(1) / 16;
        let (head, last) = self.text.split_at(whole * 16);
        let mut block = GenericArray::from([0u8; 16]);
        let mut x = 0u128;
        let mut encrypt = |x: u128| {
            block = GenericArray::from(x.to_be_bytes());
            backend.proc_block((&mut block).into());
            u128::from_be_bytes(block.into())
        };
        for b in head.chunks_exact(16) {
            let mut m = [0u8; 16];
            m.copy_from_slice(b);
            x = encrypt(x ^ u128::from_be_bytes(m));
        }
        let mut m = [0u8; 16];
        m[..last.len()].copy_from_slice(last);
        let k = if last.len() == 16 {
            self.k1
        } else {
            m[last.len()] = 0x80;
            self.k2
        };
        self.tag = encrypt(x ^ u128::from_be_bytes(m) ^ k).to_be_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 4493, section 4: the four examples.
    #[test]
    fn cmac_gives_the_rfcs_tags() {
        let key = 0x2b7e151628aed2a6abf7158809cf4f3c_u128.to_be_bytes();
        let message: Vec<u8> = [
            0x6bc1bee22e409f96e93d7e117393172a_u128,
            0xae2d8a571e03ac9c9eb76fac45af8e51,
            0x30c81c46a35ce411e5fbc1191a0a52ef,
            0xf69f2445df4f9b17ad2b417be66c3710,
        ]
        .iter()
        .flat_map(|b| b.to_be_bytes())
        .collect();
        let cmac = Cmac::new(&key);
        for (len, tag) in [
            (0, "bb1d6929e95937287fa37d129b756746"),
            (16, "070a16b46b4d4144f79bdd9dd04a287c"),
            (40, "dfa66747de9ae63030ca32611497c827"),
            (64, "51f0bebf7e3b9d92fc49741779363cfe"),
        ] {
            assert_eq!(hex(&cmac.tag(&message[..len])), tag, "{len} bytes");
        }
    }

    #[test]
    fn each_hash_marks_its_keys_and_every_byte_counts() {
        let secret = [9u8; 16];
        let cmac = Keyed::Cmac(Box::new(Cmac::new(&secret)));
        let sip = Keyed::Sip(SipHasher24::new_with_key(&secret));
        let text = b"chat\0consumer:alice\0{\"messages\":[],\"model\":\"m\"}";
        assert_eq!(&cmac.key(text)[16..], b"tollgate:aescmac");
        assert_eq!(&sip.key(text)[16..], b"tollgate:siphash");
        for keyed in [cmac, sip] {
            let whole = keyed.key(text);
            for cut in 0..text.len() {
                assert_ne!(keyed.key(&text[..cut]), whole, "{cut}");
            }
        }
    }
}
