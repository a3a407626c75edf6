//! Named admin users, their passwords and their login sessions: a pure library, wired into
//! the admin listener by its routes.
//!
//! - [`AdminUser`] is plain serde data (name, [`Role`], a PHC password hash) for the state
//!   file; its `Debug` never shows the hash, but its `Serialize` does: an API response must
//!   leave `password_hash` out.
//! - Passwords are hashed with argon2id at the `argon2` crate's defaults (m = 19 MiB, t = 2,
//!   p = 1, the OWASP recommendation) and a 16-byte salt from the OS RNG. A hash or a check
//!   takes tens of milliseconds of CPU and 19 MiB of memory (far longer in an unoptimised
//!   debug build): async code calls [`hash_password_async`] and [`verify_async`], which run
//!   it on Tokio's blocking pool, never the plain functions on an async worker.
//! - [`Sessions`] holds the console's login sessions in memory: a token is 32 OS-random bytes
//!   (`tgs_` + base64url), kept only as its SHA-256 digest, with an idle and an absolute
//!   expiry and at most [`MAX_SESSIONS`] sessions.
//! - [`parse_basic`] reads `Authorization: Basic …`.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest password [`check_password_policy`] accepts, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted anywhere, in bytes (bounds the work of a hash or a check).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest user name, in characters (all ASCII).
pub const MAX_USER_NAME: usize = 64;
/// The most login sessions kept at once; a login beyond it evicts the least recently used.
pub const MAX_SESSIONS: usize = 10_000;
/// A session ends after this long without a request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// A session ends this long after its login, however active.
pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The prefix of every session token (so a leaked one is recognisable, e.g. by scanners).
pub const TOKEN_PREFIX: &str = "tgs_";

/// The most work a stored hash may ask of [`verify_password`]: a hash with larger argon2
/// parameters (a damaged or hostile state file) is refused rather than computed.
const MAX_VERIFY_M_COST_KIB: u32 = 256 * 1024;
const MAX_VERIFY_T_COST: u32 = 16;
const MAX_VERIFY_P_COST: u32 = 16;
/// The longest PHC string [`verify_password`] parses.
const MAX_HASH_LEN: usize = 512;
/// The longest `Authorization` value [`parse_basic`] decodes.
const MAX_BASIC_LEN: usize = 4096;

/// What an admin user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only: every `GET`, no write.
    Viewer,
    /// Everything.
    Admin,
}

impl Role {
    /// Whether this role may change anything (any method other than `GET`/`HEAD`).
    pub fn may_write(self) -> bool {
        matches!(self, Role::Admin)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named admin user as stored: `password_hash` is a PHC string (`$argon2id$v=19$…`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    pub role: Role,
    pub password_hash: String,
}

impl fmt::Debug for AdminUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("password_hash", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters long")]
    PasswordTooShort,
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    PasswordTooLong,
    #[error("the password must not be one character repeated")]
    PasswordOneCharacter,
    #[error(
        "a user name is 1 to {MAX_USER_NAME} characters of letters, digits, '.', '_', '@' and '-'"
    )]
    InvalidUserName,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

/// The password rules for a new password: at least [`MIN_PASSWORD_CHARS`] characters, at
/// most [`MAX_PASSWORD_BYTES`] bytes, not one character repeated.
pub fn check_password_policy(password: &str) -> Result<(), UserError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::PasswordTooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::PasswordTooShort);
    }
    let mut chars = password.chars();
    if let Some(first) = chars.next() {
        if chars.all(|c| c == first) {
            return Err(UserError::PasswordOneCharacter);
        }
    }
    Ok(())
}

/// A user name: 1 to [`MAX_USER_NAME`] characters of `[A-Za-z0-9._@-]`.
pub fn check_user_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(UserError::InvalidUserName)
    }
}

