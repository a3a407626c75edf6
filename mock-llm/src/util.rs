//! Small pure helpers shared by every protocol: hashing, the deterministic
//! generated text, token estimates, embeddings and query-string lookup.

use std::time::{SystemTime, UNIX_EPOCH};

/// The generated "tokens": token `i` is `WORDS[i % 8]`.
pub const WORDS: [&str; 8] = [
    "Hello", " wörld", " 世界", " from", " mock", " 🚀", " llm", ".",
];

/// FNV-1a, 64 bit.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// ceil(chars / 4), chars = Unicode scalar values.
pub fn text_tokens(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4)
}

/// Generated token `i`.
pub fn word(i: u64) -> &'static str {
    WORDS
        .get(usize::try_from(i % WORDS.len() as u64).unwrap_or(0))
        .copied()
        .unwrap_or(".")
}

/// The first `n` generated tokens, concatenated.
pub fn content(n: u64) -> String {
    (0..n).map(word).collect()
}

/// Words that say little about what a text asks: left out of embeddings.
const STOP_WORDS: [&str; 34] = [
    "a", "an", "the", "is", "are", "was", "were", "be", "of", "to", "in", "on", "at", "for", "and",
    "or", "what", "whats", "which", "who", "how", "do", "does", "did", "me", "please", "tell", "i",
    "you", "it", "this", "that", "with", "by",
];

/// The words of `material` an embedding counts: lowercase runs of letters and digits,
/// without stop words and one-letter words.
pub fn embedding_words(material: &str) -> Vec<String> {
    material
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() > 1 && !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// Unit-length vector of `dims` values, rounded to 6 decimals: a hashed bag of words (each
/// word of [`embedding_words`] adds ±1 at the place its FNV-1a hash picks), so texts
/// sharing most words are near (cosine = shared words over the geometric mean of their
/// counts, but for hash collisions) and texts sharing none are far; a text without such
/// words gets a vector derived from the FNV-1a hash of the whole of it.
pub fn embedding(material: &str, dims: usize) -> Vec<f64> {
    let dims = dims.max(1);
    let mut raw = vec![0.0f64; dims];
    for w in embedding_words(material) {
        let h = fnv1a64(w.as_bytes());
        let i = usize::try_from(h % dims as u64).unwrap_or(0);
        raw[i] += if h >> 63 == 1 { -1.0 } else { 1.0 };
    }
    if raw.iter().all(|v| *v == 0.0) {
        let mut seed = fnv1a64(material.as_bytes());
        raw = (0..dims)
            .map(|_| (splitmix64(&mut seed) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
            .collect();
    }
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    raw.iter().map(|v| (v / norm * 1e6).round() / 1e6).collect()
}

/// Raw (not percent-decoded) value of the first `name=value` pair in `query`.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn words_and_tokens() {
        assert_eq!(content(3), "Hello wörld 世界");
        assert_eq!(word(8), "Hello");
        assert_eq!(text_tokens(""), 0);
        assert_eq!(text_tokens("世界🚀x"), 1);
        assert_eq!(text_tokens("abcde"), 2);
    }

    #[test]
    fn embeddings_are_unit_and_deterministic() {
        let a = embedding("x", 8);
        assert_eq!(a, embedding("x", 8));
        let n: f64 = a.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-4);
        let cos = |x: &str, y: &str| -> f64 {
            let (a, b) = (embedding(x, 256), embedding(y, 256));
            a.iter().zip(&b).map(|(p, q)| p * q).sum()
        };
        let q = "What is the capital of France?";
        assert!(cos(q, "what's the capital of france") > 0.99);
        assert!(cos(q, "Tell me: the capital city of France, please") > 0.8);
        assert!(cos(q, "What is the capital of Germany?") < 0.6);
        assert!(cos(q, "How do I bake bread?") < 0.2);
        let n: f64 = embedding("the of", 256).iter().map(|v| v * v).sum();
        assert!(
            (n - 1.0).abs() < 1e-4,
            "stop words only: still a unit vector"
        );
    }

    #[test]
    fn query_lookup() {
        let q = Some("alt=sse&key=abc&flag");
        assert_eq!(query_param(q, "alt"), Some("sse"));
        assert_eq!(query_param(q, "key"), Some("abc"));
        assert_eq!(query_param(q, "flag"), Some(""));
        assert_eq!(query_param(q, "api-version"), None);
        assert_eq!(query_param(None, "alt"), None);
    }
}
