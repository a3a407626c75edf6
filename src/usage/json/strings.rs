//! Strings for the scanner: finding the end of a string literal eight
//! bytes at a time, decoding escapes and UTF-8 where the text is wanted
//! (keys compared to names, text fed to a token estimator).

use super::{Bail, Cursor, Scan};
use crate::usage::estimate::TokenEstimator;

/// The interior of a validated string literal (between the quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    /// It contains a `\` escape.
    pub escaped: bool,
}

impl Span {
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

/// An object key as written (its escapes not yet decoded).
pub(crate) struct Key<'a> {
    pub raw: &'a [u8],
    escaped: bool,
}

impl Key<'_> {
    /// It contains a `\` escape.
    pub fn escaped(&self) -> bool {
        self.escaped
    }

    /// Whether the decoded key equals `name`.
    #[inline(always)]
    pub fn is(&self, name: &[u8]) -> bool {
        if self.escaped {
            self.decoded_is(name)
        } else {
            self.raw.len() == name.len() && self.raw.iter().zip(name).all(|(a, b)| a == b)
        }
    }

    #[cold]
    fn decoded_is(&self, name: &[u8]) -> bool {
        let mut rest = name;
        let mut equal = true;
        let decoded = unescape(self.raw, 0, self.raw.len(), |piece| {
            let mut buf = [0u8; 4];
            let bytes = match piece {
                Piece::Run(s, e) => self.raw.get(s..e).unwrap_or_default(),
                Piece::Char(c) => c.encode_utf8(&mut buf).as_bytes(),
            };
            match rest.strip_prefix(bytes) {
                Some(r) if equal => rest = r,
                _ => equal = false,
            }
        });
        decoded.is_ok() && equal && rest.is_empty()
    }
}

/// A piece of a decoded string: a run of the input copied as is
/// (`start..end`), or the character an escape stands for.
enum Piece {
    Run(usize, usize),
    Char(char),
}

/// Decode the validated string interior `b[start..end]` piece by piece.
fn unescape(b: &[u8], start: usize, end: usize, mut f: impl FnMut(Piece)) -> Scan<()> {
    let mut i = start;
    while i < end {
        let rest = b.get(i..end).ok_or(Bail)?;
        let Some(at) = memchr::memchr(b'\\', rest) else {
            f(Piece::Run(i, end));
            return Ok(());
        };
        if at > 0 {
            f(Piece::Run(i, i + at));
        }
        i += at;
        let (c, len) = decode_escape(b, i)?;
        f(Piece::Char(c));
        i += len;
    }
    Ok(())
}

/// The escape at `b[i]` (a `\`): its character and length. Lone surrogates
/// are refused.
fn decode_escape(b: &[u8], i: usize) -> Scan<(char, usize)> {
    let c = match b.get(i + 1).ok_or(Bail)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(b, i + 2)?;
            if !(0xD800..0xE000).contains(&hi) {
                return Ok((char::from_u32(hi).ok_or(Bail)?, 6));
            }
            if hi >= 0xDC00 || b.get(i + 6..i + 8) != Some(b"\\u") {
                return Err(Bail);
            }
            let lo = hex4(b, i + 8)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(Bail);
            }
            let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            return Ok((char::from_u32(c).ok_or(Bail)?, 12));
        }
        _ => return Err(Bail),
    };
    Ok((c, 2))
}

