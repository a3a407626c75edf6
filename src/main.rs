//! `tollgate`: run the gateway, or check a config with `-t`.
//!
//! ```text
//! tollgate -c conf/tollgate.yaml        # run in the foreground
//! tollgate -c conf/tollgate.yaml -d     # daemonise (systemd Type=forking)
//! tollgate -c conf/tollgate.yaml -u -d  # take over the listeners of a running instance
//! tollgate -t -c conf/tollgate.yaml     # validate the config and exit
//! tollgate -c conf/tollgate.yaml config export   # print the validated settings
//! tollgate -c conf/tollgate.yaml config diff     # what the management API changed
//! ```
//!
//! Files the gateway writes (store, logs, pid file, upgrade socket) named by relative paths,
//! and their defaults, live in the config file's directory, or in `--state-dir DIR`.

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: glibc's malloc/free were about a fifth of the proxy's CPU (load/PROFILE.md).
/// `--no-default-features` builds with the system allocator (for heap profilers that hook
/// malloc, such as heaptrack).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "OpenAI-compatible AI gateway on Pingora"
)]
struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "conf", default_value = "conf/tollgate.yaml")]
    conf: String,
    /// Check the configuration and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Take over the listening sockets of a running instance (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
    /// Wait up to SECONDS for the instance running this config to answer `/healthz` on its
    /// admin listener (or its first proxy listener; over TLS, accept a connection); exit 0
    /// when it does, 1 otherwise. For systemd's `ExecStartPost`.
    #[arg(long = "wait-ready", value_name = "SECONDS")]
    wait_ready: Option<u64>,
    /// Directory for the files the gateway writes whose config paths are relative or left
    /// at their defaults (`state.db`, `tollgate.pid`, `upgrade.sock`, relative log paths).
    /// Default: the config file's directory. Created on start if missing.
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Once every listener listens, write the start-up report to PATH (JSON: this process's
    /// instance id, its pid, and each listener's configured and bound address; a listener
    /// configured on port 0 reports the port it got). The same line is logged as `ready {..}`.
    #[arg(long = "ready-file", value_name = "PATH")]
    ready_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// The configuration as settings.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(clap::Subcommand, Debug)]
enum ConfigAction {
    /// Show what the management API changed: the config file against the settings the
    /// gateway runs (the file merged with the API's layer), secrets masked.
    Diff,
    /// Print the configuration the gateway would run (the file merged with the objects the
    /// management API created), validated, in the file's schema: only what is set,
    /// `${VAR}` references as written (`tollgate -t` accepts the output).
    Export {
        /// Mask every secret written literally (`sk-…a1b2`), as the admin API shows them.
        #[arg(long)]
        masked: bool,
    },
}

/// Poll the gateway described by `gateway` until it answers or `secs` pass.
/// The instance id in a start-up report (`--ready-file`), once the file is there.
fn reported_instance(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let report: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(report.get("instance")?.as_str()?.to_string())
}

/// Poll the gateway described by `gateway` until it answers or `secs` pass. With
/// `ready_file`, until the process that wrote that start-up report answers: during an
/// upgrade the old process keeps accepting on the same sockets for a while, so an answer
/// alone does not say the new one is up.
fn wait_ready(
    gateway: &tollgate::runtime::Gateway,
    secs: u64,
    ready_file: Option<&std::path::Path>,
) -> bool {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let (address, http) = match &gateway.admin_listener {
        Some(l) if l.tls.is_none() => (l.address.clone(), true),
        // The proxy answers `/healthz` too; over TLS a connection is the best this can do.
        _ => match gateway.proxy_listeners.first() {
            Some(l) => (l.address.clone(), l.tls.is_none()),
            None => return false,
        },
    };
    let Ok(addr) = address.parse::<std::net::SocketAddr>() else {
        return false;
    };
    if addr.port() == 0 {
        eprintln!("tollgate: --wait-ready needs a fixed port ({address} is chosen at start)");
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let expected = match ready_file {
            None => None,
            Some(path) => match reported_instance(path) {
                Some(id) => Some(format!("\"instance\":\"{id}\"")),
                None => {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        if let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            if !http {
                return true;
            }
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let request =
                format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            if conn.write_all(request.as_bytes()).is_ok()
                && conn.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
                && expected
                    .as_ref()
                    .is_none_or(|id| response.contains(id.as_str()))
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A subcommand, on the validated configuration (`file` merged with the API's `layer`).
fn command(
    gateway: &tollgate::runtime::Gateway,
    file: &tollgate::settings::Settings,
    layer: &tollgate::managed::Layer,
    command: Option<Command>,
) -> ExitCode {
    match command {
        Some(Command::Config {
            action: ConfigAction::Diff,
        }) => {
            print!(
                "{}",
                tollgate::managed::diff::api_changes(file, &gateway.settings, layer.revision)
            );
            ExitCode::SUCCESS
        }
        Some(Command::Config {
            action: ConfigAction::Export { masked },
        }) => {
            let settings = if masked {
                gateway.settings.redacted()
            } else {
                (*gateway.settings).clone()
            };
            print!("{}", tollgate::settings::to_yaml(&settings));
            ExitCode::SUCCESS
        }
        None => ExitCode::SUCCESS,
    }
}

/// `tollgate -t`: everything a start checks (files, stores, listener addresses; see
/// `preflight`), without starting.
fn test_config(gateway: &tollgate::runtime::Gateway, conf: &str) -> ExitCode {
    match tollgate::preflight::check(gateway, tollgate::preflight::Mode::Test) {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("tollgate: warning: {w}");
            }
            println!("tollgate: configuration {conf} is valid");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate: configuration error: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    tollgate::logging::init();
    let cli = Cli::parse();
    if let Some(dir) = &cli.state_dir {
        tollgate::runtime::paths::set_state_dir(dir);
        let starting = !cli.test && cli.wait_ready.is_none();
        if starting {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("tollgate: cannot start: --state-dir {}: {e}", dir.display());
                return ExitCode::from(1);
            }
        }
    }
    let (gateway, file, layer) = match tollgate::reload::load_with_layer(&cli.conf) {
        Ok((g, file, layer)) if cli.command.is_some() => {
            return command(&g, &file, &layer, cli.command)
        }
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("tollgate: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(secs) = cli.wait_ready {
        return if wait_ready(&gateway, secs, cli.ready_file.as_deref()) {
            ExitCode::SUCCESS
        } else {
            eprintln!("tollgate: not ready after {secs}s");
            ExitCode::from(1)
        };
    }
    use tollgate::preflight::{check, Mode};
    if cli.test {
        return test_config(&gateway, &cli.conf);
    }
    let mode = Mode::Start {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
    };
    if let Err(e) = check(&gateway, mode) {
        eprintln!("tollgate: cannot start: {e}");
        return ExitCode::from(1);
    }
    if let Some(path) = &gateway.server.error_log {
        // The server log goes there from now on, in the foreground as when daemonised.
        if let Err(e) = tollgate::logging::to_file(path) {
            eprintln!("tollgate: cannot start: `server.error_log`: {path}: {e}");
            return ExitCode::from(1);
        }
        let daemon = cli.daemon || gateway.server.daemon;
        if daemon && gateway.access_log == tollgate::runtime::model::AccessLogTarget::Stdout {
            log::warn!(
                "access_log.path is stdout, which a daemon with server.error_log discards \
                 (Pingora points its stdout at /dev/null): set access_log.path to a file"
            );
        }
    }
    let switches = tollgate::server::Switches {
        daemon: cli.daemon,
        upgrade: cli.upgrade,
        ready_file: cli.ready_file.clone(),
    };
    match tollgate::server::build((gateway, file, layer), &cli.conf, switches) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("tollgate: cannot start: {e}");
            ExitCode::from(1)
        }
    }
}
