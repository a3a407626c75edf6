//! The web console: a real browser drives it (tests/console/browser.py, headless Chromium
//! through Playwright), and the HTTP side is checked directly: security headers, cached and
//! compressed assets, CSRF, the login limiter, the switch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use std::path::Path;

fn python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python")
}

fn has_browser() -> bool {
    let ok = std::process::Command::new(python())
        .args(["-c", "import playwright"])
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new("/usr/bin/chromium").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/deps.sh installs chromium and playwright"
        );
        eprintln!("skipped: no chromium or playwright (run tests/deps.sh)");
    }
    ok
}

/// A route `demo` for mock-*, quotas for every consumer, the consumer `alice` (team
/// `research`, credential `sk-alice`), a price for mock-a, and alice's monthly budget of $5.
fn console_body(mock: &Mock) -> String {
    Body::mock(&mock.url())
        .route("demo", "mock-*", None)
        .section("quota:\n  consumers: [\"*\"]")
        .section(
            "consumers:\n  - {name: alice, team: research, credentials: [\"sk-alice\"]}\n\
             pricing: {defaults: false, prices: [{provider: mock, model: mock-a, input: 1000, output: 2000}]}\n\
             budgets:\n  - {name: alice-monthly, consumer: alice, amount: 5, period: month, time_zone: Asia/Shanghai}",
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_gateway_from_the_console_in_a_browser() {
    if !has_browser() {
        return;
    }
    let mock = Mock::start();
    let gw = Gateway::start(&console_body(&mock));
    let shots = std::env::var("TOLLGATE_CONSOLE_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| gw.dir.path().join("shots"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py");
    let out = tokio::process::Command::new(python())
        .arg(script)
        .arg(gw.admin_url(""))
        .arg(gw.url(""))
        .arg(mock.url())
        .arg(&shots)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser run failed:\n{text}");
    for page in [
        "setup",
        "overview",
        "providers",
        "routes",
        "consumers",
        "budgets",
        "requests",
        "playground",
        "config",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "{page}");
    }
    // The provider key typed in the form never left the gateway again.
    assert!(!gw.stderr().contains("sk-browser-provider-key"));
    assert!(!gw.access_log_text().contains("sk-browser-provider-key"));
}

/// The header `name` of `resp`.
fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_http_headers_csrf_login_limit_and_switch() {
    let mock = Mock::start();
    let gw = Gateway::start(&console_body(&mock));
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // `/` leads to the console; the page is never cached and carries a strict CSP.
    let root = c.get(gw.admin_url("/")).send().await.unwrap();
    assert_eq!(root.status(), 302);
    assert_eq!(header(&root, "location"), "/console/");
    let page = c
        .get(gw.admin_url("/console/"))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    assert_eq!(header(&page, "content-encoding"), "br");
    let html = get_text(&gw.admin_url("/console/")).await;
    assert!(!html.contains("<script>"), "no inline script");
    let app = html
        .split('"')
        .find(|s| s.starts_with("/console/assets/app.") && s.ends_with(".js"))
        .expect("the page names its hashed script")
        .to_string();
    let js = c
        .get(gw.admin_url(&app))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(header(&js, "cache-control").contains("immutable"));
    assert_eq!(header(&js, "content-encoding"), "gzip");
    assert!(header(&js, "content-type").starts_with("text/javascript"));
    let stale = c
        .get(gw.admin_url("/console/assets/app.000000000000.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 404);

    // First run, then a cookie session: a write needs its CSRF token.
    let setup = c
        .post(gw.admin_url("/admin/api/v1/setup"))
        .json(&serde_json::json!({"user": "admin", "password": "console-pass-2026"}))
        .send()
        .await
        .unwrap();
    assert_eq!(setup.status(), 201);
    let login = c
        .post(gw.admin_url("/console/api/login"))
        .json(&serde_json::json!({"user": "admin", "password": "console-pass-2026"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = header(&login, "set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let v: serde_json::Value = login.json().await.unwrap();
    assert!(
        v.get("token").is_none(),
        "the token stays in the HttpOnly cookie: {v}"
    );
    let csrf = v["csrf"].as_str().unwrap().to_string();
    let write = |csrf: Option<&str>| {
        let mut r = c
            .post(gw.admin_url("/admin/api/v1/consumers"))
            .header("cookie", &session)
            .json(&serde_json::json!({"name": format!("c{}", csrf.map_or(0, str::len))}));
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        r.send()
    };
    let forged = write(None).await.unwrap();
    assert_eq!(forged.status(), 403);
    let v: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(v["error"]["code"], "permission_denied", "{v}");
    assert_eq!(write(Some("0123")).await.unwrap().status(), 403);
    assert_eq!(write(Some(&csrf)).await.unwrap().status(), 201);
    let read = c
        .get(gw.admin_url("/admin/api/v1/consumers"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "reads need no token");

    // Failed logins from one address: refused after ten, with Retry-After.
    let mut last = 0;
    for _ in 0..11 {
        let r = c
            .post(gw.admin_url("/console/api/login"))
            .json(&serde_json::json!({"user": "admin", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        if last == 429 {
            assert!(!header(&r, "retry-after").is_empty());
            break;
        }
        assert_eq!(last, 401);
    }
    assert_eq!(last, 429, "the eleventh failed login is refused");

    // Switched off by a reload: the console is gone, the API stays.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let text = text.replacen("  admin:\n", "  admin:\n    console: false\n", 1);
    std::fs::write(&gw.config_path, text).unwrap();
    let reload = c
        .post(gw.admin_url("/admin/reload"))
        .header("authorization", "Basic YWRtaW46Y29uc29sZS1wYXNzLTIwMjY=")
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());
    let gone = c.get(gw.admin_url("/console/")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(read_status(&c, &gw, &session).await, 200);
    assert_eq!(send_chat(&gw, "mock-a").await, 200, "the proxy serves on");
}

async fn read_status(c: &reqwest::Client, gw: &Gateway, session: &str) -> u16 {
    c.get(gw.admin_url("/admin/api/v1/consumers"))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn send_chat(gw: &Gateway, model: &str) -> u16 {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
