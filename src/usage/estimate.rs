//! Token estimation for when a provider reports no usage: [`estimate_tokens`]
//! and its incremental form [`TokenEstimator`]. Cheap and allocation-free.

/// Whether `c` is a CJK ideograph, kana, Hangul, or CJK/full-width
/// punctuation — scripts where one character is roughly one token.
pub(super) fn is_cjk(c: char) -> bool {
    // Below U+1100 (Latin, Greek, Cyrillic, ...) nothing is: one test.
    c >= '\u{1100}'
        && matches!(c as u32,
            0x1100..=0x11FF        // Hangul Jamo
            | 0x2E80..=0x2FDF      // CJK / Kangxi radicals
            | 0x3000..=0x303F      // CJK symbols and punctuation
            | 0x3040..=0x30FF      // Hiragana, Katakana
            | 0x3100..=0x318F      // Bopomofo, Hangul compatibility Jamo
            | 0x31A0..=0x31FF      // Bopomofo ext., CJK strokes, Katakana ext.
            | 0x3200..=0x4DBF      // enclosed CJK, compatibility, Ext. A
            | 0x4E00..=0x9FFF      // CJK Unified Ideographs
            | 0xA960..=0xA97F      // Hangul Jamo ext. A
            | 0xAC00..=0xD7FF      // Hangul syllables, Jamo ext. B
            | 0xF900..=0xFAFF      // CJK compatibility ideographs
            | 0xFF00..=0xFFEF      // half-width and full-width forms
            | 0x1B000..=0x1B16F    // kana supplement / extended
            | 0x20000..=0x3134F // CJK Ext. B..G and compatibility supplement
        )
}

/// Incremental form of [`estimate_tokens`]: feeding several strings gives
/// exactly `estimate_tokens` of their concatenation. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenEstimator {
    /// Tokens of closed ASCII runs plus CJK characters.
    whole: u64,
    /// Length of the ASCII run still open at the end of the text so far.
    ascii_run: u64,
    /// Other non-ASCII characters (half a token each).
    halves: u64,
}

impl TokenEstimator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, text: &str) {
        let mut rest = text;
        while !rest.is_empty() {
            // ASCII runs are counted in bulk, eight bytes at a time.
            let ascii = ascii_prefix(rest.as_bytes());
            self.ascii(ascii);
            let mut chars = rest.get(ascii..).unwrap_or_default().chars();
            for c in chars.by_ref() {
                if c.is_ascii() {
                    self.ascii(1);
                    break;
                }
                self.non_ascii(c);
            }
            rest = chars.as_str();
        }
    }

    /// `n` ASCII characters.
    #[inline]
    pub(super) fn ascii(&mut self, n: usize) {
        self.ascii_run = self.ascii_run.saturating_add(n as u64);
    }

    /// One non-ASCII character: closes the open ASCII run.
    #[inline]
    pub(super) fn non_ascii(&mut self, c: char) {
        self.whole = self.whole.saturating_add(self.ascii_run.div_ceil(4));
        self.ascii_run = 0;
        if is_cjk(c) {
            self.whole = self.whole.saturating_add(1);
        } else {
            self.halves = self.halves.saturating_add(1);
        }
    }

    pub fn tokens(&self) -> u64 {
        self.whole
            .saturating_add(self.ascii_run.div_ceil(4))
            .saturating_add(self.halves.div_ceil(2))
    }
}

/// Length of the ASCII prefix of `b`, eight bytes at a time.
fn ascii_prefix(b: &[u8]) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    let mut n = 0;
    for chunk in &mut chunks {
        let high = u64::from_le_bytes(chunk.try_into().unwrap_or_default()) & HIGH;
        if high != 0 {
            return n + (high.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + chunks
        .remainder()
        .iter()
        .take_while(|b| b.is_ascii())
        .count()
}

/// Rough token estimate for text, for when a provider reports no usage.
///
/// Rule: every maximal run of ASCII characters counts `ceil(len / 4)`
/// tokens; every CJK ideograph, kana, Hangul or CJK/full-width punctuation
/// character counts 1 token; every other non-ASCII character (Latin
/// diacritics, Cyrillic, emoji, ...) counts half a token, rounded up over the
/// whole text. So `"hello"` → 2, `"世界"` → 2, `"wörld"` → 1 + 1 + 1 = 3.
/// Cheap (one pass over the chars), no allocation.
pub fn estimate_tokens(text: &str) -> u64 {
    let mut e = TokenEstimator::new();
    e.feed(text);
    e.tokens()
}
