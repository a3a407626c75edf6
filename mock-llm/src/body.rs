//! Response bodies: fixed (`Full`) or channel-backed streams that can abort
//! mid-response (for `x-mock-drop-after`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio::time::Sleep;

pub type RespBody = UnsyncBoxBody<Bytes, io::Error>;

pub enum Msg {
    Data(Bytes),
    /// Abort the response: the body yields an error, so hyper resets the
    /// stream/connection without a clean end.
    Abort,
}

pub fn full(bytes: Bytes) -> RespBody {
    Full::new(bytes)
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed_unsync()
}

/// Channel-backed body. On [`Msg::Abort`] the body first returns Pending
/// (so an HTTP/1 connection flushes what it already has), waits `grace`
/// (HTTP/2 writes frames from another task, so give it time to send the
/// DATA frames before the RST_STREAM), then yields an error.
pub fn channel(mut rx: mpsc::Receiver<Msg>, grace: Duration) -> RespBody {
    let mut aborting = false;
    let mut grace_timer: Option<Pin<Box<Sleep>>> = None;
    let stream = futures_util::stream::poll_fn(move |cx| {
        if aborting {
            if let Some(timer) = grace_timer.as_mut() {
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "mock-llm: x-mock-drop-after",
            ))));
        }
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Msg::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Msg::Abort)) => {
                aborting = true;
                if !grace.is_zero() {
                    grace_timer = Some(Box::pin(tokio::time::sleep(grace)));
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    });
    StreamBody::new(stream).boxed_unsync()
}
