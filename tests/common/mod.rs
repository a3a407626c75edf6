//! Shared integration-test harness: spawn mock-llm and the gateway on ports the processes
//! choose and report (port 0), wait for readiness against the instance's identity (its
//! `/healthz` returns the id the process reported), read the access log. Never a fixed port,
//! never a sleep to synchronise.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod traffic;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Where the harness's gateways listen: port 0, the system picks the ports and the gateway
/// reports them (`--ready-file`). Proxy and admin need different address texts: Pingora keys
/// its table of listening sockets (the one an upgrade hands over) by the configured text.
/// All of 127.0.0.0/8 is loopback on Linux.
pub const PROXY_LISTEN: &str = "127.0.0.1:0";
pub const ADMIN_LISTEN: &str = "127.0.0.2:0";

/// A loopback port nothing listens on right now (bound to port 0, then released): only for
/// an address that must refuse connections or that no process ever binds (a config that is
/// only checked, a listener change that is reported and not applied). Never for a server:
/// servers bind port 0 and report the port.
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The port of `host:port`.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
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

/// One HTTP/1.1 `GET path` to `addr` over plain TCP: the response (head and body), if any.
pub fn plain_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Poll `GET path` on `addr` until it answers 200 with `"instance":"<id>"`: the process
/// that reported `id` is the one answering there (not another one on a reused port).
pub fn wait_identity(addr: &str, path: &str, id: &str, alive: &mut dyn FnMut() -> bool) {
    let needle = format!("\"instance\":\"{id}\"");
    let start = Instant::now();
    let mut last = None;
    loop {
        let answer = plain_get(addr, path);
        if answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200") && a.contains(&needle))
        {
            return;
        }
        last = answer.or(last);
        assert!(
            alive(),
            "the process reporting {id} exited before {addr} answered"
        );
        assert!(
            start.elapsed() < DEADLINE,
            "{addr}{path} did not answer as instance {id}; last answer: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Mock {
    pub addr: String,
    /// The id mock-llm printed at start (`GET /mock/health` returns it).
    pub instance: String,
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

    /// mock-llm binds port 0 and prints `mock-llm listening on ADDR` and
    /// `mock-llm instance ID`; a plain-HTTP mock is ready once `/mock/health` returns ID.
    fn start_with(extra: &[&str]) -> Mock {
        let mut child = Command::new(mock_llm_bin())
            .args(["--listen", "127.0.0.1:0", "--threads", "2"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mock-llm");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = |prefix: &str| {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected mock-llm output: {line:?}"))
                .to_string()
        };
        let addr = line("mock-llm listening on ");
        let instance = line("mock-llm instance ");
        let mut proc = Proc {
            child,
            name: "mock-llm",
        };
        if extra.is_empty() {
            let child = &mut proc.child;
            wait_identity(&addr, "/mock/health", &instance, &mut || {
                child.try_wait().unwrap().is_none()
            });
        }
        Mock {
            addr,
            instance,
            _proc: proc,
        }
    }

    pub fn port(&self) -> u16 {
        port_of(&self.addr)
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// One listener of a gateway's start-up report.
#[derive(Debug, Clone)]
pub struct Bound {
    /// "proxy", "proxy, TLS", "admin", ...
    pub what: String,
    /// The address as configured (`127.0.0.1:0`).
    pub configured: String,
    /// The address it is bound to (`127.0.0.1:41234`).
    pub address: String,
}

/// A gateway's start-up report (`--ready-file`): its identity and where it listens.
#[derive(Debug, Clone)]
pub struct Ready {
    pub instance: String,
    pub pid: u32,
    pub listeners: Vec<Bound>,
}

impl Ready {
    fn parse(text: &str) -> Option<Ready> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let listeners = v["listeners"]
            .as_array()?
            .iter()
            .map(|l| Bound {
                what: l["what"].as_str().unwrap_or_default().to_string(),
                configured: l["configured"].as_str().unwrap_or_default().to_string(),
                address: l["address"].as_str().unwrap_or_default().to_string(),
            })
            .collect();
        Some(Ready {
            instance: v["instance"].as_str()?.to_string(),
            pid: u32::try_from(v["pid"].as_u64()?).ok()?,
            listeners,
        })
    }

    /// The bound address of the first proxy listener.
    pub fn proxy(&self) -> &str {
        self.listeners
            .iter()
            .find(|l| l.what.starts_with("proxy"))
            .map(|l| l.address.as_str())
            .expect("a proxy listener")
    }

    /// The bound address of the admin listener.
    pub fn admin(&self) -> Option<&str> {
        self.listeners
            .iter()
            .find(|l| l.what == "admin")
            .map(|l| l.address.as_str())
    }
}

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

/// A tollgate process started by a test: its stderr collected as it is written, its
/// start-up report read from the `--ready-file` the harness gives it (a new file for every
/// process, so an old report is never mistaken for this one's).
pub struct GatewayProcess {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    ready_file: PathBuf,
}

impl GatewayProcess {
    /// `tollgate ARGS -c config --ready-file ...`, with `RUST_LOG` unset (the default log).
    pub fn spawn(config: &Path, args: &[&str]) -> GatewayProcess {
        Self::spawn_env(config, args, &[], true)
    }

    pub fn spawn_env(
        config: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        default_log: bool,
    ) -> GatewayProcess {
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let ready_file = config
            .parent()
            .unwrap()
            .join(format!("ready-{}-{n}.json", std::process::id()));
        let _ = std::fs::remove_file(&ready_file);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(args)
            .arg("-c")
            .arg(config)
            .arg("--ready-file")
            .arg(&ready_file);
        if default_log {
            cmd.env_remove("RUST_LOG");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        GatewayProcess {
            child,
            stderr,
            reader: Some(reader),
            ready_file,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The start-up report, once every listener listens, and once each plain-HTTP listener
    /// answers `/healthz` with the reported instance id. A process that exits with a failure
    /// first fails the test (one that exits with success has daemonised: keep waiting).
    pub fn wait_ready(&mut self) -> Ready {
        let start = Instant::now();
        let ready = loop {
            if let Some(r) = std::fs::read_to_string(&self.ready_file)
                .ok()
                .and_then(|t| Ready::parse(&t))
            {
                break r;
            }
            self.check_alive();
            assert!(
                start.elapsed() < DEADLINE,
                "tollgate did not report ready within {DEADLINE:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        for l in ready.listeners.iter().filter(|l| !l.what.contains("TLS")) {
            let stderr = self.stderr.clone();
            let child = &mut self.child;
            wait_identity(&l.address, "/healthz", &ready.instance, &mut || match child
                .try_wait()
                .unwrap()
            {
                Some(status) if !status.success() => {
                    panic!("tollgate exited ({status}):\n{}", stderr.lock().unwrap())
                }
                _ => true,
            });
        }
        ready
    }

    /// Fail the test if the process exited with a failure.
    pub fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            if !status.success() {
                // Let the reader catch the last lines.
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                panic!("tollgate exited early ({status}):\n{}", self.stderr());
            }
        }
    }

    /// Wait until stderr contains `needle` (failing if the process exits first).
    pub fn wait_for(&mut self, needle: &str) {
        let out = self.stderr.clone();
        wait_text(needle, || out.lock().unwrap().clone(), &mut self.child);
    }

    pub fn signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Wait for the process to exit within `within`; its exit status.
    pub fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        exit_within(&mut self.child, within)
    }

    /// Kill it and return everything it wrote to stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.stderr()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `text()` until it contains `needle`, failing at the harness deadline or when the
/// process exits first.
pub fn wait_text(needle: &str, text: impl Fn() -> String, child: &mut Child) {
    let start = Instant::now();
    while !text().contains(needle) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("tollgate exited ({status}) before {needle:?}:\n{}", text());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no {needle:?} within {DEADLINE:?}:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Gateway {
    pub dir: tempfile::TempDir,
    /// The bound proxy address (`127.0.0.1:PORT`) and its port.
    pub addr: String,
    pub port: u16,
    /// The bound admin address (`127.0.0.2:PORT`) and its port.
    pub admin_addr: String,
    pub admin_port: u16,
    /// The running process's id, as its `/healthz` returns it.
    pub instance: String,
    pub config_path: PathBuf,
    pub access_log: PathBuf,
    env: Vec<(String, String)>,
    proc: Option<GatewayProcess>,
}

/// The server/listener/access-log part of a test config; `body` adds providers and routes.
/// `proxy` and `admin` are listener addresses (`PROXY_LISTEN`, `ADMIN_LISTEN` for run-time
/// ports).
pub fn config_text(
    dir: &Path,
    proxy: &str,
    admin: &str,
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
    - address: "{proxy}"{tls}
  admin:
    address: "{admin}"{token}
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
        let body = body.replace("@DIR@", &dir.path().display().to_string());
        let text = config_text(
            dir.path(),
            PROXY_LISTEN,
            ADMIN_LISTEN,
            proxy_tls,
            admin_token,
            &body,
        );
        let config_path = dir.path().join("tollgate.yaml");
        std::fs::write(&config_path, text).unwrap();
        let mut gw = Gateway {
            access_log: dir.path().join("access.log"),
            dir,
            addr: String::new(),
            port: 0,
            admin_addr: String::new(),
            admin_port: 0,
            instance: String::new(),
            config_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            proc: None,
        };
        gw.proc = Some(gw.spawn_process(false));
        gw.wait_ready();
        gw
    }

    /// Wait for the current process's report and identity; take its addresses.
    fn wait_ready(&mut self) {
        let ready = self.proc.as_mut().unwrap().wait_ready();
        self.addr = ready.proxy().to_string();
        self.port = port_of(&self.addr);
        self.admin_addr = ready.admin().expect("an admin listener").to_string();
        self.admin_port = port_of(&self.admin_addr);
        self.instance = ready.instance;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The Prometheus text from the admin listener.
    pub async fn metrics(&self) -> String {
        get_text(&self.admin_url("/metrics")).await
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map(|p| p.pid()).unwrap_or(0)
    }

    /// Rewrite the config file with a new providers/routes block (same listeners).
    pub fn rewrite_config(&self, body: &str) {
        self.rewrite_config_as(PROXY_LISTEN, None, body);
    }

    /// Rewrite the config file with the listener addresses the process is bound to in place
    /// of port 0: another start on it then conflicts with this one, as with fixed ports.
    pub fn pin_config_to_bound_ports(&self) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let text = text
            .replace(
                &format!("\"{PROXY_LISTEN}\""),
                &format!("\"{}\"", self.addr),
            )
            .replace(
                &format!("\"{ADMIN_LISTEN}\""),
                &format!("\"{}\"", self.admin_addr),
            );
        std::fs::write(&self.config_path, text).unwrap();
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Stop the process (SIGKILL) and return what it printed to stderr.
    pub fn stop(&mut self) -> String {
        self.proc
            .take()
            .map(GatewayProcess::stop)
            .unwrap_or_default()
    }

    /// What the current process has printed to stderr so far.
    pub fn stderr(&self) -> String {
        self.proc
            .as_ref()
            .map(GatewayProcess::stderr)
            .unwrap_or_default()
    }

    /// The access-log line of `request_id`, waiting for the writer to flush it.
    pub fn log_line(&self, request_id: &str) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.access_log) {
                for line in text.lines() {
                    // The writer may be mid-line: a partial last line is read again later.
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                        continue;
                    };
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

    fn spawn_process(&self, upgrade: bool) -> GatewayProcess {
        let args: &[&str] = if upgrade { &["-u"] } else { &[] };
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        GatewayProcess::spawn_env(&self.config_path, args, &env, false)
    }

    /// Send `sig` (e.g. `-KILL`, `-TERM`, `-QUIT`) and wait until the process has exited.
    pub fn signal_and_wait(&mut self, sig: &str) {
        let Some(mut p) = self.proc.take() else {
            return;
        };
        signal(p.pid(), sig);
        wait_exit(&mut p.child, Duration::from_secs(30));
    }

    /// Start the gateway again on the same config and directory (new run-time ports: read
    /// `port`, `url()` and `admin_url()` again afterwards).
    pub fn respawn(&mut self) {
        self.proc = Some(self.spawn_process(false));
        self.wait_ready();
    }

    /// Zero-downtime upgrade: a new process takes the sockets over (`-u`), the old one gets
    /// SIGQUIT and drains; returns once the old one has exited and the new one answers
    /// `/healthz` with its own id (same addresses).
    pub fn upgrade(&mut self) {
        let mut old = self.proc.take().expect("running");
        let upgrade_sock = self.dir.path().join("upgrade.sock");
        let _ = std::fs::remove_file(&upgrade_sock);
        let mut new = self.spawn_process(true);
        // The new process waits for the sockets on the upgrade socket; SIGQUIT hands them
        // over once it listens there.
        let start = Instant::now();
        while !upgrade_sock.exists() {
            new.check_alive();
            assert!(
                start.elapsed() < DEADLINE,
                "the new process never opened the upgrade socket:\n{}",
                new.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        old.signal("-QUIT");
        wait_exit(&mut old.child, Duration::from_secs(30));
        let before = self.instance.clone();
        self.proc = Some(new);
        self.wait_ready();
        assert_ne!(self.instance, before, "the old process still answers");
    }

    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(&self.access_log).unwrap_or_default()
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

pub fn wait_exit(child: &mut Child, within: Duration) {
    assert!(exit_within(child, within).is_some(), "process did not exit");
}

/// Wait for `child` to exit within `within`; its exit status.
pub fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A real `redis-server` on a run-time port, without persistence. redis-server cannot
/// report a port-0 bind, so the harness picks a free port, starts it there and checks the
/// identity of what answers (`INFO server`'s `process_id` is the child's pid); when another
/// process took the port in between (redis-server exits, or another server answers), it
/// starts again on a new port.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            proc: None,
        };
        for _ in 0..5 {
            r.port = closed_port();
            if r.try_start() {
                return r;
            }
        }
        panic!("redis-server did not start on any of five run-time ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Start again on the same port (after `kill`) and wait until it answers as itself.
    pub fn restart(&mut self) {
        assert!(
            self.try_start(),
            "redis-server could not listen on port {} again",
            self.port
        );
    }

    /// Start on `self.port`: true once it answers with its own pid, false if it exited.
    fn try_start(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        self.proc = identified(child, || self.process_id());
        self.proc.is_some()
    }

    /// The `process_id` of the redis-server answering on `port`.
    fn process_id(&self) -> Option<u32> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"INFO server\r\n").ok()?;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(rest) = text.split("process_id:").nth(1) {
                if let Some((id, _)) = rest.split_once("\r\n") {
                    return id.trim().parse().ok();
                }
            }
        }
        None
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

/// The redis-server `child` once `process_id` answers with its pid; `None` when it exited
/// or another server answers on its port (the caller starts again on a new port).
fn identified(child: Child, process_id: impl Fn() -> Option<u32>) -> Option<Proc> {
    let pid = child.id();
    let mut proc = Proc {
        child,
        name: "redis-server",
    };
    let start = Instant::now();
    loop {
        if proc.child.try_wait().unwrap().is_some() {
            return None;
        }
        match process_id() {
            Some(p) if p == pid => return Some(proc),
            Some(_) => return None,
            None => {}
        }
        assert!(start.elapsed() < DEADLINE, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
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

/// The text of OpenAI chat chunks' `choices[0].delta.content`, joined, from SSE `data:`
/// payloads (others, such as `[DONE]`, skipped).
pub fn delta_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
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
    proc_status_kib(pid, "VmRSS")
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmSize`, ...), 0 if unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
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
    raw_exchange_to(([127, 0, 0, 1], port).into(), request, within)
}

fn raw_exchange_to(addr: std::net::SocketAddr, request: &[u8], within: Duration) -> (String, bool) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
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
    /// Rewrite the config file with this proxy listener address (`PROXY_LISTEN`: the one it
    /// runs with), admin token and providers/routes block (the admin listener stays).
    pub fn rewrite_config_as(&self, proxy: &str, admin_token: Option<&str>, body: &str) {
        let body = body.replace("@DIR@", &self.dir.path().display().to_string());
        let text = config_text(
            self.dir.path(),
            proxy,
            ADMIN_LISTEN,
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

// --- issue 16: more shared helpers ---

/// Poll `f` until it returns `Some`, failing with `what` after the harness deadline.
pub async fn eventually_some<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `raw_exchange` to any `host:port` (an admin listener is on 127.0.0.2).
pub fn raw_exchange_at(addr: &str, request: &[u8], within: Duration) -> (String, bool) {
    raw_exchange_to(addr.parse().unwrap(), request, within)
}

/// The index of the epoch-aligned window of length `window` that `t` falls in (Redis and the
/// embedded store align rate-limit windows to the unix epoch; one machine, one clock).
pub fn window_index(t: std::time::SystemTime, window: Duration) -> u128 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() / window.as_millis()
}

/// Run `check(attempt)` until one run starts and ends inside one epoch-aligned window of
/// length `window`, and return that run's result: a run that straddles a window boundary is
/// thrown away (its counts depend on where the boundary fell) and the check runs again, at
/// most three times, with `attempt` = 0, 1, 2 so that it can count under a fresh key (another
/// consumer) rather than on top of the previous run. The check returns what it saw and the
/// test asserts on that, so the test does not depend on the wall-clock minute.
pub async fn in_one_window<T, F, Fut>(window: Duration, mut check: F) -> T
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for attempt in 0..3 {
        let before = window_index(std::time::SystemTime::now(), window);
        let seen = check(attempt).await;
        if window_index(std::time::SystemTime::now(), window) == before {
            return seen;
        }
    }
    panic!("three runs in a row crossed a {window:?} window boundary");
}

/// A test config's providers/consumers/routes part without repeating the usual blocks:
/// one OpenAI-compatible provider `mock` (key `sk-provider`), consumers `NAME` with the
/// credential `sk-NAME`, any other top-level sections as written, and routes of one model
/// pattern each to `mock` (forwarding `x-mock-*`; a route `default` for `mock-*` when none
/// is given).
pub struct Body {
    base_url: String,
    consumers: Vec<String>,
    sections: Vec<String>,
    routes: Vec<String>,
}

impl Body {
    pub fn mock(base_url: &str) -> Body {
        Body {
            base_url: base_url.to_string(),
            consumers: Vec::new(),
            sections: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Consumers `names`, each with the credential `sk-<name>`.
    pub fn consumers(mut self, names: &[&str]) -> Body {
        self.consumers.extend(
            names
                .iter()
                .map(|n| format!("  - name: {n}\n    credentials: [\"sk-{n}\"]\n")),
        );
        self
    }

    /// Top-level YAML written as is (`quota: ...`, `rate_limits: ...`, `redis: ...`).
    pub fn section(mut self, yaml: &str) -> Body {
        self.sections.push(format!("{}\n", yaml.trim_end()));
        self
    }

    /// A route `name` for `model` (a pattern) to `mock`; `auth` is its `auth:` value
    /// (`{required: true}`), if any.
    pub fn route(mut self, name: &str, model: &str, auth: Option<&str>) -> Body {
        let auth = auth.map(|a| format!("    auth: {a}\n")).unwrap_or_default();
        self.routes.push(format!(
            "  - name: {name}\n    forward_headers: [\"x-mock-*\"]\n{auth}    models:\n      - model: \"{model}\"\n        targets: [{{provider: mock}}]\n"
        ));
        self
    }

    pub fn build(&self) -> String {
        let mut out = format!(
            "providers:\n  - name: mock\n    type: openai-compatible\n    base_url: \"{}\"\n    api_keys: [\"sk-provider\"]\n",
            self.base_url
        );
        if !self.consumers.is_empty() {
            out.push_str("consumers:\n");
            self.consumers.iter().for_each(|c| out.push_str(c));
        }
        self.sections.iter().for_each(|s| out.push_str(s));
        out.push_str("routes:\n");
        if self.routes.is_empty() {
            out.push_str(&Body::mock("").route("default", "mock-*", None).routes[0]);
        }
        self.routes.iter().for_each(|r| out.push_str(r));
        out
    }
}

/// Established connections to local `port` (a server's side, from `/proc/net/tcp`) whose
/// receive queue is empty: the server has read everything its clients sent on them.
pub fn drained_connections(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let rx_empty = f
                .get(4)
                .and_then(|q| q.split(':').nth(1))
                .is_some_and(|rx| u64::from_str_radix(rx, 16) == Ok(0));
            local_port == Some(port) && f.get(3) == Some(&"01") && rx_empty
        })
        .count()
}

/// `GET url`: the body as text.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

// ---- Redis over TLS (rediss://) ----

/// The interpreter of a Python environment with the official `openai` package:
/// `TOLLGATE_OPENAI_PYTHON`, else `target/pyvenv/bin/python` (made by `tests/deps.sh`).
/// `None` (the test is skipped, with a note) only where CI is not set.
pub fn openai_python() -> Option<PathBuf> {
    let path = std::env::var_os("TOLLGATE_OPENAI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"));
    let ok = std::process::Command::new(&path)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has a Python with the openai package (tests/deps.sh)"
        );
        eprintln!("skipped: no Python with the `openai` package (tests/deps.sh makes one)");
    }
    ok.then_some(path)
}

/// Run `tests/fixtures/sdk/{script}` with `python` and `arg`; it must succeed. Its stdout.
pub async fn run_sdk_script(python: PathBuf, script: &str, arg: String) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sdk")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(arg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a test that needs `redis-server` should be skipped: only when it is not installed
/// and CI is not set (on CI the test runs, and fails).
pub fn skip_without_redis_server() -> bool {
    let missing = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err();
    if missing && std::env::var_os("CI").is_none() {
        eprintln!("skipped: redis-server is not installed (tests/deps.sh installs it)");
        return true;
    }
    false
}

/// A `redis-server` that speaks only TLS, on a run-time port, with a certificate for
/// 127.0.0.1 signed by a private CA (`ca_file`). Started and checked like [`Redis`]: it is
/// ready when what answers over TLS reports the child's pid.
pub struct RedisTls {
    pub port: u16,
    pub ca_file: PathBuf,
    ca: Vec<u8>,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl RedisTls {
    pub fn start() -> RedisTls {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: OpenSSL (redis-server, redis-cli) takes a certificate whose issuer is
        // its own subject for self-signed.
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tollgate test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let mut r = RedisTls {
            port: 0,
            ca_file: dir.path().join("ca.pem"),
            ca: ca.pem().into_bytes(),
            dir,
            proc: None,
        };
        for _ in 0..5 {
            r.port = closed_port();
            if r.try_start() {
                return r;
            }
        }
        panic!("redis-server (TLS) did not start on any of five run-time ports");
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    fn try_start(&mut self) -> bool {
        let path = |name: &str| self.dir.path().join(name);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(path("cert.pem"))
            .arg("--tls-key-file")
            .arg(path("key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(path("ca.pem"))
            .args(["--tls-auth-clients", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        self.proc = identified(child, || self.process_id());
        self.proc.is_some()
    }

    /// The `process_id` of the server answering over TLS (trusting the private CA).
    fn process_id(&self) -> Option<u32> {
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.ca.clone()),
        };
        let client = redis::Client::build_with_tls(self.url(), certs).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut c).ok()?;
        let line = info.lines().find(|l| l.starts_with("process_id:"))?;
        line["process_id:".len()..].trim().parse().ok()
    }
}

/// Calls to the management API (as the token or session holder given) that keep every
/// answer, to search for secrets afterwards.
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub seen: String,
}

impl Api {
    pub fn new(gw: &Gateway, token: Option<&str>) -> Api {
        Api {
            base: gw.admin_url("/admin/api/v1"),
            token: token.map(str::to_string),
            seen: String::new(),
        }
    }

    pub async fn call(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.call_if(method, path, body, None).await
    }

    pub async fn call_if(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        if_match: Option<&str>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut req = client().request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(r) = if_match {
            req = req.header("if-match", format!("\"{r}\""));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        self.seen.push_str(&text);
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The config's current revision.
    pub async fn revision(&mut self) -> String {
        let (_, v) = self.call(reqwest::Method::GET, "/config", None).await;
        v["revision"].as_str().unwrap().to_string()
    }

    /// The state of alert rule `name` in `GET /alerts`.
    pub async fn state(&mut self, name: &str) -> serde_json::Value {
        let (_, v) = self.call(reqwest::Method::GET, "/alerts", None).await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["rule"] == name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }
}

/// The JSON bodies of the POSTs `receiver` got on `path` (webhook notices).
pub fn posted_json(receiver: &RawUpstream, path: &str) -> Vec<serde_json::Value> {
    receiver
        .received()
        .iter()
        .filter(|r| r.head.starts_with(&format!("POST {path} ")))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

impl Gateway {
    /// `tollgate -c <this gateway's config> ARGS`: its standard output; fails the test when
    /// the command fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["-c", self.config_path.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