/// The UTF-8 encoded non-ASCII character at `b[i]` and its length; `None`
/// if `b[i]` is ASCII (or the end). Bails on an invalid sequence.
#[inline]
fn utf8_char(b: &[u8], i: usize) -> Scan<Option<(char, usize)>> {
    let lead = match b.get(i) {
        Some(&lead) if lead >= 0x80 => lead,
        _ => return Ok(None),
    };
    let cont = |k: usize, lo: u8, hi: u8| match b.get(i + k) {
        Some(&c) if (lo..=hi).contains(&c) => Ok(u32::from(c & 0x3F)),
        _ => Err(Bail),
    };
    let (cp, len) = match lead {
        0xC2..=0xDF => (u32::from(lead & 0x1F) << 6 | cont(1, 0x80, 0xBF)?, 2),
        0xE0..=0xEF => {
            let (lo, hi) = match lead {
                0xE0 => (0xA0, 0xBF),
                0xED => (0x80, 0x9F),
                _ => (0x80, 0xBF),
            };
            let cp = u32::from(lead & 0x0F) << 12 | cont(1, lo, hi)? << 6 | cont(2, 0x80, 0xBF)?;
            (cp, 3)
        }
        0xF0..=0xF4 => {
            let (lo, hi) = match lead {
                0xF0 => (0x90, 0xBF),
                0xF4 => (0x80, 0x8F),
                _ => (0x80, 0xBF),
            };
            let cp = u32::from(lead & 0x07) << 18
                | cont(1, lo, hi)? << 12
                | cont(2, 0x80, 0xBF)? << 6
                | cont(3, 0x80, 0xBF)?;
            (cp, 4)
        }
        _ => return Err(Bail),
    };
    Ok(Some((char::from_u32(cp).ok_or(Bail)?, len)))
}

fn hex4(b: &[u8], i: usize) -> Scan<u32> {
    let digits = b.get(i..i + 4).ok_or(Bail)?;
    let mut n = 0u32;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Bail),
        };
        n = n << 4 | u32::from(v);
    }
    Ok(n)
}

/// For eight bytes read little-endian: the high bit of each byte that is
/// `"`, `\` or a control character — or, if `NON_ASCII`, not ASCII. Borrows
/// only cause false hits above a true one, so the lowest hit is exact.
#[inline(always)]
fn special_bits<const NON_ASCII: bool>(x: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
    let q = x ^ (ONES * u64::from(b'"'));
    let q = q.wrapping_sub(ONES) & !q;
    let bs = x ^ (ONES * u64::from(b'\\'));
    let bs = bs.wrapping_sub(ONES) & !bs;
    (ctrl | q | bs | if NON_ASCII { x } else { 0 }) & HIGH
}

/// Position of the first `"`, `\` or control character — or, if
/// `NON_ASCII`, non-ASCII byte — in `b` from `i` (else `b.len()`).
#[inline]
fn next_special<const NON_ASCII: bool>(b: &[u8], i: usize) -> usize {
    if NON_ASCII {
        return next_special_words::<true>(b, i);
    }
    // `memchr`'s vector search for the quote or backslash that ends the run, then one
    // branch-free (vectorised) pass for a control character before it.
    let rest = b.get(i..).unwrap_or_default();
    let run = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let text = rest.get(..run).unwrap_or_default();
    if text.iter().fold(false, |any, &c| any | (c < 0x20)) {
        return i + text.iter().position(|&c| c < 0x20).unwrap_or(run);
    }
    i + run
}

