//! Keeping provider secrets and raw upstream bytes away from clients.
//!
//! - `Scrubber`: finds any of a provider's key values (all its keys, not only the one an
//!   attempt used) in bytes, built once per provider at config load (one Aho-Corasick
//!   automaton). Used on every response header sent to a client, and on the body of every
//!   error answer passed through (bounded). Successful bodies, streamed or not, are never
//!   scanned: they are the model's output, and scanning them would cost every token.
//! - `StreamScrub`: the same over a body that arrives in chunks, a key possibly split
//!   between two of them.
//! - `excerpt`: a short, UTF-8-safe, single-line quote of text from an upstream, for error
//!   messages.

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;

/// What a key value is replaced with.
pub const REDACTED: &[u8] = b"[redacted]";

/// Key values shorter than this are not scrubbed: they are placeholders (`none`, `EMPTY`
/// for a local server), not secrets, and scrubbing them would mangle ordinary text.
pub const MIN_SECRET_LEN: usize = 8;

/// The longest quote of upstream text in an error message, in bytes (an ellipsis marks a cut).
pub const EXCERPT_MAX: usize = 256;

/// Finds a provider's key values.
#[derive(Default)]
pub struct Scrubber {
    finder: Option<AhoCorasick>,
    /// Length of the longest key value.
    longest: usize,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("active", &self.finder.is_some())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber for `secrets` (values shorter than `MIN_SECRET_LEN` are skipped).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let secrets: Vec<&str> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        if secrets.is_empty() {
            return Scrubber::default();
        }
        let longest = secrets.iter().map(|s| s.len()).max().unwrap_or(0);
        match AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&secrets)
        {
            Ok(finder) => Scrubber {
                finder: Some(finder),
                longest,
            },
            Err(e) => {
                // Only for absurd key sets (beyond the automaton's size limits).
                log::error!("cannot build the key scrubber: {e}");
                Scrubber::default()
            }
        }
    }

    /// False when there is no key to look for.
    pub fn is_active(&self) -> bool {
        self.finder.is_some()
    }

    /// True when `data` holds a key value.
    pub fn found_in(&self, data: &[u8]) -> bool {
        self.finder.as_ref().is_some_and(|f| f.is_match(data))
    }

    /// `data` with every key value replaced by `[redacted]` (`None` when there is none).
    pub fn scrub(&self, data: &[u8]) -> Option<Vec<u8>> {
        let finder = self.finder.as_ref()?;
        let mut matches = finder.find_iter(data).peekable();
        matches.peek()?;
        let mut out = Vec::with_capacity(data.len());
        let mut pos = 0;
        for m in matches {
            out.extend_from_slice(&data[pos..m.start()]);
            out.extend_from_slice(REDACTED);
            pos = m.end();
        }
        out.extend_from_slice(&data[pos..]);
        Some(out)
    }

    /// `text` with every key value replaced.
    pub fn scrub_text(&self, text: String) -> String {
        match self.scrub(text.as_bytes()) {
            // Only whole (UTF-8) key values were replaced by ASCII, so this stays UTF-8.
            Some(out) => String::from_utf8_lossy(&out).into_owned(),
            None => text,
        }
    }

    /// Scrub every value of a response header (an allocation only for a value that holds
    /// a key).
    pub fn scrub_headers(&self, resp: &mut pingora_http::ResponseHeader) {
        if self.finder.is_none() {
            return;
        }
        let dirty: Vec<http::HeaderName> = resp
            .headers
            .iter()
            .filter(|(_, v)| self.found_in(v.as_bytes()))
            .map(|(n, _)| n.clone())
            .collect();
        for name in dirty {
            let values: Vec<Vec<u8>> = resp
                .headers
                .get_all(&name)
                .iter()
                .map(|v| {
                    self.scrub(v.as_bytes())
                        .unwrap_or_else(|| v.as_bytes().to_vec())
                })
                .collect();
            resp.remove_header(&name);
            for v in values {
                if let Ok(v) = http::HeaderValue::from_bytes(&v) {
                    let _ = resp.append_header(name.clone(), v);
                }
            }
        }
    }
}

/// Scrubs a chunked body: holds back the last bytes of each chunk that could be the start
/// of a key value completed by the next chunk (fewer than the longest key).
#[derive(Debug, Default)]
pub struct StreamScrub {
    carry: Vec<u8>,
}

