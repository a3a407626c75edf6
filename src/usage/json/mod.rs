//! A strict, allocation-free JSON scanner: the primitives of the fast usage
//! paths ([`super::chunk`], [`super::usage_scan`]).
//!
//! It accepts a subset of what serde_json accepts and means the same by it:
//! whitespace is `' '`, `\t`, `\n`, `\r`; strings reject control characters
//! and bad escapes; numbers follow the JSON grammar; literals are exact. On
//! anything else — invalid JSON, but also valid JSON the fast paths do not
//! model exactly (a lone `\uD800` surrogate, which serde_json accepts in some
//! positions and not in others; nesting deeper than [`MAX_DEPTH`]) — a
//! function returns [`Bail`] and the caller falls back to serde_json. The
//! scanner never panics and never allocates.

mod strings;

pub(crate) use strings::{Key, Span};

/// The scanner will not decide this input: use the serde_json path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bail;

pub(crate) type Scan<T> = Result<T, Bail>;

/// Deepest nesting [`Cursor::skip_value`] follows (serde_json's limit is
/// 128; the fast paths add fewer than 16 levels of their own).
const MAX_DEPTH: u32 = 48;

/// For eight bytes read little-endian: the high bit of each byte that is
/// not JSON whitespace (exact per byte).
#[inline(always)]
fn not_ws_bits(x: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const LOW7: u64 = ONES * 0x7F;
    // The high bit of each zero byte of `v`, without false hits.
    let zero = |v: u64| !(((v & LOW7) + LOW7) | v | LOW7);
    let ws = zero(x ^ (ONES * 0x20))
        | zero(x ^ (ONES * 0x0A))
        | zero(x ^ (ONES * 0x09))
        | zero(x ^ (ONES * 0x0D));
    !ws & (ONES << 7)
}

