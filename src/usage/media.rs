//! Metering the answers that are not text generation: images, speech, transcriptions,
//! rerank and moderations, each in the unit its provider bills ([`Units`]).
//!
//! - Images: tokens when the answer reports them (`gpt-image-1`), else the images in
//!   `data` (the `n` asked for when the answer is too large to keep).
//! - Speech: the characters of the request's `input` (the answer is audio); tokens when a
//!   speech stream reports them (`speech.audio.done`).
//! - Transcriptions and translations: tokens when reported (`usage.type: "tokens"`), else
//!   audio seconds (`usage.seconds`, `verbose_json`'s `duration`, or the end of the last cue
//!   of an `srt`/`vtt` answer); a streamed transcription's usage from `transcript.text.done`.
//! - Rerank: tokens when reported (Jina, vLLM), else Cohere's `meta.billed_units.search_units`.
//! - Moderations: tokens when reported; OpenAI's moderation is free and reports none.
//!
//! The answer passes through unchanged; a JSON or text answer is kept (at most
//! [`MAX_KEPT`] bytes) to be read at its end, an audio answer is not kept, and a stream is
//! read event by event.

use super::{usage_from_json, Units, Usage};
use crate::sse::SseParser;
use bytes::Bytes;
use serde_json::Value;

/// How the answer of a media (or other non-generation) endpoint is metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// Tokens when the answer reports them (`gpt-image-1`), else the images returned.
    Images,
    /// The characters of the request's `input` (the answer is audio).
    Speech,
    /// Tokens when reported, else audio seconds (`usage.seconds`, `duration`, the last cue).
    Transcription,
    /// Tokens when reported (Jina, vLLM), else search units (Cohere's `billed_units`).
    Rerank,
    /// Tokens when reported; OpenAI's moderation is free and reports none.
    Moderation,
}

/// Largest answer kept to be read for its usage.
pub const MAX_KEPT: usize = 32 * 1024 * 1024;

/// The meter of one media answer.
#[derive(Debug)]
pub struct MediaMeter {
    kind: MediaKind,
    /// What the request asked for: the images (`n`) or the characters to speak.
    asked: u64,
    read: Read,
    /// Usage a stream reported.
    reported: Option<Usage>,
}

#[derive(Debug)]
enum Read {
    /// A JSON or text answer, kept while it fits.
    Keep { body: Vec<u8>, overflowed: bool },
    /// A stream, read event by event.
    Stream(SseParser),
    /// Audio: nothing to read.
    Skip,
}

impl MediaMeter {
    /// `content_type` is the answer's; `asked` what the request asked for (images or
    /// characters).
    pub fn new(kind: MediaKind, asked: u64, content_type: &str) -> Self {
        let read = if content_type.starts_with("text/event-stream") {
            Read::Stream(SseParser::new())
        } else if content_type.starts_with("application/json") || content_type.starts_with("text/")
        {
            Read::Keep {
                body: Vec::new(),
                overflowed: false,
            }
        } else {
            Read::Skip
        };
        MediaMeter {
            kind,
            asked,
            read,
            reported: None,
        }
    }

    /// A chunk of the answer.
    pub fn push(&mut self, chunk: &Bytes) {
        match &mut self.read {
            Read::Keep { body, overflowed } => {
                if body.len() + chunk.len() <= MAX_KEPT {
                    body.extend_from_slice(chunk);
                } else {
                    *overflowed = true;
                }
            }
            Read::Stream(parser) => {
                let reported = &mut self.reported;
                parser.push_bytes_ref(chunk, |e| {
                    if let Some(u) = event_usage(e.data_bytes()) {
                        *reported = Some(u);
                    }
                });
            }
            Read::Skip => {}
        }
    }

    /// The answer is kept whole to be read (JSON or text, not audio, not a stream).
    pub fn kept(&self) -> bool {
        matches!(self.read, Read::Keep { .. })
    }

    /// Bytes held of a stream event not yet complete (bounded by the caller).
    pub fn pending_bytes(&self) -> usize {
        match &self.read {
            Read::Stream(parser) => parser.pending().len(),
            _ => 0,
        }
    }

