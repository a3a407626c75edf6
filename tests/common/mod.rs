//! Shared integration-test harness: spawn mock-llm and the gateway on run-time ports, wait
//! for readiness by polling (never by sleeping a fixed time), read the access log.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod traffic;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// A port free right now (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `mock-llm` binary: a member of the workspace, so not one of this package's
/// `CARGO_BIN_EXE_*`; it is built beside the test binaries (`target/<profile>/mock-llm`).
/// The tests do not run cargo themselves (it would wait for the lock the test run holds).
pub fn mock_llm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary under target/<profile>/deps");
    let bin = profile_dir.join(format!("mock-llm{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first \
         (mock-llm is its own workspace member; tests/run.sh does this)",
        bin.display()
    );
    bin
}

pub struct Mock {
    pub addr: String,
    _proc: Proc,
}

impl Mock {
    pub fn start() -> Mock {
        Self::start_with(&[])
    }

    pub fn start_tls(cert: &Path, key: &Path) -> Mock {
        Self::start_with(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    }

    fn start_with(extra: &[&str]) -> Mock {
        let mut child = Command::new(mock_llm_bin())
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mock-llm");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("mock-llm listening on ")
            .unwrap_or_else(|| panic!("unexpected mock-llm output: {line:?}"))
            .to_string();
        Mock {
            addr,
            _proc: Proc {
                child,
                name: "mock-llm",
            },
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    pub access_log: PathBuf,
    proc: Option<Proc>,
}

/// The server/listener/access-log part of a test config; `body` adds providers and routes.
pub fn config_text(
    dir: &Path,
    port: u16,
    admin_port: u16,
    proxy_tls: Option<(&Path, &Path)>,
    admin_token: Option<&str>,
    body: &str,
) -> String {
    let token = admin_token
        .map(|t| format!("\n    token: \"{t}\""))
        .unwrap_or_default();
    let tls = match proxy_tls {
        Some((cert, key)) => format!(
            "\n      tls: {{cert: \"{}\", key: \"{}\"}}",
            cert.display(),
            key.display()
        ),
        None => String::new(),
    };
    format!(
        r#"server:
  threads: 2
  pid_file: "{dir}/tollgate.pid"
  upgrade_sock: "{dir}/upgrade.sock"
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
listeners:
  proxy:
    - address: "127.0.0.1:{port}"{tls}
  admin:
    address: "127.0.0.1:{admin_port}"{token}
access_log:
  path: "{dir}/access.log"
{body}
"#,
        dir = dir.display()
    )
}

impl Gateway {
    pub fn start(body: &str) -> Gateway {
        Self::start_full(body, None, &[])
    }

    pub fn start_full(
        body: &str,
        proxy_tls: Option<(&Path, &Path)>,
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::start_opts(body, proxy_tls, None, env)
    }

    pub fn start_opts(
        body: &str,
        proxy_tls: Option<(&Path, &Path)>,
        admin_token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let body = body.replace("@DIR@", &dir.path().display().to_string());
        let text = config_text(dir.path(), port, admin_port, proxy_tls, admin_token, &body);
        let config_path = dir.path().join("tollgate.yaml");
        std::fs::write(&config_path, text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.arg("-c").arg(&config_path);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate");
        let mut gw = Gateway {
            access_log: dir.path().join("access.log"),
            dir,
            port,
            admin_port,
            config_path,
            proc: Some(Proc {
                child,
                name: "tollgate",
            }),
        };
        gw.wait_ready();
        gw
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.proc.as_mut().unwrap().child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut s) = self.proc.as_mut().unwrap().child.stderr.take() {
                    use std::io::Read;
                    let _ = s.read_to_string(&mut err);
                }
                panic!("tollgate exited early ({status}): {err}");
            }
            let proxy_up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            let admin_up = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok();
            if proxy_up && admin_up {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "tollgate did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.child.id()).unwrap_or(0)
    }

    /// Rewrite the config file with a new providers/routes block (same listeners).
    pub fn rewrite_config(&self, body: &str) {
        let body = body.replace("@DIR@", &self.dir.path().display().to_string());
        let text = config_text(
            self.dir.path(),
            self.port,
            self.admin_port,
            None,
            None,
            &body,
        );
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The gateway's stderr so far is not read; this stops it and returns what it printed.
    pub fn stop(&mut self) -> String {
        let mut out = String::new();
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            if let Some(mut s) = p.child.stderr.take() {
                use std::io::Read;
                let _ = s.read_to_string(&mut out);
            }
        }
        out
    }

    /// The access-log line of `request_id`, waiting for the writer to flush it.
    pub fn log_line(&self, request_id: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.access_log) {
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    if v["request_id"] == request_id {
                        return v;
                    }
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no access-log line for {request_id}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn_process(&self, upgrade: bool) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.arg("-c").arg(&self.config_path);
        if upgrade {
            cmd.arg("-u");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate");
        Proc {
            child,
            name: "tollgate",
        }
    }

    /// Send `sig` (e.g. `-KILL`, `-TERM`, `-QUIT`) and wait until the process has exited.
    pub fn signal_and_wait(&mut self, sig: &str) {
        let Some(mut p) = self.proc.take() else {
            return;
        };
        signal(p.child.id(), sig);
        wait_exit(&mut p.child, Duration::from_secs(30));
    }

    /// Start the gateway again on the same config, ports and directory.
    pub fn respawn(&mut self) {
        self.proc = Some(self.spawn_process(false));
        self.wait_ready();
    }

    /// Zero-downtime upgrade: a new process takes the sockets over (`-u`), the old one gets
    /// SIGQUIT and drains; returns once the old one has exited.
    pub fn upgrade(&mut self) {
        let mut old = self.proc.take().expect("running");
        let new = self.spawn_process(true);
        // The new process waits for the sockets on the upgrade socket; SIGQUIT hands them
        // over. Retry the signal until the old one starts exiting.
        let start = Instant::now();
        loop {
            signal(old.child.id(), "-QUIT");
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(500) {
                if old.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if old.child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        wait_exit(&mut old.child, Duration::from_secs(30));
        self.proc = Some(new);
        self.wait_ready();
    }

    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

pub fn wait_exit(child: &mut Child, within: Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < within, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real `redis-server` on a run-time port, without persistence.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            proc: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)start on the same port and wait until it answers PING.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        self.proc = Some(Proc {
            child,
            name: "redis-server",
        });
        let start = Instant::now();
        while !self.answers() {
            assert!(start.elapsed() < DEADLINE, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .map(|n| buf[..n].starts_with(b"+PONG"))
                .unwrap_or(false)
    }

    /// Kill it (SIGKILL) and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Poll `f` until it is true, failing after the harness deadline.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET url` as JSON (optionally with a bearer token).
pub async fn get_json(url: &str, bearer: Option<&str>) -> serde_json::Value {
    let mut req = client().get(url);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// mock-llm's request counters (`by_key`, `by_path`).
pub async fn mock_stats(mock: &Mock) -> serde_json::Value {
    get_json(&format!("http://{}/mock/stats", mock.addr), None).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Sum of a counter's samples whose labels contain every `name="value"` in `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// FNV-1a 64, as mock-llm reports it in `x-mock-body-fnv64`.
pub fn fnv64(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// SSE `data:` payloads of a complete stream body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("data:")
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                })
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// A providers+routes block with one OpenAI-compatible provider `mock` at `base_url`.
pub fn mock_provider(base_url: &str, extra: &str) -> String {
    format!(
        r#"providers:
  - name: mock
    type: openai-compatible
    base_url: "{base_url}"
    api_keys: ["sk-provider-secret-1234"]
    model_mapping:
      mock-mapped: upstream-model-x
{extra}
routes:
  - name: default
    forward_headers: ["x-mock-*"]
    models:
      - model: "mock-*"
        targets: [{{provider: mock}}]
"#
    )
}

pub const PROVIDER_KEY: &str = "sk-provider-secret-1234";

/// Resident set size of process `pid` in KiB (from `/proc/PID/status`), 0 if unreadable.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One read from `s` into `out` (a read timeout counts as nothing read); false once the peer
/// has closed the connection or it failed.
pub fn read_some(s: &mut std::net::TcpStream, buf: &mut [u8], out: &mut Vec<u8>) -> bool {
    use std::io::Read;
    match s.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            out.extend_from_slice(&buf[..n]);
            true
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Send raw bytes to `port` on loopback and read what comes back until the peer closes or
/// `within` passes. Returns the bytes read and whether the peer closed the connection.
pub fn raw_exchange(port: u16, request: &[u8], within: Duration) -> (String, bool) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut closed = false;
    while start.elapsed() < within {
        let left = within
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        if !read_some(&mut s, &mut buf, &mut out) {
            closed = true;
            break;
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// One request as a `RawUpstream` received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The request line and headers, as sent (`\r\n` separated).
    pub head: String,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

type RawHandler = dyn Fn(&RawRequest, &mut std::net::TcpStream) + Send + Sync;

/// A deliberately broken (or scripted) upstream on a run-time loopback port: for each request
/// it reads the header and a `Content-Length` body, records them, and lets `handler` write
/// any bytes it likes (a malformed answer, an endless SSE line, a key echoed back) before the
/// connection is closed. One thread per connection; it stops with the test process.
pub struct RawUpstream {
    pub addr: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<RawRequest>>>,
}

impl RawUpstream {
    pub fn start<F>(handler: F) -> RawUpstream
    where
        F: Fn(&RawRequest, &mut std::net::TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let handler: std::sync::Arc<RawHandler> = std::sync::Arc::new(handler);
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let handler = handler.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    if let Some(req) = read_raw_request(&mut conn) {
                        seen.lock().unwrap().push(req.clone());
                        handler(&req, &mut conn);
                    }
                });
            }
        });
        RawUpstream { addr, requests }
    }

    /// Always answer `response` (status line, headers and body, as given).
    pub fn fixed(response: Vec<u8>) -> RawUpstream {
        Self::start(move |_, conn| {
            use std::io::Write;
            let _ = conn.write_all(&response);
        })
    }

    /// The OpenAI-style base URL (`http://addr/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn received(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn read_raw_request(conn: &mut std::net::TcpStream) -> Option<RawRequest> {
    use std::io::Read;
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut req = RawRequest {
        head,
        body: data[head_end + 4..].to_vec(),
    };
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while req.body.len() < len {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        req.body.extend_from_slice(&buf[..n]);
    }
    Some(req)
}

/// A 200 JSON response with `body`, `Content-Length` framed, connection closed after.
pub fn http_json(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// --- admin_reload (issue 14): config rewrites that change listeners or the admin token ---

impl Gateway {
    /// Rewrite the config file with this proxy port, admin token and providers/routes block
    /// (the admin listener stays where it is).
    pub fn rewrite_config_as(&self, port: u16, admin_token: Option<&str>, body: &str) {
        let body = body.replace("@DIR@", &self.dir.path().display().to_string());
        let text = config_text(
            self.dir.path(),
            port,
            self.admin_port,
            None,
            admin_token,
            &body,
        );
        std::fs::write(&self.config_path, text).unwrap();
    }
}

/// Run `tollgate ARGS -c path` to completion within `within`, or kill it: (exited in time
/// with success, stderr). A process still running at the deadline counts as a failure to
/// exit (`None`).
pub fn run_tollgate(args: &[&str], path: &Path, within: Duration) -> (Option<bool>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .arg("-c")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tollgate");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.success());
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read;
        let _ = s.read_to_string(&mut err);
    }
    (status, err)
}
