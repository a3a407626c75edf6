//! `tollgate-sse-load`: a bounded SSE load client for `load/run.sh`.
//!
//! Holds `--concurrency N` keep-alive HTTP/1.1 connections to `--addr` (loopback only). Each
//! connection repeatedly POSTs a streaming chat request and reads the Server-Sent Events to
//! the end, until `--duration` seconds have passed since the start; the first streams are
//! spread over `--ramp-ms`. Every stream is bounded by `--timeout` seconds, and the whole
//! process by duration + ramp + timeout + 5 s, after which it prints what it has and exits.
//!
//! Per stream it records, against `t0` = just before the request is written:
//! * TTFT: arrival of the first event carrying non-empty `content`;
//! * chunk delay: for content event `i` (0-based), `arrival_i - t0 - i * pace` — how late the
//!   chunk is against its nominal time (upstream pacing drift included, which is the same for
//!   every target, so differences between targets are what the proxy added);
//! * gap: `arrival_i - arrival_{i-1}`;
//! * errors: connect / IO / timeout / non-200 status / fewer or more content events than
//!   `--chunks` / no `data: [DONE]`.
//!
//! With `--rss-pid PID` (repeatable) it samples the summed `VmRSS` of those processes every
//! 100 ms together with the number of active streams, and reports the idle RSS (before the
//! first stream), the peak, and (peak − baseline) ÷ most streams open at once, where the
//! baseline is `--rss-baseline-kb` (e.g. taken before a warm-up) or else the idle RSS.
//!
//! Output: one JSON object on stdout (all times in microseconds).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
struct Args {
    addr: String,
    path: String,
    model: String,
    concurrency: usize,
    duration: Duration,
    ramp: Duration,
    timeout: Duration,
    headers: Vec<String>,
    chunks: usize,
    pace_us: u64,
    rss_pids: Vec<u32>,
    rss_baseline_kb: Option<u64>,
    label: String,
    /// `--held 1`: count content events as a gateway holding text back sends them.
    held: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: tollgate-sse-load --addr 127.0.0.1:PORT [--path /v1/chat/completions] \
         [--model M] --concurrency N --duration SECS [--ramp-ms MS] [--timeout SECS] \
         [--header 'name: value']... [--chunks 64] [--pace-ms 20] [--rss-pid PID]... [--rss-baseline-kb KB] [--label L] [--held 1]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: String::new(),
        path: "/v1/chat/completions".into(),
        model: "mock-gpt-4o".into(),
        concurrency: 1,
        duration: Duration::from_secs(5),
        ramp: Duration::from_millis(1000),
        timeout: Duration::from_secs(20),
        headers: Vec::new(),
        chunks: 64,
        pace_us: 20_000,
        rss_pids: Vec::new(),
        rss_baseline_kb: None,
        label: String::new(),
        held: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(v) = it.next() else { usage() };
        let num = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| usage()) };
        match flag.as_str() {
            "--addr" => a.addr = v,
            "--path" => a.path = v,
            "--model" => a.model = v,
            "--concurrency" => a.concurrency = num(&v) as usize,
            "--duration" => a.duration = Duration::from_secs(num(&v)),
            "--ramp-ms" => a.ramp = Duration::from_millis(num(&v)),
            "--timeout" => a.timeout = Duration::from_secs(num(&v)),
            "--header" => a.headers.push(v),
            "--chunks" => a.chunks = num(&v) as usize,
            "--pace-ms" => a.pace_us = num(&v) * 1000,
            "--rss-pid" => a.rss_pids.push(num(&v) as u32),
            "--rss-baseline-kb" => a.rss_baseline_kb = Some(num(&v)),
            "--label" => a.label = v,
            "--held" => a.held = num(&v) == 1,
            _ => usage(),
        }
    }
    if a.addr.is_empty() || a.concurrency == 0 || a.concurrency > 20_000 {
        usage()
    }
    // Loopback only.
    if !(a.addr.starts_with("127.") || a.addr.starts_with("localhost:")) {
        eprintln!("refusing non-loopback address {}", a.addr);
        std::process::exit(2)
    }
    if a.duration > Duration::from_secs(600) || a.timeout > Duration::from_secs(600) {
        usage()
    }
    a
}

