//! What a start needs from the machine beyond a valid config, checked before Pingora takes
//! over: every listener address free, TLS certificates and keys loadable and matching, the
//! `server.ca_file` bundle loadable, the access log, the error log and the embedded store
//! writable, and in daemon mode the pid file writable (`-t` warns about it when the config
//! does not say `daemon: true`, since it cannot know whether `-d` will be given), the Redis
//! URL well formed.
//!
//! `tollgate -t` and the real start run the same `check`, so a config that `-t` accepts does
//! not then fail at start for any of these reasons, and a start that cannot work exits at
//! once with one line naming the field, instead of a panic deep in Pingora or a listener
//! that retries a busy port for half a minute.
//!
//! Listener addresses: a start binds each address (all at once, so two listeners that
//! overlap are caught too) and fails when one is taken. A start with `-u` takes the sockets
//! of the running instance and binds nothing here. `-t` is meant to be run beside the
//! running instance, before a reload or an upgrade: an address in use *by a running tollgate
//! process* (the config's `pid_file`, or a process of this executable that holds that
//! listening socket) is a warning, not an error; in use by anything else, an error.

use crate::runtime::model::{AccessLogTarget, Listener};
use crate::runtime::{ConfigError, Gateway};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Which command the checks serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `tollgate -t`.
    Test,
    /// A start; `upgrade`: `-u` (sockets come from the old process), `daemon`: `-d`.
    Start { upgrade: bool, daemon: bool },
}

/// `server.user` and `server.group` that do not exist on this machine, with why.
fn accounts(g: &Gateway) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if let Some(name) = &g.server.user {
        match nix::unistd::User::from_name(name) {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(("server.user", format!("no user `{name}` on this machine"))),
            Err(e) => problems.push(("server.user", format!("cannot look up user `{name}`: {e}"))),
        }
    }
    if let Some(name) = &g.server.group {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                problems.push(("server.group", format!("no group `{name}` on this machine")))
            }
            Err(e) => problems.push((
                "server.group",
                format!("cannot look up group `{name}`: {e}"),
            )),
        }
    }
    problems
}

/// Run every check; the warnings are for `-t` to print. The first failure is returned.
pub fn check(g: &Gateway, mode: Mode) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    let listeners = named_listeners(g);
    for (field, l) in &listeners {
        tls(field, l)?;
    }
    if let Some(path) = &g.server.ca_file {
        ca_file(path).map_err(|e| ConfigError::field("server.ca_file", e))?;
    }
    if let AccessLogTarget::File(path) = &g.access_log {
        writable(Path::new(path)).map_err(|e| ConfigError::field("access_log.path", e))?;
    }
    // Written only by a daemon (`server.daemon` or `-d`). `-t` cannot know about `-d`: it
    // reports them as warnings unless the config itself says daemon.
    let daemon = match mode {
        Mode::Test => g.server.daemon,
        Mode::Start { daemon, .. } => daemon || g.server.daemon,
    };
    // The error log is written in the foreground too.
    if let Some(path) = &g.server.error_log {
        writable(Path::new(path)).map_err(|e| ConfigError::field("server.error_log", e))?;
    }
    // A daemon switches to `server.user`/`group` (Pingora does it after the fork).
    for (field, problem) in accounts(g) {
        if daemon {
            return Err(ConfigError::field(field, problem));
        }
        if mode == Mode::Test {
            warnings.push(format!(
                "`{field}`: {problem} (needed when started with -d)"
            ));
        }
    }
    let daemon_files = [("server.pid_file", g.server.pid_file.as_str())];
    for (field, path) in daemon_files {
        match writable(Path::new(path)) {
            Ok(()) => {}
            Err(e) if daemon => return Err(ConfigError::field(field, e)),
            Err(e) if mode == Mode::Test => {
                warnings.push(format!("`{field}`: {e} (needed when started with -d)"))
            }
            Err(_) => {}
        }
    }
    match &g.store.redis {
        Some(r) => crate::store::redis::check(r).map_err(|(f, e)| ConfigError::field(f, e))?,
        None if g.store.needs_local => {
            store(&g.store.path).map_err(|e| ConfigError::field("store.path", e))?
        }
        None => {}
    }
    if !matches!(mode, Mode::Start { upgrade: true, .. }) {
        bind_all(g, &listeners, mode, &mut warnings)?;
    }
    Ok(warnings)
}

