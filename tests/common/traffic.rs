//! Steady client traffic for upgrade tests: non-streaming and streaming chat requests in a
//! loop until told to stop, each checked for a 200 and, for streams, every chunk and `[DONE]`.

use super::sse_data;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Content chunks in each streamed answer.
pub const STREAM_CHUNKS: usize = 20;

#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub streams_ok: AtomicU64,
    pub failures: Mutex<Vec<String>>,
    /// The process that served each successful request (from its request id).
    pub pids: Mutex<Vec<u32>>,
}

/// The process id a gateway request id (`tg-<pid hex>-<seq>`) names.
pub fn served_by(request_id: &str) -> u32 {
    request_id
        .split('-')
        .nth(1)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

/// Send requests to the gateway on `port` until `stop`; streams of `STREAM_CHUNKS` chunks
/// `chunk_delay_ms` apart. A new connection per request: an idle keep-alive connection
/// closed by the old process races with a client reusing it, a limit of HTTP/1.1 itself and
/// not of the upgrade.
pub async fn traffic(
    port: u16,
    stream: bool,
    chunk_delay_ms: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    t0: Instant,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    while !stop.load(Ordering::Relaxed) {
        let body = json!({"model": "mock-x", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let mut req = client.post(&url).json(&body);
        if stream {
            req = req
                .header("x-mock-chunks", STREAM_CHUNKS.to_string())
                .header("x-mock-chunk-delay-ms", chunk_delay_ms.to_string());
        }
        let result = async {
            let resp = req.send().await.map_err(|e| format!("send: {e:?}"))?;
            let status = resp.status();
            let id = resp
                .headers()
                .get("x-request-id")
                .map(|v| v.to_str().unwrap_or("").to_string());
            let text = resp.text().await.map_err(|e| format!("body: {e:?}"))?;
            if status != 200 {
                return Err(format!("status {status}: {text}"));
            }
            if stream {
                let events = sse_data(&text);
                let chunks = events
                    .iter()
                    .filter(|e| e.contains("\"content\":\"") && !e.contains("\"content\":\"\""))
                    .count();
                if chunks != STREAM_CHUNKS || events.last().map(String::as_str) != Some("[DONE]") {
                    return Err(format!("truncated stream: {chunks} chunks"));
                }
            }
            Ok(id.unwrap_or_default())
        }
        .await;
        match result {
            Ok(id) => {
                if stream {
                    tally.streams_ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                }
                tally.pids.lock().unwrap().push(served_by(&id));
            }
            Err(e) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("at {:?} stream={stream}: {e}", t0.elapsed())),
        }
    }
}
