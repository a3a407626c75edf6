//! What the fast path remembers between the chunks of one stream, so that
//! it reads only what changed: [`chunk`], the entry point of the fast path
//! for a chunk.
//!
//! The chunks of a stream mostly repeat each other: in an OpenAI stream
//! every content chunk is the same JSON text but for the `content` string
//! (and, in some streams, an `obfuscation` string, an id or a timestamp).
//! After a chunk is walked ([`super::chunk`]) whose walk fed at most one
//! string to the estimators and found no `usage`, it is kept as a
//! *template* with its [`Slot`]s: that string, and the string and number
//! values of members the walk skipped. A later chunk that is the template
//! with only slots changed — each still one valid token of the same kind —
//! has the same walk but for the fed string: its summary is the template's,
//! with `has_text` from the new string, which is fed. Exact, because the
//! walk's decisions depend only on the other bytes, and a skipped value's
//! only effect is its validation, done here too. Checking a template is a
//! comparison of the bytes between slots plus a scan of the slots, and of
//! just the fed string when nothing else changed.

use super::chunk::{Slot, SlotKind, Walk};
use super::json::{Cursor, Scan};
use super::{ChunkSummary, Estimators};

/// The longest chunk kept as a template.
const MAX_KEPT: usize = 2048;

#[derive(Debug, Default)]
pub(super) struct Memo {
    template: Option<Template>,
    /// A spare slot list (kept to not allocate per chunk).
    spare: Vec<Slot>,
    /// Chunks read from the template.
    #[cfg(test)]
    reused: u64,
}

#[derive(Debug)]
struct Template {
    /// The chunk it was made from.
    bytes: Vec<u8>,
    /// Its slots, in text order.
    slots: Vec<Slot>,
    /// The fed slot, if any: its index in `slots`.
    fed: Option<usize>,
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
    if let Some(s) = memo.template.as_ref().and_then(|t| t.reuse(data, est)) {
        #[cfg(test)]
        {
            memo.reused += 1;
        }
        return Ok(s);
    }
    let mut slots = std::mem::take(&mut memo.spare);
    slots.clear();
    let mut walk = Walk {
        data,
        est,
        fed: 0,
        slots: &mut slots,
    };
    let s = walk.chunk(&mut Cursor::new(data));
    let fed = walk.fed;
    let s = match s {
        Ok(s) => s,
        Err(bail) => {
            memo.spare = slots;
            return Err(bail);
        }
    };
    if fed <= 1 && s.usage.is_none() && data.len() <= MAX_KEPT {
        slots.sort_unstable_by_key(|slot| slot.start);
        let fed = slots
            .iter()
            .position(|slot| matches!(slot.kind, SlotKind::Fed(_)));
        let t = memo.template.get_or_insert_with(|| Template {
            bytes: Vec::new(),
            slots: Vec::new(),
            fed,
            has_choices: s.has_choices,
        });
        if t.bytes != data {
            t.bytes.clear();
            t.bytes.extend_from_slice(data);
        }
        std::mem::swap(&mut t.slots, &mut slots);
        t.fed = fed;
        t.has_choices = s.has_choices;
    } else {
        memo.template = None;
    }
    memo.spare = slots;
    Ok(s)
}

impl Template {
    /// The summary of `data` from this template, if it fits.
    fn reuse<'a>(&self, data: &'a [u8], est: &mut Estimators<'_>) -> Option<ChunkSummary<'a>> {
        let end = self.bytes.len();
        let mut has_text = false;
        match self.fed.and_then(|k| Some((k, self.slots.get(k)?))) {
            None => {
                self.region(data, 0, 0..end, &self.slots, true)?;
            }
            Some((k, fed)) => {
                let at = self.region(data, 0, 0..fed.start, self.slots.get(..k)?, false)?;
                let reasoning = fed.kind == SlotKind::Fed(true);
                let target = if reasoning {
                    &mut *est.reasoning
                } else {
                    &mut *est.content
                };
                let mut copy = *target;
                let mut c = Cursor::at(data, at);
                has_text = c.string_fed(&mut copy).ok()?;
                self.region(data, c.pos(), fed.end..end, self.slots.get(k + 1..)?, true)?;
                *target = copy;
            }
        }
        Some(ChunkSummary {
            has_choices: self.has_choices,
            has_text,
            usage: None,
        })
    }

    /// Match the template's bytes `range`, which holds `slots` (none of
    /// them fed), against `data` from `at`: the position after them. The
    /// whole range is compared first; if it differs, slot by slot, a slot
    /// that differs being checked to be a valid token of its kind. `last`:
    /// the range ends the template, so must end `data`.
    fn region(
        &self,
        data: &[u8],
        mut at: usize,
        range: std::ops::Range<usize>,
        slots: &[Slot],
        last: bool,
    ) -> Option<usize> {
        let matches = |at: usize, bytes: &[u8]| match data.get(at..) {
            Some(rest) if last && bytes.len() == rest.len() => rest == bytes,
            Some(rest) => !last && rest.starts_with(bytes),
            None => false,
        };
        let whole = self.bytes.get(range.clone())?;
        if matches(at, whole) {
            return Some(at + whole.len());
        }
        let mut from = range.start;
        for slot in slots {
            // The slot unchanged, with the bytes before it.
            let unchanged = self.bytes.get(from..slot.end)?;
            if data.get(at..)?.starts_with(unchanged) {
                at += unchanged.len();
                from = slot.end;
                continue;
            }
            let fixed = self.bytes.get(from..slot.start)?;
            if !data.get(at..)?.starts_with(fixed) {
                return None;
            }
            at += fixed.len();
            let mut c = Cursor::at(data, at);
            match (slot.kind, data.get(at)?) {
                (SlotKind::Str, b'"') => c.string().ok().map(drop)?,
                (SlotKind::Num, b'-' | b'0'..=b'9') => c.number().ok().map(drop)?,
                _ => return None,
            }
            at = c.pos();
            from = slot.end;
        }
        let rest = self.bytes.get(from..range.end)?;
        matches(at, rest).then_some(at + rest.len())
    }
}

#[cfg(test)]
impl Memo {
    pub(super) fn reused(&self) -> u64 {
        self.reused
    }
}
