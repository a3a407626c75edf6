//! `${VAR}` expansion for secrets and paths written in the config file.
//!
//! `$$` is a literal `$`. An unset variable is an error for ordinary fields; for API keys it
//! is recorded instead, so that the provider answers 503 naming the variable rather than the
//! whole gateway refusing to start.

/// Expand every `${VAR}` in `s`; an unset variable is an error naming it.
pub fn expand(s: &str) -> Result<String, String> {
    expand_with(s, |name| std::env::var(name).ok())
        .map_err(|var| format!("environment variable `{var}` is not set"))
}

/// Expand an API key; `Err(VAR)` when a variable it names is unset or the result is empty.
pub fn expand_key(s: &str) -> Result<String, String> {
    let value = expand_with(s, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))?;
    if value.is_empty() {
        return Err(s.to_string());
    }
    Ok(value)
}

fn expand_with(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            let name = &body[..end];
            out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion() {
        let lookup = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(expand_with("x${A}y$$z$", lookup).unwrap(), "x1y$z$");
        assert_eq!(expand_with("${B}", lookup).unwrap_err(), "B");
        assert!(expand_with("${A", lookup).is_err());
        assert_eq!(
            expand_key("${TOLLGATE_TEST_SURELY_UNSET}").unwrap_err(),
            "TOLLGATE_TEST_SURELY_UNSET"
        );
        assert_eq!(expand_key("sk-plain").unwrap(), "sk-plain");
    }
}
