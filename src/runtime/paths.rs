//! Where the files the gateway writes go: the embedded store, the access log, the error log,
//! the pid file and the upgrade socket.
//!
//! A relative path among these (including the defaults `state.db`, `tollgate.pid` and
//! `upgrade.sock`) is taken relative to the *state directory*: `--state-dir DIR` when given,
//! otherwise the directory of the config file. It is made absolute at load, so a daemon
//! (which changes its working directory to `/`) and a reload agree with the start. Nothing
//! is written to a system path unless the config names one (`conf/systemd.yaml` names
//! `/var/lib/tollgate`, `/run/tollgate` and `/var/log/tollgate`).

use super::model::AccessLogTarget;
use super::{ConfigError, Gateway};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `--state-dir`, set once by `main` before the config is loaded.
static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Use `dir` as the state directory of this process (the first call wins).
pub fn set_state_dir(dir: &Path) {
    let _ = STATE_DIR.set(absolute(dir));
}

/// The default store file, pid file and upgrade socket, relative to the state directory.
pub const DEFAULT_STORE: &str = "state.db";
pub const DEFAULT_PID_FILE: &str = "tollgate.pid";
pub const DEFAULT_UPGRADE_SOCK: &str = "upgrade.sock";

/// A Unix socket path holds at most this many bytes (`sun_path` is 108 with the NUL).
const MAX_SOCKET_PATH: usize = 107;

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The state directory for the config file at `config_path`.
pub fn state_dir(config_path: &str) -> PathBuf {
    if let Some(dir) = STATE_DIR.get() {
        return dir.clone();
    }
    match Path::new(config_path).parent() {
        Some(p) if !p.as_os_str().is_empty() => absolute(p),
        _ => absolute(Path::new(".")),
    }
}

fn under(base: &Path, p: &str) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        p.to_string()
    } else {
        base.join(path).display().to_string()
    }
}

/// Make every written path of `g` absolute against `base`.
pub fn resolve(g: &mut Gateway, base: &Path) -> Result<(), ConfigError> {
    let s = &mut g.server;
    s.pid_file = under(base, &s.pid_file);
    s.upgrade_sock = under(base, &s.upgrade_sock);
    s.error_log = s.error_log.as_deref().map(|p| under(base, p));
    if let AccessLogTarget::File(p) = &g.access_log {
        g.access_log = AccessLogTarget::File(under(base, p));
    }
    if g.store.path.is_relative() {
        g.store.path = base.join(&g.store.path);
    }
    let len = s.upgrade_sock.len();
    if len > MAX_SOCKET_PATH {
        return Err(ConfigError::field(
            "server.upgrade_sock",
            format!(
                "`{}` is {len} bytes long; a Unix socket path has at most {MAX_SOCKET_PATH}: \
                 set server.upgrade_sock (or --state-dir) to a shorter path",
                s.upgrade_sock
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
quota: {consumers: ["*"]}
"#;

    #[test]
    fn relative_and_default_paths_follow_the_config_directory() {
        let g = super::super::parse(BASE, "/srv/gw/conf/tollgate.yaml", None).unwrap();
        assert_eq!(g.store.path, Path::new("/srv/gw/conf/state.db"));
        assert_eq!(g.server.pid_file, "/srv/gw/conf/tollgate.pid");
        assert_eq!(g.server.upgrade_sock, "/srv/gw/conf/upgrade.sock");
        let text = format!(
            "{BASE}store: {{path: data/s.db}}\naccess_log: {{path: logs/a.log}}\n\
             server: {{error_log: /var/log/e.log, pid_file: run/p.pid}}\n"
        );
        let g = super::super::parse(&text, "/srv/gw/t.yaml", None).unwrap();
        assert_eq!(g.store.path, Path::new("/srv/gw/data/s.db"));
        assert_eq!(
            g.access_log,
            AccessLogTarget::File("/srv/gw/logs/a.log".into())
        );
        assert_eq!(g.server.error_log.as_deref(), Some("/var/log/e.log"));
        assert_eq!(g.server.pid_file, "/srv/gw/run/p.pid");
        // A config named without a directory: the working directory.
        let g = super::super::parse(BASE, "t.yaml", None).unwrap();
        assert!(g.store.path.is_absolute());
    }

    #[test]
    fn an_upgrade_socket_path_too_long_is_an_error() {
        let deep = format!("/{}/t.yaml", "d".repeat(120));
        let e = super::super::parse(BASE, &deep, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.upgrade_sock"), "{e}");
    }
}