/// The PHC string of `password` hashed with argon2id (the crate's default parameters) and a
/// fresh random salt. Blocking CPU work of tens of milliseconds: from async code, use
/// [`hash_password_async`]. Checks only the length bound, not [`check_password_policy`].
pub fn hash_password(password: &str) -> Result<String, UserError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::PasswordTooLong);
    }
    let salt =
        argon2::password_hash::try_generate_salt().map_err(|e| UserError::Random(e.to_string()))?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (compared in constant time by the
/// crate). False for a malformed hash, a hash of another algorithm, a hash whose parameters
/// exceed the bounds of this module (256 MiB, t = 16, p = 16), or a password longer than
/// [`MAX_PASSWORD_BYTES`]. Blocking CPU work: from async code, use [`verify_async`].
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES || hash.len() > MAX_HASH_LEN {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(params) = argon2::Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_M_COST_KIB
        || params.t_cost() > MAX_VERIFY_T_COST
        || params.p_cost() > MAX_VERIFY_P_COST
    {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A well-formed argon2id hash at the default parameters whose output was made up, so that no
/// password is known to match it: checked against when a login names no such user, so that
/// the answer takes as long as for a real user.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$a2hWaGxxV1J6bWRwU0p4dQ$7Q8S2Yb1l0yW3rMIS6FvVyD+BtYzWc4vY1JOuN1cZ5M";

/// The user `name` if `password` is theirs. When no user has that name, a dummy hash is
/// checked all the same, so the time taken does not tell which names exist. Blocking CPU
/// work, like [`verify_password`].
pub fn authenticate<'a>(
    users: &'a [AdminUser],
    name: &str,
    password: &str,
) -> Option<&'a AdminUser> {
    match users.iter().find(|u| u.name == name) {
        Some(user) => verify_password(&user.password_hash, password).then_some(user),
        None => {
            verify_password(DUMMY_HASH, password);
            None
        }
    }
}

/// [`hash_password`] on Tokio's blocking pool.
pub async fn hash_password_async(password: String) -> Result<String, UserError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .unwrap_or_else(|e| Err(UserError::Hash(format!("hashing task failed: {e}"))))
}

/// [`verify_password`] on Tokio's blocking pool (false if the task fails).
pub async fn verify_async(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || verify_password(&hash, &password))
        .await
        .unwrap_or(false)
}

/// [`authenticate`] on Tokio's blocking pool: the matching user's role.
pub async fn authenticate_async(
    users: Vec<AdminUser>,
    name: String,
    password: String,
) -> Option<Role> {
    tokio::task::spawn_blocking(move || authenticate(&users, &name, &password).map(|u| u.role))
        .await
        .unwrap_or(None)
}

/// The user and password of an `Authorization: Basic <base64(user:pass)>` value (RFC 7617):
/// the scheme in any case, the credentials as UTF-8, split at the first colon. None for
/// another scheme, bad base64, non-UTF-8, no colon, an empty user or an oversized value.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    if value.len() > MAX_BASIC_LEN {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = engine.decode(rest.trim_start()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some((user.to_string(), pass.to_string()))
}

/// The digest a session is kept under: the token itself is never stored.
type TokenDigest = [u8; 32];

fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Session {
    user: String,
    role: Role,
    created: Instant,
    last_seen: Instant,
    /// Login order, to break ties between equal `last_seen` when evicting.
    seq: u64,
}

struct SessionMap {
    map: HashMap<TokenDigest, Session>,
    next_seq: u64,
}

/// The console's login sessions, in memory (a restart logs everyone out; each instance has
/// its own). Thread-safe behind one `Mutex`: the admin path only, never the proxy's.
///
/// Every method has an `_at` form taking the current time, for tests; the plain form uses
/// `Instant::now()`. A lookup refreshes the idle timer.
pub struct Sessions {
    idle: Duration,
    absolute: Duration,
    max: usize,
    inner: Mutex<SessionMap>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_IDLE_TIMEOUT, DEFAULT_ABSOLUTE_TIMEOUT)
    }
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("idle", &self.idle)
            .field("absolute", &self.absolute)
            .field("max", &self.max)
            .field("len", &self.len())
            .finish()
    }
}