/// A position in a JSON text.
#[derive(Clone)]
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b, i: 0 }
    }

    /// A cursor at byte `i` of `b`.
    pub fn at(b: &'a [u8], i: usize) -> Self {
        Cursor { b, i }
    }

    pub fn pos(&self) -> usize {
        self.i
    }

    /// The whole text.
    pub fn bytes(&self) -> &'a [u8] {
        self.b
    }

    /// Skip whitespace; the next byte.
    #[inline(always)]
    pub fn ws(&mut self) -> Option<u8> {
        // Every byte above `' '` ends whitespace: one test in compact JSON.
        match self.b.get(self.i) {
            Some(&b) if b > b' ' => Some(b),
            _ => self.ws_slow(),
        }
    }

    #[inline(never)]
    fn ws_slow(&mut self) -> Option<u8> {
        let b = self.b;
        let mut i = self.i;
        while let Some(word) = b.get(i..i + 8) {
            let other = not_ws_bits(u64::from_le_bytes(word.try_into().unwrap_or_default()));
            if other != 0 {
                self.i = i + (other.trailing_zeros() / 8) as usize;
                return b.get(self.i).copied();
            }
            i += 8;
        }
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
            i += 1;
        }
        self.i = i;
        b.get(i).copied()
    }

    /// Skip whitespace and the byte `c`, which must come next.
    #[inline]
    pub fn open(&mut self, c: u8) -> Scan<()> {
        if self.ws() != Some(c) {
            return Err(Bail);
        }
        self.i += 1;
        Ok(())
    }

    /// After `{` or `[`: false (and the `close` consumed) if the container
    /// is empty.
    #[inline]
    pub fn first_member(&mut self, close: u8) -> Scan<bool> {
        if self.ws() == Some(close) {
            self.i += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After a member: true (the `,` consumed) if another follows, false
    /// (the `close` consumed) at the end of the container.
    #[inline]
    pub fn next_member(&mut self, close: u8) -> Scan<bool> {
        match self.ws() {
            Some(b',') => {
                self.i += 1;
                Ok(true)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(false)
            }
            _ => Err(Bail),
        }
    }

    /// Each member of the object at the cursor (after whitespace): `each` gets its key and
    /// reads or skips its value.
    pub fn members(
        &mut self,
        mut each: impl FnMut(&mut Self, strings::Key<'a>) -> Scan<()>,
    ) -> Scan<()> {
        self.open(b'{')?;
        let mut more = self.first_member(b'}')?;
        while more {
            let key = self.key()?;
            each(self, key)?;
            more = self.next_member(b'}')?;
        }
        Ok(())
    }

    /// Each element of the array at the cursor (after whitespace): `each` reads or skips
    /// it. How many there were.
    pub fn elements(&mut self, mut each: impl FnMut(&mut Self) -> Scan<()>) -> Scan<usize> {
        self.open(b'[')?;
        let mut n = 0;
        let mut more = self.first_member(b']')?;
        while more {
            each(self)?;
            n += 1;
            more = self.next_member(b']')?;
        }
        Ok(n)
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Scan<()> {
        match self.ws() {
            None => Ok(()),
            Some(_) => Err(Bail),
        }
    }

    /// The literal `lit` (`true`, `false`, `null`) at the cursor.
    #[inline]
    fn literal(&mut self, lit: &[u8]) -> Scan<()> {
        if self.b.get(self.i..self.i + lit.len()) != Some(lit) {
            return Err(Bail);
        }
        self.i += lit.len();
        Ok(())
    }

    /// If the next value is `null`, consume it and return true.
    #[inline]
    pub fn null(&mut self) -> Scan<bool> {
        if self.ws() != Some(b'n') {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    /// A number (after whitespace).
    pub fn number(&mut self) -> Scan<Number<'a>> {
        self.ws();
        let b = self.b;
        let mut i = self.i;
        let digits = |i: &mut usize| {
            let from = *i;
            while matches!(b.get(*i), Some(b'0'..=b'9')) {
                *i += 1;
            }
            *i - from
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        match b.get(i) {
            Some(b'0') => {
                i += 1;
                if matches!(b.get(i), Some(b'0'..=b'9')) {
                    return Err(Bail);
                }
            }
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return Err(Bail),
        }
        let int_end = i;
        let mut frac_digits = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            frac_digits = digits(&mut i);
            if frac_digits == 0 {
                return Err(Bail);
            }
        }
        let exponent = matches!(b.get(i), Some(b'e' | b'E'));
        if exponent {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(Bail);
            }
        }
        self.i = i;
        Ok(Number {
            int: b.get(int_start..int_end).unwrap_or_default(),
            frac_digits,
            exponent,
        })
    }

    /// A token count that is a plain non-negative integer up to `u64::MAX`,
    /// or `None` for `null`. Any other value bails.
    pub fn count(&mut self) -> Scan<Option<u64>> {
        let b = self.b;
        match self.ws() {
            Some(b'n') => {
                self.literal(b"null")?;
                return Ok(None);
            }
            Some(b'0'..=b'9') => {}
            _ => return Err(Bail),
        }
        let start = self.i;
        let mut i = start;
        let mut v = 0u64;
        while let Some(&d @ b'0'..=b'9') = b.get(i) {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or(Bail)?;
            i += 1;
        }
        // Leading zeros are invalid; fractions and exponents are not plain.
        if (b.get(start) == Some(&b'0') && i > start + 1)
            || matches!(b.get(i), Some(b'.' | b'e' | b'E'))
        {
            return Err(Bail);
        }
        self.i = i;
        Ok(Some(v))
    }

    /// Skip one value of any kind, validating it.
    #[inline]
    pub fn skip_value(&mut self) -> Scan<()> {
        match self.ws() {
            Some(b'"') => self.string().map(drop),
            Some(b'n') => self.literal(b"null"),
            Some(b'0'..=b'9') => self.skip_number(),
            _ => self.skip_nested(),
        }
    }

    /// A non-negative number; plain integers without the bookkeeping of
    /// [`Self::number`].
    #[inline]
    fn skip_number(&mut self) -> Scan<()> {
        let mut i = self.i + 1;
        if self.b.get(self.i) != Some(&b'0') {
            while let Some(b'0'..=b'9') = self.b.get(i) {
                i += 1;
            }
        }
        if let Some(b'0'..=b'9' | b'.' | b'e' | b'E') = self.b.get(i) {
            return self.number().map(drop);
        }
        self.i = i;
        Ok(())
    }

    /// [`Self::skip_value`] for any value, containers included.
    #[inline(never)]
    fn skip_nested(&mut self) -> Scan<()> {
        // Bit `k` of `arrays`: the container at depth `k + 1` is an array.
        let mut arrays: u64 = 0;
        let mut depth: u32 = 0;
        'value: loop {
            match self.ws() {
                Some(b'"') => {
                    self.string()?;
                }
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Bail);
                    }
                    let array = open == b'[';
                    arrays = arrays << 1 | u64::from(array);
                    if self.first_member(if array { b']' } else { b'}' })? {
                        if !array {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    depth -= 1;
                    arrays >>= 1;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                _ => return Err(Bail),
            }
            // A value ended: close containers until one has another member.
            while depth > 0 {
                let array = arrays & 1 == 1;
                if self.next_member(if array { b']' } else { b'}' })? {
                    if !array {
                        self.key()?;
                    }
                    continue 'value;
                }
                depth -= 1;
                arrays >>= 1;
            }
            return Ok(());
        }
    }
}

/// What [`Cursor::number`] saw.
pub(crate) struct Number<'a> {
    /// The integer part's digits.
    pub int: &'a [u8],
    pub frac_digits: usize,
    pub exponent: bool,
}

/// Mark a field of a serde-derived struct seen; a second occurrence bails
/// (serde's derive fails with "duplicate field").
#[inline]
pub(crate) fn once(seen: &mut bool) -> Scan<()> {
    if *seen {
        return Err(Bail);
    }
    *seen = true;
    Ok(())
}

/// Store the value of a field of a serde-derived struct, once (see
/// [`once`]).
#[inline]
pub(crate) fn once_value<T>(slot: &mut Option<T>, v: T) -> Scan<()> {
    if slot.is_some() {
        return Err(Bail);
    }
    *slot = Some(v);
    Ok(())
}