impl StreamScrub {
    /// The next chunk; returns what can be sent now.
    pub fn push(&mut self, scrubber: &Scrubber, chunk: Bytes) -> Bytes {
        let Some(finder) = scrubber.finder.as_ref() else {
            return chunk;
        };
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(&chunk);
        // A key not yet complete starts in the last `longest - 1` bytes.
        let hold = data
            .len()
            .saturating_sub(scrubber.longest.saturating_sub(1));
        let mut out = Vec::with_capacity(data.len());
        let mut pos = 0;
        for m in finder.find_iter(&data) {
            if m.start() >= hold {
                break;
            }
            out.extend_from_slice(&data[pos..m.start()]);
            out.extend_from_slice(REDACTED);
            pos = m.end();
        }
        let send_to = hold.max(pos);
        out.extend_from_slice(&data[pos..send_to]);
        self.carry = data[send_to..].to_vec();
        out.into()
    }

    /// The end of the body: what was held back, scrubbed.
    pub fn finish(&mut self, scrubber: &Scrubber) -> Bytes {
        let carry = std::mem::take(&mut self.carry);
        match scrubber.scrub(&carry) {
            Some(out) => out.into(),
            None => carry.into(),
        }
    }
}

/// At most `EXCERPT_MAX` bytes of `text` on one line: cut at a character boundary, control
/// characters escaped (`\n`, `\u{1b}`), an ellipsis where it was cut.
pub fn excerpt(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(EXCERPT_MAX));
    const ELLIPSIS: char = '…';
    let room = EXCERPT_MAX - ELLIPSIS.len_utf8();
    for c in text.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > room {
            out.truncate(before);
            out.push(ELLIPSIS);
            return out;
        }
    }
    out
}

/// `excerpt` of bytes that may not be UTF-8 (only the first bytes are decoded).
pub fn excerpt_bytes(data: &[u8]) -> String {
    // Decoding more than the bound can only be cut away again.
    let head = &data[..data.len().min(EXCERPT_MAX * 2)];
    excerpt(&String::from_utf8_lossy(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_every_key_and_split_keys() {
        let s = Scrubber::new(["sk-aaaaaaaa1", "sk-bbbbbbbb22", "short"]);
        let text = b"key sk-aaaaaaaa1 and sk-bbbbbbbb22, short stays";
        let out = s.scrub(text).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "key [redacted] and [redacted], short stays"
        );
        assert!(s.scrub(b"nothing here").is_none());
        assert!(Scrubber::new(["tiny"]).scrub(b"tiny").is_none());
        // Every split of the body into two chunks gives the same result.
        let whole = String::from_utf8(s.scrub(text).unwrap()).unwrap();
        let chunk = |b: &[u8]| Bytes::copy_from_slice(b);
        for cut in 0..=text.len() {
            let mut st = StreamScrub::default();
            let mut out = st.push(&s, chunk(&text[..cut])).to_vec();
            out.extend_from_slice(&st.push(&s, chunk(&text[cut..])));
            out.extend_from_slice(&st.finish(&s));
            assert_eq!(String::from_utf8(out).unwrap(), whole, "cut at {cut}");
        }
        // Byte by byte.
        let mut st = StreamScrub::default();
        let mut out = Vec::new();
        for b in text {
            out.extend_from_slice(&st.push(&s, chunk(&[*b])));
        }
        out.extend_from_slice(&st.finish(&s));
        assert_eq!(String::from_utf8(out).unwrap(), whole);
        // No keys: nothing held back.
        let none = Scrubber::default();
        let mut st = StreamScrub::default();
        assert_eq!(&st.push(&none, chunk(b"abc"))[..], b"abc");
    }

    #[test]
    fn header_values_scrubbed() {
        let s = Scrubber::new(["sk-secret-123456"]);
        let mut resp = pingora_http::ResponseHeader::build(200, None).unwrap();
        resp.append_header("x-echo", "Bearer sk-secret-123456")
            .unwrap();
        resp.append_header("x-echo", "fine").unwrap();
        resp.append_header("x-other", "ok").unwrap();
        s.scrub_headers(&mut resp);
        let echo: Vec<_> = resp.headers.get_all("x-echo").iter().collect();
        assert_eq!(echo, ["Bearer [redacted]", "fine"]);
        assert_eq!(resp.headers["x-other"], "ok");
    }

    #[test]
    fn excerpts_are_short_and_safe() {
        let long = "é".repeat(10_000);
        let e = excerpt(&long);
        assert!(e.len() <= EXCERPT_MAX && e.ends_with('…'), "{}", e.len());
        assert_eq!(excerpt("a\nb\u{1b}c"), "a\\nb\\u{1b}c");
        assert_eq!(excerpt("short"), "short");
        let garbage: Vec<u8> = (0..14_000u32).map(|i| (i % 256) as u8).collect();
        let e = excerpt_bytes(&garbage);
        assert!(e.len() <= EXCERPT_MAX);
        assert!(!e.chars().any(char::is_control));
    }
}
