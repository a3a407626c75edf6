//! The systemd unit passes `systemd-analyze verify` and `systemd-analyze security`, its own
//! `Exec*=` lines start the gateway and upgrade it under load with nothing lost (run the way
//! systemd runs them, since systemd is not PID 1 here), and the install script is idempotent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("systemd/tollgate.service")).unwrap();
    assert!(unit.contains("Type=forking") && unit.contains("PIDFile=/run/tollgate/tollgate.pid"));
    // Pingora's order: SIGQUIT first (the old process offers its sockets for a few seconds),
    // then the new binary with -u -d, which blocks until it has them. The other order blocks
    // the -u line until it fails (`unit_reload_under_load_loses_nothing` runs it).
    let upgrade = unit
        .find("ExecReload=/usr/local/bin/tollgate -u -d")
        .unwrap();
    let quit = unit.find("ExecReload=/bin/kill -QUIT $MAINPID").unwrap();
    assert!(quit < upgrade);
    // The shipped systemd config agrees with the unit.
    let conf = std::fs::read_to_string(repo().join("conf/systemd.yaml")).unwrap();
    assert!(conf.contains("pid_file: /run/tollgate/tollgate.pid"));
    assert!(conf.contains("upgrade_sock: /run/tollgate/upgrade.sock"));

    // verify checks that executables exist: point the unit at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tollgate", env!("CARGO_BIN_EXE_tollgate")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("tollgate.service:"),
        "warnings about the unit: {text}"
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_script_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new("bash")
            .arg(repo().join("systemd/install.sh"))
            .arg(env!("CARGO_BIN_EXE_tollgate"))
            .env("ROOT", root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let r = root.path();
    assert!(mode(&r.join("usr/local/bin/tollgate")) & 0o111 != 0);
    assert_eq!(mode(&r.join("etc/tollgate/env")), 0o600);
    assert_eq!(mode(&r.join("etc/tollgate")), 0o750);
    assert!(r.join("etc/systemd/system/tollgate.service").is_file());
    let conf = r.join("etc/tollgate/tollgate.yaml");
    let ok = Command::new(r.join("usr/local/bin/tollgate"))
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .status()
        .unwrap();
    assert!(ok.success(), "installed config validates");

    // Operator edits survive a second run.
    std::fs::write(
        &conf,
        std::fs::read_to_string(&conf).unwrap() + "\n# edited\n",
    )
    .unwrap();
    std::fs::write(r.join("etc/tollgate/env"), "OPENAI_API_KEY=sk-x\n").unwrap();
    run();
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .ends_with("# edited\n"));
    assert_eq!(
        std::fs::read_to_string(r.join("etc/tollgate/env")).unwrap(),
        "OPENAI_API_KEY=sk-x\n"
    );
    assert!(!r.join("usr/local/bin/tollgate.new").exists());
}

/// The exposure score `systemd-analyze security` gives the unit (lower is safer).
#[test]
fn unit_security_exposure_stays_low() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(repo().join("systemd/tollgate.service"))
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for tollgate.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure score in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(score <= 3.9, "exposure {score} > 3.9:\n{text}");
}

/// The unit's commands, read from `systemd/tollgate.service`, and how to run them here.
struct Unit {
    start: Vec<String>,
    reload: Vec<String>,
    pid_file: std::path::PathBuf,
    /// `/usr/local/bin/tollgate` and `/etc/tollgate/tollgate.yaml` of the unit, replaced by
    /// the binary under test and the test's config.
    binary: String,
    config: std::path::PathBuf,
    /// `/run/tollgate/ready.json` of the unit (the start-up report), in the test's directory.
    ready_file: std::path::PathBuf,
}