impl Sessions {
    /// Sessions that end after `idle` without a request or `absolute` after the login, at
    /// most [`MAX_SESSIONS`] of them.
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self::with_capacity(idle, absolute, MAX_SESSIONS)
    }

    /// As [`Sessions::new`], with at most `max` sessions (at least 1).
    pub fn with_capacity(idle: Duration, absolute: Duration, max: usize) -> Self {
        Sessions {
            idle,
            absolute,
            max: max.max(1),
            inner: Mutex::new(SessionMap {
                map: HashMap::new(),
                next_seq: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionMap> {
        // A panic while holding the lock leaves the map consistent (every change is one
        // insert or remove), so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.created) >= self.absolute
            || now.saturating_duration_since(s.last_seen) >= self.idle
    }

    /// A new session for `user` with `role`: its token, shown to the client once.
    pub fn login(&self, user: &str, role: Role) -> Result<String, UserError> {
        self.login_at(user, role, Instant::now())
    }

    pub fn login_at(&self, user: &str, role: Role, now: Instant) -> Result<String, UserError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| UserError::Random(e.to_string()))?;
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let mut inner = self.lock();
        if inner.map.len() >= self.max {
            inner.map.retain(|_, s| !self.expired(s, now));
        }
        while inner.map.len() >= self.max {
            let oldest = inner
                .map
                .iter()
                .min_by_key(|(_, s)| (s.last_seen, s.seq))
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => inner.map.remove(&k),
                None => break,
            };
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.map.insert(
            digest(&token),
            Session {
                user: user.to_string(),
                role,
                created: now,
                last_seen: now,
                seq,
            },
        );
        Ok(token)
    }

    /// The user and role of a live session, refreshing its idle timer; None for an unknown,
    /// expired or logged-out token (an expired session is removed).
    pub fn lookup(&self, token: &str) -> Option<(String, Role)> {
        self.lookup_at(token, Instant::now())
    }

    pub fn lookup_at(&self, token: &str, now: Instant) -> Option<(String, Role)> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return None;
        }
        let key = digest(token);
        let mut inner = self.lock();
        let session = inner.map.get_mut(&key)?;
        if self.expired(session, now) {
            inner.map.remove(&key);
            return None;
        }
        session.last_seen = session.last_seen.max(now);
        Some((session.user.clone(), session.role))
    }

    /// Ends the session of `token`; whether there was one.
    pub fn logout(&self, token: &str) -> bool {
        self.lock().map.remove(&digest(token)).is_some()
    }

    /// Ends every session of `user` (after a password change, a role change or a deletion);
    /// how many there were.
    pub fn revoke_user(&self, user: &str) -> usize {
        let mut inner = self.lock();
        let before = inner.map.len();
        inner.map.retain(|_, s| s.user != user);
        before - inner.map.len()
    }

    /// Sessions held, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "correct horse battery";

    #[test]
    fn hash_and_verify_round_trip() {
        let hash = hash_password(GOOD).unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(&hash, GOOD));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password(&hash, ""));
        // A fresh salt each time.
        let again = hash_password(GOOD).unwrap();
        assert_ne!(hash, again);
        assert!(verify_password(&again, GOOD));
    }

    #[test]
    fn malformed_or_oversized_hashes_are_false() {
        for bad in [
            "",
            "not a hash",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$!!!!",
            "$argon2id$v=99$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$7Q8S2Yb1l0yW3rMIS6FvVyD+BtYzWc4vY1JOuN1cZ5M",
            "$argon2id$v=19$m=1,t=2,p=1$c2FsdHNhbHRzYWx0$7Q8S2Yb1l0yW3rMIS6FvVyD+BtYzWc4vY1JOuN1cZ5M",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$7Q8S2Yb1l0yW3rMIS6FvVyD+BtYzWc4vY1JOuN1cZ5M",
            // Parameters beyond the bounds: refused, not computed (4 GiB, t = 1000).
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$7Q8S2Yb1l0yW3rMIS6FvVyD+BtYzWc4vY1JOuN1cZ5M",
            "$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHRzYWx0$7Q8S2Yb1l0yW3rMIS6FvVyD+BtYzWc4vY1JOuN1cZ5M",
            "$argon2id$v=19$m=19456,t=2,p=64$c2FsdHNhbHRzYWx0$7Q8S2Yb1l0yW3rMIS6FvVyD+BtYzWc4vY1JOuN1cZ5M",
        ] {
            assert!(!verify_password(bad, GOOD), "{bad}");
        }
        assert!(!verify_password(&"$".repeat(100_000), GOOD));
    }

    #[test]
    fn overlong_passwords_are_refused() {
        let long = "ab".repeat(MAX_PASSWORD_BYTES / 2 + 1);
        assert_eq!(hash_password(&long), Err(UserError::PasswordTooLong));
        assert!(!verify_password(DUMMY_HASH, &long));
    }

    #[test]
    fn authenticate_finds_the_user_and_hides_unknown_names() {
        let users = vec![
            AdminUser {
                name: "alice".into(),
                role: Role::Admin,
                password_hash: hash_password(GOOD).unwrap(),
            },
            AdminUser {
                name: "bob".into(),
                role: Role::Viewer,
                password_hash: "garbage".into(),
            },
        ];
        assert_eq!(
            authenticate(&users, "alice", GOOD).map(|u| u.role),
            Some(Role::Admin)
        );
        assert!(authenticate(&users, "alice", "wrong password!").is_none());
        assert!(authenticate(&users, "bob", GOOD).is_none());
        assert!(authenticate(&users, "carol", GOOD).is_none());
        // The dummy hash is a well-formed hash at the default parameters, so an unknown
        // name costs a real check.
        let parsed = PasswordHash::new(DUMMY_HASH).unwrap();
        let params = argon2::Params::try_from(&parsed).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (
                argon2::Params::DEFAULT_M_COST,
                argon2::Params::DEFAULT_T_COST,
                argon2::Params::DEFAULT_P_COST
            )
        );
    }

    #[tokio::test]
    async fn async_wrappers() {
        let hash = hash_password_async(GOOD.to_string()).await.unwrap();
        assert!(verify_async(hash.clone(), GOOD.to_string()).await);
        assert!(!verify_async(hash.clone(), "nope nope nope".to_string()).await);
        let users = vec![AdminUser {
            name: "root".into(),
            role: Role::Viewer,
            password_hash: hash,
        }];
        assert_eq!(
            authenticate_async(users, "root".into(), GOOD.into()).await,
            Some(Role::Viewer)
        );
    }

    #[test]
    fn password_policy_edges() {
        assert_eq!(
            check_password_policy("abcdefghijk"),
            Err(UserError::PasswordTooShort)
        );
        assert_eq!(check_password_policy(""), Err(UserError::PasswordTooShort));
        assert_eq!(check_password_policy("abcdefghijkl"), Ok(()));
        // Characters, not bytes: 11 two-byte characters are too short, 12 are enough.
        assert_eq!(
            check_password_policy("éaéaéaéaéaé"),
            Err(UserError::PasswordTooShort)
        );
        assert_eq!(check_password_policy("ééééééééééé1"), Ok(()));
        assert_eq!(
            check_password_policy("aaaaaaaaaaaa"),
            Err(UserError::PasswordOneCharacter)
        );
        assert_eq!(
            check_password_policy(&"ü".repeat(40)),
            Err(UserError::PasswordOneCharacter)
        );
        assert_eq!(check_password_policy("aaaaaaaaaaab"), Ok(()));
        let max = format!("{}b", "a".repeat(MAX_PASSWORD_BYTES - 1));
        assert_eq!(check_password_policy(&max), Ok(()));
        assert_eq!(
            check_password_policy(&format!("{max}c")),
            Err(UserError::PasswordTooLong)
        );
        // 513 characters but 1026 bytes: the byte bound counts.
        assert_eq!(
            check_password_policy(&"éa".repeat(342)),
            Err(UserError::PasswordTooLong)
        );
    }

    #[test]
    fn user_name_edges() {
        for ok in ["a", "alice", "ops.team_1@example-corp", &"x".repeat(64)] {
            assert_eq!(check_user_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "al ice",
            "alice:",
            "alice/",
            "ålice",
            "alice\n",
            "a\0",
        ] {
            assert_eq!(
                check_user_name(bad),
                Err(UserError::InvalidUserName),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn role_serde_and_rights() {
        assert_eq!(serde_json::to_string(&Role::Viewer).unwrap(), "\"viewer\"");
        assert_eq!(serde_json::to_string(&Role::Admin).unwrap(), "\"admin\"");
        assert_eq!(
            serde_json::from_str::<Role>("\"admin\"").unwrap(),
            Role::Admin
        );
        assert!(serde_json::from_str::<Role>("\"Admin\"").is_err());
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
        assert!(Role::Admin.may_write());
        assert!(!Role::Viewer.may_write());
        assert_eq!(Role::Viewer.to_string(), "viewer");
    }

    #[test]
    fn admin_user_serde_and_debug() {
        let yaml = "name: alice\nrole: viewer\npassword_hash: $argon2id$v=19$secret-part\n";
        let user: AdminUser = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(user.role, Role::Viewer);
        assert_eq!(serde_yaml::to_string(&user).unwrap(), yaml);
        let debug = format!("{user:?}");
        assert!(
            debug.contains("alice") && debug.contains("Viewer"),
            "{debug}"
        );
        assert!(
            !debug.contains("secret-part") && !debug.contains("argon2"),
            "{debug}"
        );
        assert!(serde_yaml::from_str::<AdminUser>(&format!("{yaml}extra: 1\n")).is_err());
        assert!(serde_yaml::from_str::<AdminUser>("name: alice\nrole: viewer\n").is_err());
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn tokens_are_fresh_prefixed_and_not_stored() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let a = s.login_at("alice", Role::Admin, t0).unwrap();
        let b = s.login_at("alice", Role::Admin, t0).unwrap();
        assert_ne!(a, b);
        for t in [&a, &b] {
            let body = t.strip_prefix(TOKEN_PREFIX).unwrap();
            assert_eq!(body.len(), 43, "{t}");
            assert_eq!(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(body)
                    .unwrap()
                    .len(),
                32
            );
        }
        assert_eq!(s.lookup_at(&a, t0), Some(("alice".into(), Role::Admin)));
        assert_eq!(s.lookup(&b), Some(("alice".into(), Role::Admin)));
        // Keyed by digest: no stored key is the token's bytes.
        let inner = s.lock();
        assert_eq!(inner.map.len(), 2);
        assert!(inner
            .map
            .keys()
            .all(|k| *k == digest(&a) || *k == digest(&b)));
        drop(inner);
        for bad in [
            "",
            "tgs_",
            "tgs_x",
            &a[..a.len() - 1],
            &format!("{a}x"),
            &a[4..],
        ] {
            assert_eq!(s.lookup_at(bad, t0), None, "{bad}");
        }
        assert!(!format!("{s:?}").contains(&a));
    }

    #[test]
    fn idle_expiry_is_refreshed_by_use() {
        let s = Sessions::new(hours(12), hours(7 * 24));
        let t0 = Instant::now();
        let tok = s.login_at("alice", Role::Viewer, t0).unwrap();
        // Used every 11 hours: stays alive past the idle timeout.
        for i in 1..=5 {
            assert!(s.lookup_at(&tok, t0 + hours(11 * i)).is_some(), "use {i}");
        }
        // Then 12 hours without use: gone, and removed.
        assert_eq!(s.lookup_at(&tok, t0 + hours(55 + 12)), None);
        assert!(s.is_empty());
        // Just under the idle timeout still counts.
        let tok = s.login_at("alice", Role::Viewer, t0).unwrap();
        assert!(s
            .lookup_at(&tok, t0 + hours(12) - Duration::from_secs(1))
            .is_some());
    }

    #[test]
    fn absolute_expiry_despite_use() {
        let s = Sessions::new(hours(12), hours(7 * 24));
        let t0 = Instant::now();
        let tok = s.login_at("alice", Role::Admin, t0).unwrap();
        let mut t = t0;
        while t + hours(10) < t0 + hours(7 * 24) {
            t += hours(10);
            assert!(s.lookup_at(&tok, t).is_some());
        }
        assert_eq!(s.lookup_at(&tok, t0 + hours(7 * 24)), None);
        assert!(s.is_empty());
        // Configurable: a short absolute limit.
        let s = Sessions::new(hours(12), Duration::from_secs(60));
        let tok = s.login_at("alice", Role::Admin, t0).unwrap();
        assert!(s.lookup_at(&tok, t0 + Duration::from_secs(59)).is_some());
        assert_eq!(s.lookup_at(&tok, t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_lookup_with_an_earlier_time_does_not_move_the_timer_back() {
        let s = Sessions::new(hours(1), hours(100));
        let t0 = Instant::now();
        let tok = s.login_at("alice", Role::Admin, t0 + hours(2)).unwrap();
        assert!(s.lookup_at(&tok, t0 + hours(1)).is_some());
        assert!(s
            .lookup_at(&tok, t0 + hours(2) + Duration::from_secs(3599))
            .is_some());
    }

    #[test]
    fn logout_and_revoke_user() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let a1 = s.login_at("alice", Role::Admin, t0).unwrap();
        let a2 = s.login_at("alice", Role::Admin, t0).unwrap();
        let b = s.login_at("bob", Role::Viewer, t0).unwrap();
        assert!(s.logout(&a1));
        assert!(!s.logout(&a1));
        assert!(!s.logout("tgs_unknown"));
        assert_eq!(s.lookup_at(&a1, t0), None);
        assert!(s.lookup_at(&a2, t0).is_some());
        assert_eq!(s.revoke_user("alice"), 1);
        assert_eq!(s.revoke_user("alice"), 0);
        assert_eq!(s.lookup_at(&a2, t0), None);
        assert_eq!(s.lookup_at(&b, t0), Some(("bob".into(), Role::Viewer)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn eviction_takes_the_least_recently_used() {
        let s = Sessions::with_capacity(hours(12), hours(100), 3);
        let t0 = Instant::now();
        let a = s.login_at("a", Role::Admin, t0).unwrap();
        let b = s.login_at("b", Role::Admin, t0).unwrap();
        let c = s.login_at("c", Role::Admin, t0).unwrap();
        // `a` used since: `b` is now the least recently used.
        assert!(s.lookup_at(&a, t0 + hours(1)).is_some());
        let d = s.login_at("d", Role::Admin, t0 + hours(2)).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.lookup_at(&b, t0 + hours(2)), None);
        for t in [&a, &c, &d] {
            assert!(s.lookup_at(t, t0 + hours(2)).is_some());
        }
        // Expired sessions go first, before any live one.
        let s = Sessions::with_capacity(hours(1), hours(100), 2);
        let old = s.login_at("old", Role::Admin, t0).unwrap();
        let live = s.login_at("live", Role::Admin, t0 + hours(1)).unwrap();
        let new = s
            .login_at("new", Role::Admin, t0 + hours(1) + Duration::from_secs(1))
            .unwrap();
        let now = t0 + hours(1) + Duration::from_secs(2);
        assert_eq!(s.lookup_at(&old, now), None);
        assert!(s.lookup_at(&live, now).is_some());
        assert!(s.lookup_at(&new, now).is_some());
    }

    #[test]
    fn the_default_bound_is_ten_thousand() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let first = s.login_at("u", Role::Viewer, t0).unwrap();
        for i in 1..MAX_SESSIONS {
            s.login_at("u", Role::Viewer, t0 + Duration::from_millis(i as u64))
                .unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        let now = t0 + Duration::from_secs(60);
        let last = s.login_at("u", Role::Viewer, now).unwrap();
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.lookup_at(&first, now), None);
        assert!(s.lookup_at(&last, now).is_some());
        assert_eq!(s.revoke_user("u"), MAX_SESSIONS);
    }

    #[test]
    fn sessions_are_shared_across_threads() {
        let s = std::sync::Arc::new(Sessions::default());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let name = format!("user{i}");
                    let tok = s.login(&name, Role::Viewer).unwrap();
                    s.lookup(&tok)
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), Some((format!("user{i}"), Role::Viewer)));
        }
        assert_eq!(s.len(), 4);
    }

    fn basic(raw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn basic_auth_parsing() {
        let ok = |v: &str| parse_basic(v.as_bytes());
        assert_eq!(
            ok(&basic("alice:pa:ss word")),
            Some(("alice".into(), "pa:ss word".into()))
        );
        assert_eq!(ok(&basic("alice:")), Some(("alice".into(), String::new())));
        assert_eq!(
            ok(&basic("jörg:pässwörd")),
            Some(("jörg".into(), "pässwörd".into()))
        );
        // Scheme in any case, extra spaces, no padding.
        let enc = base64::engine::general_purpose::STANDARD.encode("al:xy");
        assert!(enc.ends_with('='));
        for v in [
            format!("basic {enc}"),
            format!("BASIC   {enc}"),
            format!("  Basic {enc}  "),
            format!("Basic {}", enc.trim_end_matches('=')),
        ] {
            assert_eq!(ok(&v), Some(("al".into(), "xy".into())), "{v}");
        }
        // Refused.
        for v in [
            String::new(),
            "Basic".to_string(),
            "Basic ".to_string(),
            basic("no-colon"),
            basic(":password only"),
            format!("Bearer {enc}"),
            format!("Basicx {enc}"),
            format!("Basic {enc}!"),
            "Basic !!!!".to_string(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::URL_SAFE.encode([0xfb, 0xff, b':', b'a'])
            ),
            format!("Basic {}", "A".repeat(MAX_BASIC_LEN)),
        ] {
            assert_eq!(ok(&v), None, "{v}");
        }
        // Non-UTF-8 credentials and a non-UTF-8 header value.
        let latin1 = base64::engine::general_purpose::STANDARD.encode(b"j\xf6rg:pass");
        assert_eq!(ok(&format!("Basic {latin1}")), None);
        assert_eq!(parse_basic(b"Basic \xff\xfe"), None);
    }
}
