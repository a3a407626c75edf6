//! What the fast path remembers between the chunks of one stream, so that
//! it reads only what changed: [`chunk`], the entry point of the fast path
//! for a chunk.
//!
//! The chunks of a stream mostly repeat each other: in an OpenAI stream
//! every content chunk is the same JSON text but for the one `content`
//! string. Two memories use that, both exact because the walk of
//! [`super::chunk`] is a deterministic function of the bytes it has read:
//!
//! * the *template*: when the last chunk fed exactly one string to the
//!   estimators and had no `usage`, its bytes before and after that string.
//!   A chunk made of the same two pieces around a valid string literal
//!   tokenizes the same but for that string, so its summary is the last
//!   one's with `has_text` from the new string, which alone is read and fed;
//! * the *prefix*: the start of the last chunk up to the `,` after its
//!   leading top-level members other than `choices` and `usage` (`id`,
//!   `object`, `created`, `model`, ...). Reading those has no effect but
//!   validation, which the same bytes passed, so a chunk that starts with
//!   them is read from there.

use super::chunk::Walk;
use super::json::{Cursor, Scan};
use super::{ChunkSummary, Estimators};

/// The longest chunk start (and template) remembered.
const MAX_KEPT: usize = 2048;

#[derive(Debug, Default)]
pub(super) struct Memo {
    prefix: Vec<u8>,
    template: Option<Template>,
    /// Chunks read from the template.
    #[cfg(test)]
    reused: u64,
}

#[derive(Debug)]
struct Template {
    /// The last chunk up to and including the opening quote of its one fed
    /// string.
    head: Vec<u8>,
    /// The last chunk from the closing quote of that string on.
    tail: Vec<u8>,
    /// The string went to the reasoning estimator.
    reasoning: bool,
    has_choices: bool,
}

/// Summary of one chunk's JSON, feeding the estimators; see
/// [`super::slow::parse_chunk`], which gets `data` lossily decoded, and the
/// module documentation for `memo`.
pub(super) fn chunk<'a>(
    data: &'a [u8],
    est: &mut Estimators<'_>,
    memo: &mut Memo,
) -> Scan<ChunkSummary<'a>> {
    if let Some(s) = memo.reuse(data, est) {
        #[cfg(test)]
        {
            memo.reused += 1;
        }
        return Ok(s);
    }
    let resumed = !memo.prefix.is_empty() && data.starts_with(&memo.prefix);
    let mut c;
    let more;
    if resumed {
        c = Cursor::at(data, memo.prefix.len());
        more = true;
    } else {
        c = Cursor::new(data);
        c.open(b'{')?;
        more = c.first_member(b'}')?;
    }
    let mut walk = Walk {
        data,
        est,
        fed: 0,
        last_fed: (0, 0, false),
    };
    let mut s = ChunkSummary::default();
    let prefix_end = walk.members(&mut c, more, &mut s)?;
    match prefix_end {
        Some(end) if end <= MAX_KEPT => keep(&mut memo.prefix, data.get(..end)),
        Some(_) => memo.prefix.clear(),
        None if !resumed => memo.prefix.clear(),
        None => {}
    }
    let (quote, after, reasoning) = walk.last_fed;
    let head = data.get(..quote + 1);
    let tail = data.get(after.saturating_sub(1)..);
    match (head, tail) {
        (Some(head), Some(tail))
            if walk.fed == 1 && s.usage.is_none() && head.len() + tail.len() <= MAX_KEPT =>
        {
            let t = memo.template.get_or_insert_with(|| Template {
                head: Vec::new(),
                tail: Vec::new(),
                reasoning,
                has_choices: s.has_choices,
            });
            keep(&mut t.head, Some(head));
            keep(&mut t.tail, Some(tail));
            t.reasoning = reasoning;
            t.has_choices = s.has_choices;
        }
        _ => memo.template = None,
    }
    Ok(s)
}

/// Make `kept` equal to `bytes`, copying only if they differ.
fn keep(kept: &mut Vec<u8>, bytes: Option<&[u8]>) {
    let bytes = bytes.unwrap_or_default();
    if kept != bytes {
        kept.clear();
        kept.extend_from_slice(bytes);
    }
}

impl Memo {
    /// The summary of `data` from the template, if it fits.
    fn reuse<'a>(&self, data: &'a [u8], est: &mut Estimators<'_>) -> Option<ChunkSummary<'a>> {
        let t = self.template.as_ref()?;
        let closing = data.len().checked_sub(t.tail.len())?;
        if closing < t.head.len() || !data.starts_with(&t.head) || !data.ends_with(&t.tail) {
            return None;
        }
        let target = if t.reasoning {
            &mut *est.reasoning
        } else {
            &mut *est.content
        };
        let mut fed = *target;
        let mut c = Cursor::at(data, t.head.len() - 1);
        let text = c.string_fed(&mut fed).ok()?;
        if c.pos() != closing + 1 {
            return None;
        }
        *target = fed;
        Some(ChunkSummary {
            has_choices: t.has_choices,
            has_text: text,
            usage: None,
        })
    }
}

#[cfg(test)]
impl Memo {
    pub(super) fn reused(&self) -> u64 {
        self.reused
    }
}