impl Unit {
    fn read(dir: &Path, config: &Path) -> Unit {
        let text = std::fs::read_to_string(repo().join("systemd/tollgate.service")).unwrap();
        let values = |key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(key))
                .map(str::to_string)
                .collect()
        };
        let mut start = values("ExecStartPre=");
        start.extend(values("ExecStart="));
        start.extend(values("ExecStartPost="));
        let pid = values("PIDFile=");
        assert_eq!(pid, ["/run/tollgate/tollgate.pid"]);
        Unit {
            start,
            reload: values("ExecReload="),
            pid_file: dir.join("tollgate.pid"),
            binary: env!("CARGO_BIN_EXE_tollgate").to_string(),
            config: config.to_path_buf(),
            ready_file: dir.join("ready.json"),
        }
    }

    /// The main PID as systemd knows it: the one the PID file names.
    fn main_pid(&self) -> u32 {
        std::fs::read_to_string(&self.pid_file)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Run one `Exec*=` line as systemd does: to completion, `$MAINPID` expanded, a failure
    /// ignored only when the line starts with `-`. Returns what it printed.
    fn exec(&self, line: &str) -> String {
        let (ok, text) = self.try_exec(line);
        assert!(ok, "`{line}` failed: {text}");
        text
    }

    /// `exec`, returning whether the line succeeded (or its failure is ignored) instead of
    /// failing the test.
    fn try_exec(&self, line: &str) -> (bool, String) {
        let (ignore_failure, line) = match line.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        assert!(
            !line.contains(['"', '\'', '\\', ';']),
            "this runner does not parse systemd quoting: {line}"
        );
        let main_pid = self.main_pid().to_string();
        let argv: Vec<String> = line
            .split_whitespace()
            .map(|w| match w {
                "/usr/local/bin/tollgate" => self.binary.clone(),
                "/etc/tollgate/tollgate.yaml" => self.config.display().to_string(),
                "/run/tollgate/ready.json" => self.ready_file.display().to_string(),
                "$MAINPID" => main_pid.clone(),
                other => other.to_string(),
            })
            .collect();
        // A daemon keeps the stdout and stderr it was started with (as under systemd, where
        // they go to the journal): a file, not a pipe that would stay open.
        let output = self.config.with_extension("out");
        let file = std::fs::File::create(&output).unwrap();
        let started = std::time::Instant::now();
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .status()
            .unwrap();
        let text = format!(
            "{line} ({:?}, {status}): {}",
            started.elapsed(),
            std::fs::read_to_string(&output).unwrap_or_default()
        );
        (status.success() || ignore_failure, text)
    }

    /// `systemctl start` on fixed ports (a unit's config names its ports, and `--wait-ready`
    /// finds the instance by them): free ports chosen now, then the start's lines; the
    /// instance answering on the proxy port must be the daemon the PID file names (request
    /// ids carry the serving pid). When another process took a port in between, the start
    /// fails or another process answers: again on new ports. Returns the proxy port.
    async fn start_on_free_ports(&self, dir: &Path, body: &str, log: &mut Vec<String>) -> u16 {
        for _ in 0..3 {
            let port = common::closed_port();
            let admin = format!("127.0.0.1:{}", common::closed_port());
            let proxy = format!("127.0.0.1:{port}");
            let text = common::config_text(dir, &proxy, &admin, None, None, body);
            std::fs::write(&self.config, text).unwrap();
            let mut started = true;
            for line in &self.start {
                let (ok, text) = tokio::task::block_in_place(|| self.try_exec(line));
                log.push(text);
                started &= ok;
            }
            let pid = self.main_pid();
            if started && pid != 0 && alive(pid) {
                let answer = common::client()
                    .get(format!("http://{proxy}/v1/models"))
                    .send()
                    .await;
                let served = answer.ok().and_then(|r| {
                    let id = r.headers().get("x-request-id")?.to_str().ok()?.to_string();
                    Some(common::traffic::served_by(&id))
                });
                if served == Some(pid) {
                    return port;
                }
            }
            if pid != 0 {
                common::signal(pid, "-KILL");
            }
        }
        panic!("the unit did not start on free ports three times: {log:#?}");
    }
}

/// Kills whatever daemon the PID file names when the test ends, however it ends.
struct KillDaemons(Vec<u32>);

impl Drop for KillDaemons {
    fn drop(&mut self) {
        for pid in &self.0 {
            common::signal(*pid, "-KILL");
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// `systemctl start`, then three `systemctl reload`s in a row under streaming and short
/// requests, each run from the unit's own lines: nothing fails, no stream is cut, the PID
/// file names the new process after each reload, and every old process is gone after its
/// hand-over window and grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_reload_under_load_loses_nothing() {
    use common::traffic::{traffic, Tally};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let mock = common::Mock::start();
    let dir = tempfile::tempdir().unwrap();
    let body = common::mock_provider(&mock.url(), "").replace("mock-mapped", "unused");
    let config = dir.path().join("tollgate.yaml");
    let unit = Unit::read(dir.path(), &config);
    let mut daemons = KillDaemons(Vec::new());

    let mut log = Vec::new();
    let port = unit.start_on_free_ports(dir.path(), &body, &mut log).await;
    let first = unit.main_pid();
    daemons.0.push(first);

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(traffic(
                port,
                i % 2 == 1,
                40,
                stop.clone(),
                tally.clone(),
                t0,
            ))
        })
        .collect();

    let mut pids = vec![first];
    for round in 0..3 {
        common::eventually("traffic before the reload", || {
            let n = tally.ok.load(Ordering::Relaxed);
            async move { n >= 20 * (round + 1) }
        })
        .await;
        let before = unit.main_pid();
        for line in &unit.reload {
            let line = line.clone();
            let unit_ref = &unit;
            log.push(tokio::task::block_in_place(|| unit_ref.exec(&line)));
        }
        let now = unit.main_pid();
        assert!(
            now != before && alive(now),
            "round {round}: PID file names {now} (was {before}): {log:#?}"
        );
        daemons.0.push(now);
        pids.push(now);
    }
    // Until the newest process serves (the old one keeps accepting on the shared sockets for
    // Pingora's hand-over window, so a count of requests alone proves nothing), then stop.
    let newest = *pids.last().unwrap();
    common::eventually("the newest process serves", || {
        let served = tally.pids.lock().unwrap().contains(&newest);
        async move { served }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }

    // Old processes leave after Pingora's 5 s hand-over window, the grace period (1 s) and
    // the shutdown timeout (1 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    for old in &pids[..pids.len() - 1] {
        while alive(*old) {
            assert!(Instant::now() < deadline, "old process {old} still running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let last = *pids.last().unwrap();
    assert!(alive(last) && unit.main_pid() == last);

    {
        let failures = tally.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed requests: {:?}\n{log:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(tally.streams_ok.load(Ordering::Relaxed) > 5);
        let served = tally.pids.lock().unwrap();
        assert!(served.contains(&last), "the newest process served nothing");
    }

    // `systemctl stop`: SIGTERM to the main process.
    common::signal(last, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(last) {
        assert!(Instant::now() < deadline, "SIGTERM did not stop {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