/// What one worker collected.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: Vec<(&'static str, u64)>,
    ttft: Vec<u32>,
    ttlt: Vec<u32>,
    chunk_delay: Vec<u32>,
    gap: Vec<u32>,
    content_events: u64,
}

impl Tally {
    fn error(&mut self, kind: &'static str) {
        match self.errors.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((kind, 1)),
        }
    }
    fn merge(&mut self, o: Tally) {
        self.ok += o.ok;
        for (k, n) in o.errors {
            for _ in 0..n {
                self.error(k);
            }
        }
        self.ttft.extend(o.ttft);
        self.ttlt.extend(o.ttlt);
        self.chunk_delay.extend(o.chunk_delay);
        self.gap.extend(o.gap);
        self.content_events += o.content_events;
    }
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Events of one response: arrival time of each content event, whether `[DONE]` came.
struct SseScan {
    /// `--held`: a gateway may hold text back and send it with a later event, so a content
    /// event is any chunk with a `content` key (empty too) that is not the role chunk or the
    /// finish chunk: one per upstream content chunk.
    held: bool,
    pending: Vec<u8>,
    content: Vec<Instant>,
    done: bool,
    error_event: bool,
}

impl SseScan {
    fn new(held: bool) -> Self {
        SseScan {
            held,
            pending: Vec::new(),
            content: Vec::with_capacity(80),
            done: false,
            error_event: false,
        }
    }

    fn feed(&mut self, data: &[u8], now: Instant) {
        self.pending.extend_from_slice(data);
        while let Some((end, sep)) = find_event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end + sep).collect();
            self.event(&event[..end], now);
        }
    }

    fn event(&mut self, ev: &[u8], now: Instant) {
        for line in ev.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.strip_prefix(b" ").unwrap_or(data);
            if data == b"[DONE]" {
                self.done = true;
            } else if self.is_content(data) {
                self.content.push(now);
            } else if data.starts_with(b"{\"error\"") {
                self.error_event = true;
            }
        }
    }
}

impl SseScan {
    fn is_content(&self, data: &[u8]) -> bool {
        match self.held {
            false => has_content(data),
            true => {
                find(data, b"\"content\":").is_some()
                    && find(data, b"\"role\"").is_none()
                    && find(data, b"\"finish_reason\":\"").is_none()
            }
        }
    }
}

