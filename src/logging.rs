//! The server log (what `log::…!` prints): env_logger, to stderr, or to `server.error_log`
//! when the config names one (foreground and daemon alike). The access log is separate
//! (`access_log`, stdout by default), so the two never share a stream unless configured to.
//!
//! Default level: `info` for the gateway, `warn` for Pingora, whose `info` lines narrate
//! every service start and every shutdown step; the gateway logs those events itself, once
//! each (`lifecycle`). `RUST_LOG` replaces the whole default (e.g. `RUST_LOG=info` shows
//! Pingora's narration again, `RUST_LOG=debug` everything).
//!
//! Pingora logs its normal upgrade hand-shake retries as errors and warnings ("No incoming
//! socket transfer, sleep 1s and try again" while the new process waits for the old one's
//! sockets; "server not ready, will try again" while the old one waits for the new one).
//! A successful upgrade goes through those, so they are logged at `debug` here; a hand-over
//! that really fails still logs its own error ("Bootstrap failed", "Giving up", "Max retry").

use log::{Level, Log, Metadata, Record};
use std::sync::OnceLock;

/// The default filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=warn,pingora=warn";

/// The logger writing to `server.error_log`, once the config has named one.
static FILE: OnceLock<env_logger::Logger> = OnceLock::new();

fn builder() -> env_logger::Builder {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER))
}

struct Logger {
    stderr: env_logger::Logger,
}

/// A Pingora message that a successful upgrade produces.
fn upgrade_retry(record: &Record) -> bool {
    if !record
        .target()
        .starts_with("pingora_core::server::transfer_fd")
        || record.level() > Level::Warn
    {
        return false;
    }
    let text = record.args().to_string();
    text.starts_with("No incoming socket transfer") || text.starts_with("server not ready")
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.stderr.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let out = FILE.get().unwrap_or(&self.stderr);
        if upgrade_retry(record) {
            out.log(
                &Record::builder()
                    .args(*record.args())
                    .level(Level::Debug)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            );
            return;
        }
        out.log(record);
    }

    fn flush(&self) {}
}

/// Install the logger (stderr). Call once, first thing in `main`.
pub fn init() {
    let stderr = builder().build();
    let max = stderr.filter();
    if log::set_boxed_logger(Box::new(Logger { stderr })).is_ok() {
        log::set_max_level(max);
    }
}

/// From now on, write the server log to `path` (appending; created if missing).
pub fn to_file(path: &str) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let logger = builder()
        .target(env_logger::Target::Pipe(Box::new(file)))
        .build();
    let _ = FILE.set(logger);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_retries_are_recognised() {
        let check = |target: &str, level: Level, text: std::fmt::Arguments| {
            upgrade_retry(
                &Record::builder()
                    .target(target)
                    .level(level)
                    .args(text)
                    .build(),
            )
        };
        let t = "pingora_core::server::transfer_fd";
        assert!(check(
            t,
            Level::Error,
            format_args!("No incoming socket transfer, sleep 1s and try again")
        ));
        assert!(check(
            t,
            Level::Warn,
            format_args!("server not ready, will try again in 1s")
        ));
        assert!(!check(
            t,
            Level::Error,
            format_args!("Giving up reading socket from: x")
        ));
        assert!(!check(
            "tollgate",
            Level::Error,
            format_args!("No incoming socket transfer")
        ));
    }
}