fn named_listeners(g: &Gateway) -> Vec<(String, &Listener)> {
    let mut out: Vec<(String, &Listener)> = g
        .proxy_listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listeners.proxy[{i}]"), l))
        .collect();
    if let Some(l) = &g.admin_listener {
        out.push(("listeners.admin".to_string(), l));
    }
    out
}

/// Load the certificate chain and key the way Pingora's listener does, and pair them.
fn tls(field: &str, l: &Listener) -> Result<(), ConfigError> {
    let Some(t) = &l.tls else { return Ok(()) };
    let cert_field = format!("{field}.tls.cert");
    let key_field = format!("{field}.tls.key");
    let read = |path: &str, field: &str| {
        std::fs::read(path).map_err(|e| ConfigError::field(field, format!("`{path}`: {e}")))
    };
    let pem = read(&t.cert, &cert_field)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::field(&cert_field, format!("`{}`: {e}", t.cert)))?;
    if certs.is_empty() {
        return Err(ConfigError::field(
            cert_field,
            format!("`{}` holds no PEM certificate", t.cert),
        ));
    }
    let pem = read(&t.key, &key_field)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| ConfigError::field(&key_field, format!("`{}`: {e}", t.key)))?
        .ok_or_else(|| {
            ConfigError::field(
                &key_field,
                format!(
                    "`{}` holds no PEM private key (PKCS#1, PKCS#8 or SEC1)",
                    t.key
                ),
            )
        })?;
    pingora_core::tls::install_default_crypto_provider();
    pingora_core::tls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError::field(
                key_field,
                format!("`{}` does not go with `{}`: {e}", t.key, t.cert),
            )
        })?;
    // Pingora's own loader, which the listener uses, must accept the same files.
    match pingora_core::tls::load_certs_and_key_files(&t.cert, &t.key) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ConfigError::field(
            format!("{field}.tls"),
            "no usable certificate and key",
        )),
        Err(e) => Err(ConfigError::field(format!("{field}.tls"), e.to_string())),
    }
}

/// The upstream CA bundle, loaded the way Pingora's connector loads it.
fn ca_file(path: &str) -> Result<(), String> {
    crate::provider::load_ca(path)?;
    let mut store = pingora_core::tls::RootCertStore::empty();
    pingora_core::tls::load_ca_file_into_store(path, &mut store)
        .map_err(|e| format!("`{path}`: {e}"))
}

/// The embedded store: an existing file must be a SQLite database we can open read-write;
/// a new one must be creatable (the start creates missing directories).
fn store(path: &Path) -> Result<(), String> {
    if path.exists() {
        writable(path)?;
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        rusqlite::Connection::open_with_flags(path, flags)
            .and_then(|c| c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())))
            .map_err(|e| format!("`{}`: {e}", path.display()))
    } else {
        writable(path)
    }
}

/// Whether the process can write `path`: open an existing file for appending (never
/// creating or truncating it), or create (and remove) a probe file in the nearest existing
/// directory above a missing one.
fn writable(path: &Path) -> Result<(), String> {
    let show = path.display();
    if path.is_dir() {
        return Err(format!("`{show}` is a directory"));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        // A FIFO or a device (`/dev/stdout`): opening one to probe it can block until a
        // reader appears, so only its permission bits are checked.
        if !meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            return match meta.permissions().mode() & 0o222 {
                0 => Err(format!("cannot write `{show}`: read-only")),
                _ => Ok(()),
            };
        }
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| format!("cannot write `{show}`: {e}"));
    }
    let mut dir: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.as_os_str().is_empty() {
        dir = PathBuf::from(".");
    }
    while !dir.exists() {
        match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
            _ => dir = PathBuf::from("."),
        }
    }
    if !dir.is_dir() {
        return Err(format!(
            "cannot create `{show}`: `{}` is not a directory",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".tollgate-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot create `{show}`: directory `{}`: {e}",
            dir.display()
        )),
    }
}