/// [`next_special`] eight bytes at a time (the non-ASCII search, which `memchr` has no
/// form for; and the reference the tests hold the vector search to).
#[inline]
fn next_special_words<const NON_ASCII: bool>(b: &[u8], mut i: usize) -> usize {
    while let Some(word) = b.get(i..i + 8) {
        let hits =
            special_bits::<NON_ASCII>(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 || (NON_ASCII && c >= 0x80) {
            break;
        }
        i += 1;
    }
    i
}

impl<'a> Cursor<'a> {
    /// A string literal (after whitespace); its interior.
    #[inline(always)]
    pub fn string(&mut self) -> Scan<Span> {
        self.open(b'"')?;
        let start = self.i;
        // Short strings without escapes end in the first sixteen bytes.
        if let Some(words) = self.b.get(start..start + 16) {
            let word = |k: usize| {
                let w = words.get(k..k + 8).unwrap_or_default();
                special_bits::<false>(u64::from_le_bytes(w.try_into().unwrap_or_default()))
            };
            let (low, high) = (word(0), word(8));
            let end = start
                + if low != 0 {
                    (low.trailing_zeros() / 8) as usize
                } else {
                    8 + (high.trailing_zeros() / 8) as usize
                };
            if (low | high) != 0 && self.b.get(end) == Some(&b'"') {
                self.i = end + 1;
                return Ok(Span {
                    start,
                    end,
                    escaped: false,
                });
            }
        }
        self.string_rest(start)
    }

    /// [`Self::string`] from the byte after the opening quote.
    #[inline(never)]
    fn string_rest(&mut self, start: usize) -> Scan<Span> {
        self.i = start;
        let mut escaped = false;
        loop {
            self.i = next_special::<false>(self.b, self.i);
            match self.b.get(self.i) {
                Some(b'"') => {
                    let end = self.i;
                    self.i += 1;
                    return Ok(Span {
                        start,
                        end,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i += match self.b.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        _ => decode_escape(self.b, self.i)?.1,
                    };
                }
                _ => return Err(Bail),
            }
        }
    }

    /// A string literal (after whitespace) whose decoded text is fed to
    /// `est` as it is read; whether it was non-empty. Bails on invalid UTF-8
    /// (see [`super::chunk`]).
    pub fn string_fed(&mut self, est: &mut TokenEstimator) -> Scan<bool> {
        self.open(b'"')?;
        let b = self.b;
        let start = self.i;
        let mut i = start;
        // ASCII characters read but not yet given to `est`.
        let mut ascii = 0usize;
        loop {
            // Plain ASCII up to the next special byte.
            let at = next_special::<true>(b, i);
            ascii += at - i;
            i = at;
            let special = b.get(i).copied();
            match special {
                Some(b'"') => {
                    est.ascii(ascii);
                    self.i = i + 1;
                    return Ok(i > start);
                }
                Some(b'\\') => {
                    if let Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') =
                        b.get(i + 1)
                    {
                        ascii += 1;
                        i += 2;
                        continue;
                    }
                    let (c, len) = decode_escape(b, i)?;
                    i += len;
                    if c.is_ascii() {
                        ascii += 1;
                    } else {
                        est.ascii(ascii);
                        ascii = 0;
                        est.non_ascii(c);
                    }
                }
                Some(0x80..) => {
                    est.ascii(ascii);
                    ascii = 0;
                    // Non-ASCII characters up to the next ASCII byte.
                    while let Some((c, len)) = utf8_char(b, i)? {
                        est.non_ascii(c);
                        i += len;
                    }
                }
                _ => return Err(Bail),
            }
        }
    }

    /// An object key and its `:`.
    #[inline(always)]
    pub fn key(&mut self) -> Scan<Key<'a>> {
        let s = self.string()?;
        self.open(b':')?;
        // The value usually follows at once, or after one space.
        if self.b.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
        Ok(Key {
            raw: self.b.get(s.start..s.end).ok_or(Bail)?,
            escaped: s.escaped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_search_stops_where_the_word_search_does() {
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"plain text without an end".to_vec(),
            b"ends here\" and more".to_vec(),
            b"an escape \\n then \"".to_vec(),
            b"a tab\tbefore the quote\"".to_vec(),
            b"a quote\" before a newline\n".to_vec(),
            "non-ASCII é and 😀 then \"".as_bytes().to_vec(),
            vec![0x1f; 3],
            vec![0x7f, 0x80, 0xff, b'"'],
        ];
        // Every special byte at every place of runs long enough for the vector code.
        for len in [15, 16, 17, 31, 32, 33, 64, 100] {
            for special in [b'"', b'\\', 0x00, 0x0a, 0x1f] {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = special;
                    inputs.push(v);
                }
            }
        }
        for b in &inputs {
            for i in 0..=b.len() {
                assert_eq!(
                    next_special::<false>(b, i),
                    next_special_words::<false>(b, i),
                    "{:?} from {i}",
                    String::from_utf8_lossy(b)
                );
            }
        }
        assert_eq!(next_special::<false>(b"abc", 7), 7);
    }
}
