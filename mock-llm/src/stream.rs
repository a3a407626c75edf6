//! Protocol-independent streaming. Each protocol builds a lazy, pure
//! sequence of [`Step`]s (so 1,000,000-chunk streams need no buffering and
//! the sequences can be unit-tested); this module frames them (SSE or a
//! streamed JSON array) and [`run`] sends them, applying
//! `x-mock-chunk-delay-ms` and `x-mock-drop-after`.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::body::Msg;

/// One element of a response stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Framing or metadata that is not generated content.
    Frame(T),
    /// A generated-content chunk: counted by `x-mock-drop-after`, and
    /// `x-mock-chunk-delay-ms` sleeps before every one but the first.
    Content(T),
    /// Sends nothing; marks the point right after the last content chunk,
    /// where `x-mock-drop-after: N` (N = number of content chunks) aborts.
    EndOfContent,
}

impl<T> Step<T> {
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Frame(t) => Step::Frame(f(t)),
            Step::Content(t) => Step::Content(f(t)),
            Step::EndOfContent => Step::EndOfContent,
        }
    }
}

/// An SSE event: optional `event:` name and the `data:` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<&'static str>,
    pub data: String,
}

impl Event {
    pub fn data(data: String) -> Self {
        Self { name: None, data }
    }

    pub fn named(name: &'static str, data: String) -> Self {
        Self {
            name: Some(name),
            data,
        }
    }
}

/// A framed byte stream, ready for [`run`].
pub type Steps = Box<dyn Iterator<Item = Step<Bytes>> + Send>;

/// `event: NAME` (if any) + `data: PAYLOAD` + blank line, with `\n` or `\r\n`.
pub fn sse_bytes(ev: &Event, crlf: bool) -> Bytes {
    let nl = if crlf { "\r\n" } else { "\n" };
    let out = match ev.name {
        Some(name) => format!("event: {name}{nl}data: {}{nl}{nl}", ev.data),
        None => format!("data: {}{nl}{nl}", ev.data),
    };
    Bytes::from(out)
}

/// Frames events as SSE.
pub fn sse<I>(events: I, crlf: bool) -> Steps
where
    I: Iterator<Item = Step<Event>> + Send + 'static,
{
    Box::new(events.map(move |s| s.map(|ev| sse_bytes(&ev, crlf))))
}

/// Frames JSON documents as one streamed JSON array: `[` + first,
/// `,\r\n` + each next one, then `]` (as Gemini streams without `alt=sse`).
pub fn json_array<I>(items: I) -> Steps
where
    I: Iterator<Item = Step<String>> + Send + 'static,
{
    Box::new(JsonArray {
        items,
        started: false,
        done: false,
    })
}

struct JsonArray<I> {
    items: I,
    started: bool,
    done: bool,
}

impl<I: Iterator<Item = Step<String>>> Iterator for JsonArray<I> {
    type Item = Step<Bytes>;

    fn next(&mut self) -> Option<Step<Bytes>> {
        if self.done {
            return None;
        }
        match self.items.next() {
            Some(step) => {
                let sep = if self.started { ",\r\n" } else { "[" };
                let is_doc = !matches!(step, Step::EndOfContent);
                if is_doc {
                    self.started = true;
                }
                Some(step.map(|doc| Bytes::from(format!("{sep}{doc}"))))
            }
            None => {
                self.done = true;
                let end = if self.started { "]" } else { "[]" };
                Some(Step::Frame(Bytes::from_static(end.as_bytes())))
            }
        }
    }
}

/// Sends the steps; returns `None` as soon as the client is gone.
pub async fn run(
    steps: Steps,
    drop_after: Option<u64>,
    chunk_delay: Duration,
    tx: mpsc::Sender<Msg>,
) -> Option<()> {
    let mut sent: u64 = 0;
    for step in steps {
        match step {
            Step::Frame(b) => tx.send(Msg::Data(b)).await.ok()?,
            Step::Content(b) => {
                if drop_after == Some(sent) {
                    tx.send(Msg::Abort).await.ok()?;
                    return Some(());
                }
                if sent > 0 && !chunk_delay.is_zero() {
                    tokio::time::sleep(chunk_delay).await;
                }
                tx.send(Msg::Data(b)).await.ok()?;
                sent += 1;
            }
            Step::EndOfContent => {
                if drop_after == Some(sent) {
                    tx.send(Msg::Abort).await.ok()?;
                    return Some(());
                }
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(steps: Steps) -> Vec<Step<String>> {
        steps
            .map(|s| s.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect()
    }

    #[test]
    fn sse_framing() {
        let ev = Event::named("ping", "{}".into());
        assert_eq!(sse_bytes(&ev, false), "event: ping\ndata: {}\n\n");
        assert_eq!(sse_bytes(&ev, true), "event: ping\r\ndata: {}\r\n\r\n");
        assert_eq!(sse_bytes(&Event::data("x".into()), false), "data: x\n\n");
    }

    #[test]
    fn json_array_framing() {
        let items = vec![
            Step::Content("1".to_owned()),
            Step::Content("2".to_owned()),
            Step::EndOfContent,
        ];
        let got = text(json_array(items.into_iter()));
        assert_eq!(
            got,
            vec![
                Step::Content("[1".into()),
                Step::Content(",\r\n2".into()),
                Step::EndOfContent,
                Step::Frame("]".into()),
            ]
        );
        let empty = text(json_array(std::iter::empty()));
        assert_eq!(empty, vec![Step::Frame("[]".into())]);
    }

    #[tokio::test]
    async fn drop_after_counts_content_only() {
        let steps: Vec<Step<Bytes>> = vec![
            Step::Frame(Bytes::from_static(b"a")),
            Step::Content(Bytes::from_static(b"b")),
            Step::Content(Bytes::from_static(b"c")),
            Step::EndOfContent,
            Step::Frame(Bytes::from_static(b"d")),
        ];
        for (k, want) in [(0, "a"), (1, "ab"), (2, "abc"), (3, "abcd")] {
            let (tx, mut rx) = mpsc::channel(16);
            run(
                Box::new(steps.clone().into_iter()),
                Some(k),
                Duration::ZERO,
                tx,
            )
            .await;
            let mut got = String::new();
            let mut aborted = false;
            while let Some(m) = rx.recv().await {
                match m {
                    Msg::Data(b) => got.push_str(&String::from_utf8_lossy(&b)),
                    Msg::Abort => aborted = true,
                }
            }
            assert_eq!(got, want, "drop-after {k}");
            assert_eq!(aborted, k < 3, "drop-after {k}");
        }
    }
}