/// Bind every listener address, holding each socket until all are bound.
fn bind_all(
    g: &Gateway,
    listeners: &[(String, &Listener)],
    mode: Mode,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mut held = Vec::new();
    let mut seen: Vec<(SocketAddr, String)> = Vec::new();
    for (field, l) in listeners {
        let field = format!("{field}.address");
        let addr: SocketAddr = l
            .address
            .parse()
            .map_err(|e| ConfigError::field(&field, format!("`{}`: {e}", l.address)))?;
        if let Some((_, other)) = seen.iter().find(|(a, _)| *a == addr) {
            return Err(ConfigError::field(
                field,
                format!("{addr} is also `{other}`"),
            ));
        }
        match std::net::TcpListener::bind(addr) {
            Ok(socket) => held.push(socket),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && mode == Mode::Test => {
                match running_instance(g, addr) {
                    Some(who) => warnings.push(format!(
                        "`{field}`: {addr} is in use by the running instance ({who}); \
                         an upgrade (-u) takes it over, a fresh start needs it free"
                    )),
                    None => {
                        return Err(ConfigError::field(
                            field,
                            format!("cannot listen on {addr}: {e} (not by a running tollgate)"),
                        ))
                    }
                }
            }
            Err(e) => {
                return Err(ConfigError::field(
                    field,
                    format!("cannot listen on {addr}: {e}"),
                ))
            }
        }
        seen.push((addr, field));
    }
    drop(held);
    Ok(())
}

/// A running tollgate that listens on `addr`: the process named by the config's pid file,
/// or a process of this executable, holding the listening socket. When the pid file's
/// process is alive but its sockets cannot be read (another user), it is assumed to be it.
fn running_instance(g: &Gateway, addr: SocketAddr) -> Option<String> {
    let inodes = listening_inodes(addr);
    let from_pid_file = std::fs::read_to_string(&g.server.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    if let Some(pid) = from_pid_file {
        match holds(pid, &inodes) {
            Some(true) => return Some(format!("pid {pid} from {}", g.server.pid_file)),
            None => {
                return Some(format!(
                    "pid {pid} from {}, assumed: its sockets are not readable",
                    g.server.pid_file
                ))
            }
            Some(false) => {}
        }
    }
    let exe = std::env::current_exe().ok()?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let same_exe = std::fs::read_link(entry.path().join("exe"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .is_some_and(|n| n.trim_end_matches(" (deleted)") == name);
        if same_exe && holds(pid, &inodes) == Some(true) {
            return Some(format!("pid {pid}"));
        }
    }
    None
}

/// Whether `pid` has one of `inodes` open (`None`: its descriptors cannot be read).
fn holds(pid: u32, inodes: &[u64]) -> Option<bool> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).ok().is_some_and(|target| {
            let t = target.to_string_lossy();
            t.strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|i| inodes.contains(&i))
        })
    }))
}

/// Inodes of the listening TCP sockets that `addr` conflicts with (same port, same address
/// or either one the wildcard), from `/proc/net/tcp` and `/proc/net/tcp6`.
fn listening_inodes(addr: SocketAddr) -> Vec<u64> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let Some(local) = parse_proc_addr(cols[1]) else {
                continue;
            };
            let conflicts = local.port() == addr.port()
                && (local.ip() == addr.ip()
                    || local.ip().is_unspecified()
                    || addr.ip().is_unspecified());
            if conflicts {
                if let Ok(inode) = cols[9].parse() {
                    out.push(inode);
                }
            }
        }
    }
    out
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word is printed
/// in host byte order.
fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<u32> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_be(u32::from_str_radix(hex, 16).ok()?))
    };
    let ip: std::net::IpAddr = match ip.len() {
        8 => std::net::Ipv4Addr::from(word(0)?).into(),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?.to_be_bytes());
            }
            std::net::Ipv6Addr::from(bytes).into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_parse() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_proc_addr("0100007F:1F90"),
                Some("127.0.0.1:8080".parse().unwrap())
            );
            assert_eq!(
                parse_proc_addr("00000000000000000000000001000000:0050"),
                Some("[::1]:80".parse().unwrap())
            );
        }
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn a_port_held_by_this_process_is_found_in_proc() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let inodes = listening_inodes(addr);
        assert!(!inodes.is_empty());
        assert_eq!(holds(std::process::id(), &inodes), Some(true));
    }

    #[test]
    fn a_fifo_without_a_reader_is_checked_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("log.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening it for writing would block forever: the check must not.
        assert!(writable(&fifo).is_ok());
    }

    #[test]
    fn writable_never_creates_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/access.log");
        assert!(writable(&path).is_ok());
        assert!(!dir.path().join("sub").exists());
        assert!(writable(dir.path()).is_err(), "a directory");
        let e = writable(Path::new("/proc/nonexistent/x.log")).unwrap_err();
        assert!(e.contains("/proc"), "{e}");
    }
}