    /// The usage of the whole answer.
    pub fn usage(&self) -> Usage {
        let asked = Usage {
            units: self.asked_units(),
            ..Usage::default()
        };
        match &self.read {
            Read::Stream(_) => self.reported.unwrap_or(asked),
            Read::Skip => asked,
            Read::Keep {
                overflowed: true, ..
            } => asked,
            Read::Keep { body, .. } => match serde_json::from_slice::<Value>(body) {
                Ok(v) => self.stated(body, &v).unwrap_or(asked),
                Err(_) if self.kind == MediaKind::Transcription => Usage {
                    units: Units {
                        audio_ms: last_cue_ms(&String::from_utf8_lossy(body)),
                        ..Units::NONE
                    },
                    ..Usage::default()
                },
                Err(_) => asked,
            },
        }
    }

    /// What the request asked for, as units: images or characters.
    fn asked_units(&self) -> Units {
        match self.kind {
            MediaKind::Images => Units {
                images: self.asked,
                ..Units::NONE
            },
            MediaKind::Speech => Units {
                characters: self.asked,
                ..Units::NONE
            },
            _ => Units::NONE,
        }
    }

    /// The usage a JSON answer (`body`, parsed as `v`) states, in the kind's unit.
    fn stated(&self, body: &[u8], v: &Value) -> Option<Usage> {
        let tokens = usage_from_json(body);
        let mut usage = tokens.unwrap_or_default();
        match self.kind {
            MediaKind::Images if tokens.is_none() => {
                let made = v.get("data").and_then(Value::as_array)?.len();
                usage.units.images = made as u64;
            }
            MediaKind::Transcription if tokens.is_none() => {
                let seconds = v
                    .pointer("/usage/seconds")
                    .or_else(|| v.get("duration"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                usage.units.audio_ms = (seconds.max(0.0) * 1000.0).round() as u64;
            }
            MediaKind::Rerank if tokens.is_none() => {
                let units = v.pointer("/meta/billed_units/search_units");
                usage.units.search_units = units.and_then(Value::as_u64).unwrap_or(0);
                if let Some(n) = v
                    .pointer("/meta/billed_units/input_tokens")
                    .and_then(Value::as_u64)
                {
                    usage.input_tokens = n;
                }
            }
            MediaKind::Speech => usage.units = self.asked_units(),
            _ => {}
        }
        Some(usage)
    }
}

/// The usage a stream event reports (`transcript.text.done`, `speech.audio.done`).
fn event_usage(data: &[u8]) -> Option<Usage> {
    // Only events that carry one are parsed (audio deltas are large and have none).
    memchr::memmem::find(data, b"\"usage\"")?;
    let v: Value = serde_json::from_slice(data).ok()?;
    let u = v.get("usage")?;
    if let Some(seconds) = u.get("seconds").and_then(Value::as_f64) {
        return Some(Usage {
            units: Units {
                audio_ms: (seconds.max(0.0) * 1000.0).round() as u64,
                ..Units::NONE
            },
            ..Usage::default()
        });
    }
    usage_from_json(data)
}

/// The end of the last cue of an `srt` or `vtt` answer (`00:01:02,500 --> 00:01:04,000`),
/// in milliseconds; 0 when there is none (a plain `text` answer states no length).
fn last_cue_ms(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once("-->"))
        .filter_map(|(_, end)| timestamp_ms(end.split_whitespace().next()?))
        .max()
        .unwrap_or(0)
}

/// `HH:MM:SS,mmm` (srt) or `[HH:]MM:SS.mmm` (vtt) in milliseconds.
fn timestamp_ms(t: &str) -> Option<u64> {
    let (clock, millis) = t.split_once([',', '.'])?;
    let millis: u64 = millis.get(..3)?.parse().ok()?;
    let mut seconds = 0u64;
    for part in clock.split(':') {
        seconds = seconds.checked_mul(60)?.checked_add(part.parse().ok()?)?;
    }
    seconds.checked_mul(1000)?.checked_add(millis)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn metered(kind: MediaKind, asked: u64, content_type: &str, body: &str) -> Usage {
        let mut m = MediaMeter::new(kind, asked, content_type);
        let bytes = Bytes::copy_from_slice(body.as_bytes());
        // Every split point gives the same usage.
        let whole = {
            m.push(&bytes);
            m.usage()
        };
        for cut in 0..bytes.len() {
            let mut m = MediaMeter::new(kind, asked, content_type);
            m.push(&bytes.slice(..cut));
            m.push(&bytes.slice(cut..));
            assert_eq!(m.usage(), whole, "split at {cut}");
        }
        whole
    }

    const JSON: &str = "application/json";

    #[test]
    fn images_in_tokens_or_images() {
        let u = metered(
            MediaKind::Images,
            3,
            JSON,
            r#"{"data":[{"url":"a"},{"url":"b"}]}"#,
        );
        assert_eq!((u.units.images, u.input_tokens), (2, 0));
        let u = metered(
            MediaKind::Images,
            1,
            JSON,
            r#"{"data":[{"b64_json":"x"}],"usage":{"input_tokens":50,"output_tokens":4160,"total_tokens":4210,"input_tokens_details":{"text_tokens":50,"image_tokens":0}}}"#,
        );
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.units.images),
            (50, 4160, 0)
        );
        // Not JSON (cut short): what was asked.
        assert_eq!(metered(MediaKind::Images, 3, JSON, "{").units.images, 3);
    }

    #[test]
    fn speech_in_characters_or_stream_tokens() {
        let u = metered(MediaKind::Speech, 42, "audio/mpeg", "ID3\u{0}binary");
        assert_eq!(u.units.characters, 42);
        let stream = "data: {\"type\":\"speech.audio.delta\",\"audio\":\"AAAA\"}\n\n\
                      data: {\"type\":\"speech.audio.done\",\"usage\":{\"input_tokens\":14,\"output_tokens\":101,\"total_tokens\":115}}\n\n";
        let u = metered(MediaKind::Speech, 42, "text/event-stream", stream);
        assert_eq!((u.input_tokens, u.output_tokens), (14, 101));
    }

    #[test]
    fn transcriptions_in_tokens_or_seconds() {
        let u = metered(
            MediaKind::Transcription,
            0,
            JSON,
            r#"{"text":"hi","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},"output_tokens":45,"total_tokens":59}}"#,
        );
        assert_eq!((u.input_tokens, u.output_tokens), (14, 45));
        let u = metered(
            MediaKind::Transcription,
            0,
            JSON,
            r#"{"text":"hi","usage":{"type":"duration","seconds":9}}"#,
        );
        assert_eq!(u.units.audio_ms, 9000);
        let u = metered(
            MediaKind::Transcription,
            0,
            JSON,
            r#"{"task":"transcribe","duration":8.47,"text":"hi"}"#,
        );
        assert_eq!(u.units.audio_ms, 8470);
        let srt =
            "1\n00:00:00,000 --> 00:00:02,500\nHello\n\n2\n00:01:02,500 --> 00:01:04,120\nBye\n";
        let u = metered(MediaKind::Transcription, 0, "text/plain", srt);
        assert_eq!(u.units.audio_ms, 64_120);
        let vtt = "WEBVTT\n\n00:01.000 --> 00:03.250\nHi\n";
        assert_eq!(
            metered(MediaKind::Transcription, 0, "text/vtt", vtt)
                .units
                .audio_ms,
            3_250
        );
        let stream = "event: transcript.text.delta\ndata: {\"type\":\"transcript.text.delta\",\"delta\":\"hi\"}\n\n\
                      data: {\"type\":\"transcript.text.done\",\"text\":\"hi\",\"usage\":{\"type\":\"tokens\",\"input_tokens\":7,\"output_tokens\":2,\"total_tokens\":9}}\n\n";
        let u = metered(MediaKind::Transcription, 0, "text/event-stream", stream);
        assert_eq!((u.input_tokens, u.output_tokens), (7, 2));
    }

    #[test]
    fn rerank_in_tokens_or_search_units() {
        let u = metered(
            MediaKind::Rerank,
            0,
            JSON,
            r#"{"results":[{"index":0,"relevance_score":0.9}],"usage":{"total_tokens":38}}"#,
        );
        assert_eq!((u.input_tokens, u.output_tokens), (38, 0));
        let u = metered(
            MediaKind::Rerank,
            0,
            JSON,
            r#"{"results":[],"meta":{"billed_units":{"search_units":1}}}"#,
        );
        assert_eq!(u.units.search_units, 1);
    }

    #[test]
    fn moderations_report_nothing() {
        let u = metered(MediaKind::Moderation, 0, JSON, r#"{"id":"m","results":[]}"#);
        assert_eq!(u, Usage::default());
    }
}
