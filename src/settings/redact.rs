//! Settings fit to show: every secret written literally is masked (`sk-…a1b2`: enough to
//! tell keys apart, never enough to use one), while `${VAR}` references stay as written,
//! since they name a variable, not a value. What the admin API and the console show, and
//! what logs may print.

use super::text::Secret;
use super::{KeyEntry, Settings};

impl Secret {
    /// Nothing but `${NAME}` references: safe to show as written.
    fn only_references(&self) -> bool {
        let mut rest = self.as_written();
        if rest.is_empty() {
            return true;
        }
        while !rest.is_empty() {
            let Some(body) = rest.strip_prefix("${") else {
                return false;
            };
            let Some(end) = body.find('}') else {
                return false;
            };
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return false;
            }
            rest = &body[end + 1..];
        }
        true
    }

    /// The secret fit to show: references as written, a literal masked.
    pub fn masked(&self) -> Secret {
        if self.only_references() {
            return self.clone();
        }
        Secret(mask(self.as_written()))
    }

    /// A URL that may carry a token in its path, query or user part (a chat tool's incoming
    /// webhook), fit to show: references as written, else the scheme and host kept and the
    /// rest masked (`https://hooks.slack.com/…a1b2`).
    pub fn masked_url(&self) -> Secret {
        if self.only_references() {
            return self.clone();
        }
        let text = self.as_written();
        let Some((scheme, rest)) = text.split_once("://") else {
            return self.masked();
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let host = match authority.rsplit_once('@') {
            Some((_, host)) => format!("…@{host}"),
            None => authority.to_string(),
        };
        let chars: Vec<char> = tail.chars().collect();
        let shown = if chars.len() >= 12 {
            chars[chars.len() - 4..].iter().collect()
        } else {
            String::new()
        };
        Secret(format!("{scheme}://{host}/…{shown}"))
    }
}