/// End of the first event (offset of its terminating blank line) and the separator length.
fn find_event_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' {
            if b[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if b[i + 1] == b'\r' && b.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

/// The JSON has `"content":` followed by a non-empty string.
fn has_content(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\":";
    let mut from = 0;
    while let Some(pos) = find(&data[from..], KEY) {
        let mut j = from + pos + KEY.len();
        while data.get(j) == Some(&b' ') {
            j += 1;
        }
        if data.get(j) == Some(&b'"') && data.get(j + 1).is_some_and(|c| *c != b'"') {
            return true;
        }
        from = j;
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum BodyMode {
    Chunked,
    Length(usize),
    Close,
}

/// Outcome of reading one response.
enum Outcome {
    Ok { keep_alive: bool },
    Err(&'static str),
}

/// Send one request on `conn` and read its response to the end.
async fn one_stream(
    conn: &mut TcpStream,
    request: &[u8],
    scan: &mut SseScan,
    buf: &mut Vec<u8>,
) -> Outcome {
    if conn.write_all(request).await.is_err() {
        return Outcome::Err("write");
    }
    buf.clear();
    let mut tmp = [0u8; 16 * 1024];
    // Headers.
    let header_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        match conn.read(&mut tmp).await {
            Ok(0) => return Outcome::Err("closed_before_headers"),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(_) => return Outcome::Err("read"),
        }
        if buf.len() > 64 * 1024 {
            return Outcome::Err("headers_too_large");
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status_ok = head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200");
    let mut mode = BodyMode::Close;
    let mut keep_alive = head.starts_with("http/1.1");
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim() {
                "transfer-encoding" if value.contains("chunked") => mode = BodyMode::Chunked,
                "content-length" => {
                    if let Ok(n) = value.parse() {
                        if !matches!(mode, BodyMode::Chunked) {
                            mode = BodyMode::Length(n);
                        }
                    }
                }
                "connection" if value.contains("close") => keep_alive = false,
                _ => {}
            }
        }
    }
    if matches!(mode, BodyMode::Close) {
        keep_alive = false;
    }
    let mut rest: Vec<u8> = buf[header_end..].to_vec();
    let now = Instant::now();
    // Body.
    match mode {
        BodyMode::Length(total) => {
            let mut got = 0usize;
            let mut t = now;
            loop {
                let take = rest.len().min(total - got);
                scan.feed(&rest[..take], t);
                got += take;
                if got >= total {
                    break;
                }
                match conn.read(&mut tmp).await {
                    Ok(0) => return Outcome::Err("closed_mid_body"),
                    Ok(n) => {
                        rest.clear();
                        rest.extend_from_slice(&tmp[..n]);
                        t = Instant::now();
                    }
                    Err(_) => return Outcome::Err("read"),
                }
            }
        }
        BodyMode::Close => {
            scan.feed(&rest, now);
            loop {
                match conn.read(&mut tmp).await {
                    Ok(0) => break,
                    Ok(n) => scan.feed(&tmp[..n], Instant::now()),
                    Err(_) => return Outcome::Err("read"),
                }
            }
        }
        BodyMode::Chunked => {
            // `rest` holds undecoded bytes; decode as many complete pieces as possible.
            let mut remaining_in_chunk = 0usize;
            let mut need_crlf = false;
            let mut t = now;
            loop {
                let mut progressed = true;
                while progressed {
                    progressed = false;
                    if remaining_in_chunk > 0 && !rest.is_empty() {
                        let take = rest.len().min(remaining_in_chunk);
                        scan.feed(&rest[..take], t);
                        rest.drain(..take);
                        remaining_in_chunk -= take;
                        if remaining_in_chunk == 0 {
                            need_crlf = true;
                        }
                        progressed = true;
                    }
                    if remaining_in_chunk == 0 && need_crlf && rest.len() >= 2 {
                        rest.drain(..2);
                        need_crlf = false;
                        progressed = true;
                    }
                    if remaining_in_chunk == 0 && !need_crlf {
                        if let Some(p) = find(&rest, b"\r\n") {
                            let line = String::from_utf8_lossy(&rest[..p]).into_owned();
                            let size_str = line.split(';').next().unwrap_or("").trim();
                            let Ok(size) = usize::from_str_radix(size_str, 16) else {
                                return Outcome::Err("bad_chunk");
                            };
                            rest.drain(..p + 2);
                            if size == 0 {
                                // Trailers (none expected) end with an empty line.
                                while find(&rest, b"\r\n").is_none() {
                                    match conn.read(&mut tmp).await {
                                        Ok(0) => return Outcome::Err("closed_mid_body"),
                                        Ok(n) => rest.extend_from_slice(&tmp[..n]),
                                        Err(_) => return Outcome::Err("read"),
                                    }
                                }
                                return finish(scan, status_ok, keep_alive);
                            }
                            remaining_in_chunk = size;
                            progressed = true;
                        }
                    }
                }
                match conn.read(&mut tmp).await {
                    Ok(0) => return Outcome::Err("closed_mid_body"),
                    Ok(n) => {
                        rest.extend_from_slice(&tmp[..n]);
                        t = Instant::now();
                    }
                    Err(_) => return Outcome::Err("read"),
                }
            }
        }
    }
    finish(scan, status_ok, keep_alive)
}

fn finish(scan: &SseScan, status_ok: bool, keep_alive: bool) -> Outcome {
    if !status_ok {
        Outcome::Err("status_not_200")
    } else if scan.error_event {
        Outcome::Err("sse_error_event")
    } else {
        Outcome::Ok { keep_alive }
    }
}

struct Shared {
    args: Args,
    request: Vec<u8>,
    start: Instant,
    active: AtomicUsize,
    started: AtomicUsize,
    stop: AtomicBool,
}

async fn worker(sh: Arc<Shared>, index: usize) -> Tally {
    let a = &sh.args;
    let mut tally = Tally::default();
    let offset = a.ramp.mul_f64(index as f64 / a.concurrency as f64);
    tokio::time::sleep_until((sh.start + offset).into()).await;
    let stop_at = sh.start + a.duration;
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut consecutive_errors = 0u32;
    while Instant::now() < stop_at && !sh.stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        if conn.is_none() {
            match tokio::time::timeout(a.timeout, TcpStream::connect(&a.addr)).await {
                Ok(Ok(c)) => {
                    let _ = c.set_nodelay(true);
                    conn = Some(c);
                }
                _ => {
                    tally.error("connect");
                    consecutive_errors += 1;
                    if consecutive_errors > 20 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        sh.started.fetch_add(1, Ordering::Relaxed);
        sh.active.fetch_add(1, Ordering::Relaxed);
        let mut scan = SseScan::new(a.held);
        let r =
            tokio::time::timeout(a.timeout, one_stream(c, &sh.request, &mut scan, &mut buf)).await;
        sh.active.fetch_sub(1, Ordering::Relaxed);
        let outcome = match r {
            Ok(o) => o,
            Err(_) => Outcome::Err("timeout"),
        };
        match outcome {
            Outcome::Err(kind) => {
                tally.error(kind);
                conn = None;
                consecutive_errors += 1;
                if consecutive_errors > 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Outcome::Ok { keep_alive } => {
                if !keep_alive {
                    conn = None;
                }
                tally.content_events += scan.content.len() as u64;
                if scan.content.len() != a.chunks {
                    tally.error("wrong_chunk_count");
                    consecutive_errors += 1;
                    continue;
                }
                if !scan.done {
                    tally.error("no_done");
                    consecutive_errors += 1;
                    continue;
                }
                consecutive_errors = 0;
                tally.ok += 1;
                let first = scan.content[0];
                tally.ttft.push(us(first - t0));
                tally
                    .ttlt
                    .push(us(*scan.content.last().unwrap_or(&first) - t0));
                let mut prev = first;
                for (i, t) in scan.content.iter().enumerate() {
                    let nominal = Duration::from_micros(a.pace_us * i as u64);
                    tally
                        .chunk_delay
                        .push(us((*t - t0).saturating_sub(nominal)));
                    if i > 0 {
                        tally.gap.push(us(*t - prev));
                    }
                    prev = *t;
                }
            }
        }
    }
    tally
}

fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .sum()
}

fn pct(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    u64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn dist(name: &str, v: &mut [u32]) -> String {
    v.sort_unstable();
    let mean = if v.is_empty() {
        0
    } else {
        v.iter().map(|x| u64::from(*x)).sum::<u64>() / v.len() as u64
    };
    format!(
        "\"{name}\":{{\"n\":{},\"mean\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
        v.len(),
        mean,
        pct(v, 50.0),
        pct(v, 90.0),
        pct(v, 99.0),
        pct(v, 99.9),
        v.last().copied().unwrap_or(0)
    )
}

fn main() {
    let args = parse_args();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1)
        }
    };
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let body = format!(
        "{{\"model\":\"{}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello, how are you today?\"}}]}}",
        args.model
    );
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nAuthorization: Bearer sk-load-test\r\n",
        args.path, args.addr
    );
    for h in &args.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{}", body.len(), body));

    let rss_idle = rss_kb(&args.rss_pids);
    let sh = Arc::new(Shared {
        request: request.into_bytes(),
        start: Instant::now() + Duration::from_millis(50),
        active: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        args: args.clone(),
    });

    // RSS / active-stream sampler.
    let sampler = {
        let sh = sh.clone();
        tokio::spawn(async move {
            let mut peak_rss = 0u64;
            let mut active_at_peak_rss = 0usize;
            let mut max_active = 0usize;
            let mut rss_at_max_active = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !sh.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let active = sh.active.load(Ordering::Relaxed);
                let rss = rss_kb(&sh.args.rss_pids);
                if rss > peak_rss {
                    peak_rss = rss;
                    active_at_peak_rss = active;
                }
                if active > max_active {
                    max_active = active;
                    rss_at_max_active = rss;
                }
            }
            (peak_rss, active_at_peak_rss, max_active, rss_at_max_active)
        })
    };

    let handles: Vec<_> = (0..args.concurrency)
        .map(|i| tokio::spawn(worker(sh.clone(), i)))
        .collect();
    let hard_deadline = args.duration + args.ramp + args.timeout + Duration::from_secs(5);
    let mut total = Tally::default();
    let mut unfinished = 0u64;
    let joined = tokio::time::timeout(hard_deadline, async {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await);
        }
        out
    })
    .await;
    match joined {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => total.merge(t),
                    Err(_) => unfinished += 1,
                }
            }
        }
        Err(_) => unfinished = args.concurrency as u64,
    }
    sh.stop.store(true, Ordering::Relaxed);
    let elapsed = sh.start.elapsed();
    let (peak_rss, active_at_peak_rss, max_active, rss_at_max_active) =
        sampler.await.unwrap_or((0, 0, 0, 0));
    let errors_total: u64 = total.errors.iter().map(|(_, n)| n).sum::<u64>() + unfinished;
    let errors = total
        .errors
        .iter()
        .map(|(k, n)| format!("\"{k}\":{n}"))
        .collect::<Vec<_>>()
        .join(",");
    // Per stream: (peak RSS - baseline) / most streams open at once. The baseline is the RSS
    // before this measurement's warm-up when given (an allocator keeps what a warm-up took).
    let baseline = args.rss_baseline_kb.unwrap_or(rss_idle);
    let rss_per_stream = if max_active > 0 && peak_rss > baseline {
        (peak_rss - baseline) as f64 / max_active as f64
    } else {
        0.0
    };
    println!(
        "{{\"label\":\"{}\",\"concurrency\":{},\"duration_s\":{:.3},\"streams_ok\":{},\"streams_started\":{},\"errors_total\":{},\"errors\":{{{}}},\"unfinished_workers\":{},\"content_events\":{},{},{},{},{},\"rss_pids\":\"{}\",\"rss_baseline_kb\":{},\"rss_idle_kb\":{},\"rss_peak_kb\":{},\"active_at_peak_rss\":{},\"max_active\":{},\"rss_at_max_active_kb\":{},\"rss_per_active_stream_kb\":{:.1}}}",
        args.label,
        args.concurrency,
        elapsed.as_secs_f64(),
        total.ok,
        sh.started.load(Ordering::Relaxed),
        errors_total,
        errors,
        unfinished,
        total.content_events,
        dist("ttft_us", &mut total.ttft),
        dist("ttlt_us", &mut total.ttlt),
        dist("chunk_delay_us", &mut total.chunk_delay),
        dist("gap_us", &mut total.gap),
        args.rss_pids
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        baseline,
        rss_idle,
        peak_rss,
        active_at_peak_rss,
        max_active,
        rss_at_max_active,
        rss_per_stream
    );
    // Do not wait for stragglers (their tasks are bounded by --timeout anyway).
    std::process::exit(0);
}