/// `sk-…a1b2` for a literal of 12 characters or more (its first 3 and last 4), `…` for a
/// shorter one.
pub fn mask(literal: &str) -> String {
    let chars: Vec<char> = literal.chars().collect();
    if chars.len() < 12 {
        return "…".to_string();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// A credential's digest shown by its id: `sha256:` and its first 12 hex digits, `…`.
pub fn mask_digest(digest: &str) -> String {
    let id: String = digest.chars().take("sha256:".len() + 12).collect();
    format!("{id}…")
}

/// A Redis URL with its password masked, unless the password is a `${VAR}` reference (the
/// rest of the URL names a host, not a secret).
fn mask_redis_url(url: &Secret) -> Secret {
    if url.only_references() {
        return url.clone();
    }
    let text = url.as_written();
    let Some((scheme, rest)) = text.split_once("://") else {
        return url.masked();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.clone();
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let shown = match password {
        Some(p) if Secret(p.to_string()).only_references() => format!("{user}:{p}"),
        Some(_) => format!("{user}:…"),
        None if Secret(user.to_string()).only_references() => user.to_string(),
        // `redis://password@host` is read by some clients as a password.
        None => "…".to_string(),
    };
    Secret(format!("{scheme}://{shown}@{host}"))
}

impl Settings {
    /// A copy with every literal secret masked: provider keys, consumer credentials, the
    /// admin token, the Redis password, alert webhook URLs.
    pub fn redacted(&self) -> Settings {
        let mut s = self.clone();
        for p in &mut s.providers {
            for key in &mut p.api_keys {
                match key {
                    KeyEntry::Plain(secret) => *secret = secret.masked(),
                    KeyEntry::Named(named) => named.key = named.key.masked(),
                }
            }
        }
        for c in &mut s.consumers {
            for cred in &mut c.credentials {
                *cred = cred.masked();
            }
            for digest in &mut c.hashed_credentials {
                *digest = mask_digest(digest);
            }
        }
        let listeners = s
            .listeners
            .proxy
            .iter_mut()
            .chain(s.listeners.admin.as_mut());
        for l in listeners {
            if let Some(token) = &mut l.token {
                *token = token.masked();
            }
        }
        if let Some(tracing) = &mut s.tracing {
            for value in tracing.headers.values_mut() {
                *value = value.masked();
            }
        }
        if let Some(redis) = &mut s.redis {
            redis.url = mask_redis_url(&redis.url);
            for node in &mut redis.nodes {
                *node = mask_redis_url(node);
            }
        }
        for hook in &mut s.alerts.webhooks {
            hook.url = hook.url.masked_url();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
listeners:
  proxy: [{address: "127.0.0.1:8080"}]
  admin: {address: "127.0.0.1:8001", token: "admin-token-literal-123"}
providers:
  - name: p
    type: openai-compatible
    base_url: http://127.0.0.1:9/v1
    api_keys: ["sk-literal-provider-key-0001", "${OPENAI_KEY}", {name: n, key: "sk-named-literal-key-9999"}, "sk-${PART}-mixed"]
consumers:
  - {name: alice, credentials: ["alice-literal-credential", "${ALICE_KEY}", "short"]}
redis: {url: "redis://user:redis-literal-password@127.0.0.1:6379/0", cluster: true, nodes: ["redis://user:node-literal-password@127.0.0.1:6380"]}
alerts:
  webhooks:
    - {name: slack, url: "https://hooks.slack.com/services/T0/B0/slack-literal-token-77"}
    - {name: env, url: "${HOOK_URL}"}
tracing: {otlp_endpoint: "http://127.0.0.1:4318", headers: {authorization: "Bearer otlp-literal-token-42", x-token: "${OTLP_TOKEN}"}}
"#;

    const SECRETS: [&str; 9] = [
        "otlp-literal-token-42",
        "sk-literal-provider-key-0001",
        "sk-named-literal-key-9999",
        "admin-token-literal-123",
        "alice-literal-credential",
        "redis-literal-password",
        "node-literal-password",
        "short",
        "slack-literal-token",
    ];

    #[test]
    fn literals_are_masked_and_references_kept() {
        let settings = super::super::from_yaml(TEXT).unwrap();
        let shown = super::super::to_yaml(&settings.redacted());
        for secret in SECRETS {
            assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
        }
        for kept in [
            "${OPENAI_KEY}",
            "${ALICE_KEY}",
            "${OTLP_TOKEN}",
            "sk-…0001",
            "127.0.0.1:6379/0",
            "user:…@",
            "https://hooks.slack.com/…n-77",
            "${HOOK_URL}",
        ] {
            assert!(shown.contains(kept), "{kept} missing:\n{shown}");
        }
        assert!(
            !shown.contains("${PART}"),
            "a mixed secret is masked whole:\n{shown}"
        );
        // The original is untouched.
        assert!(super::super::to_yaml(&settings).contains("sk-literal-provider-key-0001"));
    }

    #[test]
    fn redis_urls_keep_their_host_and_references() {
        let url = |s: &str| {
            mask_redis_url(&Secret(s.to_string()))
                .as_written()
                .to_string()
        };
        assert_eq!(url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(url("${REDIS_URL}"), "${REDIS_URL}");
        assert_eq!(url("redis://:${PW}@h:1/0"), "redis://:${PW}@h:1/0");
        assert_eq!(url("redis://:pw@h:1/0"), "redis://:…@h:1/0");
        assert_eq!(url("redis://secretpw@h:1"), "redis://…@h:1");
        assert_eq!(mask("abc"), "…");
    }

    #[test]
    fn webhook_urls_keep_their_host() {
        let url = |s: &str| Secret(s.to_string()).masked_url().as_written().to_string();
        assert_eq!(url("http://127.0.0.1:9/ops"), "http://127.0.0.1:9/…");
        assert_eq!(
            url("https://oapi.dingtalk.com/robot/send?access_token=0123456789abcdef"),
            "https://oapi.dingtalk.com/…cdef"
        );
        assert_eq!(url("https://u:pw@h.example/x"), "https://…@h.example/…");
        assert_eq!(url("${URL}"), "${URL}");
        assert_eq!(url("not a url at all, long"), "not…long");
    }
}
