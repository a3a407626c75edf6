//! The management API, black box: every change through HTTP only, the traffic through the
//! proxy, the state across `kill -9` and restarts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const TOKEN: &str = "admin-token-mgmt-1";
const KEY_ONE: &str = "sk-api-key-one-0001";
const KEY_TWO: &str = "sk-api-key-two-0002";

async fn chat(gw: &Gateway, model: &str, credential: &str) -> (u16, Value) {
    chat_at(&gw.addr, model, credential).await
}

/// A chat completion through the proxy at `addr`.
async fn chat_at(addr: &str, model: &str, credential: &str) -> (u16, Value) {
    let resp = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(credential)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn uses_of(mock: &Mock, key: &str) -> u64 {
    mock_stats(mock).await["by_key"][key].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_apply_persist_and_survive_kill_9() {
    let mock = Mock::start();
    let mut gw = Gateway::start_opts(&mock_provider(&mock.url(), ""), None, Some(TOKEN), &[]);
    let mut api = Api::new(&gw, Some(TOKEN));

    // A provider with two keys, a consumer with a generated credential, a route.
    let provider = json!({
        "name": "api-p", "type": "openai-compatible", "base_url": mock.url(),
        "api_keys": [{"name": "k1", "key": KEY_ONE}, {"name": "k2", "key": KEY_TWO}],
    });
    let (status, v) = api.call(Method::POST, "/providers", Some(provider)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["source"], "api");
    assert_eq!(v["api_keys"][0]["key"], "sk-…0001");
    let (status, _) = api
        .call(Method::POST, "/consumers", Some(json!({"name": "carol"})))
        .await;
    assert_eq!(status, 201);
    let (status, v) = api
        .call(Method::POST, "/consumers/carol/credentials", None)
        .await;
    assert_eq!(status, 201, "{v}");
    let first = v["credential"].as_str().unwrap().to_string();
    let route = json!({
        "name": "api-route",
        "models": [{"model": "api-*", "targets": [{"provider": "api-p"}]}],
        "auth": {"required": true},
    });
    let (status, v) = api.call(Method::POST, "/routes", Some(route)).await;
    assert_eq!(status, 201, "{v}");
    let route_revision = v["api_revision"].as_u64().unwrap();
    for _ in 0..4 {
        assert_eq!(chat(&gw, "api-x", &first).await.0, 200);
    }
    assert_eq!(
        uses_of(&mock, KEY_ONE).await + uses_of(&mock, KEY_TWO).await,
        4
    );

    // Disable one key: the other serves everything.
    let (status, v) = api
        .call(
            Method::PATCH,
            "/providers/api-p/keys/k1",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let (one, two) = (uses_of(&mock, KEY_ONE).await, uses_of(&mock, KEY_TWO).await);
    for _ in 0..4 {
        assert_eq!(chat(&gw, "api-x", &first).await.0, 200);
    }
    assert_eq!(
        uses_of(&mock, KEY_ONE).await,
        one,
        "a disabled key is not used"
    );
    assert_eq!(uses_of(&mock, KEY_TWO).await, two + 4);

    // Rotate the consumer's credential: the old one stops at once, the new one works.
    let (status, v) = api
        .call(
            Method::POST,
            "/consumers/carol/credentials",
            Some(json!({"replace": true})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let second = v["credential"].as_str().unwrap().to_string();
    assert_eq!(chat(&gw, "api-x", &first).await.0, 401);
    assert_eq!(chat(&gw, "api-x", &second).await.0, 200);

    // A rate limit, then a tighter one: the new limit is enforced.
    let limit =
        json!({"name": "api-limit", "key": "consumer", "window": "minute", "requests": 1000});
    assert_eq!(
        api.call(Method::POST, "/rate_limits", Some(limit)).await.0,
        201
    );
    assert_eq!(chat(&gw, "api-x", &second).await.0, 200);
    let (status, _) = api
        .call(
            Method::PATCH,
            "/rate_limits/api-limit",
            Some(json!({"requests": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(chat(&gw, "api-x", &second).await.0);
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(
        api.call(Method::DELETE, "/rate_limits/api-limit", None)
            .await
            .0,
        204
    );

    // Bad writes change nothing and say why.
    let before = api.revision().await;
    let bad_regex =
        json!({"name": "bad", "models": [{"model": "~(", "targets": [{"provider": "api-p"}]}]});
    let (status, v) = api.call(Method::POST, "/routes", Some(bad_regex)).await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("invalid regex") && message.contains("models[0].model"),
        "{message}"
    );
    let unknown =
        json!({"name": "bad", "models": [{"model": "x", "targets": [{"provider": "nope"}]}]});
    let (status, v) = api.call(Method::POST, "/routes", Some(unknown)).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown provider `nope`"),
        "{v}"
    );
    let (_, current) = api.call(Method::GET, "/routes/api-route", None).await;
    let stale = json!({"retry": {"attempts": 2}});
    let (status, v) = api
        .call_if(
            Method::PATCH,
            "/routes/api-route",
            Some(stale.clone()),
            Some("0123456789abcdef"),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "revision_conflict");
    let (status, v) = api
        .call(
            Method::PATCH,
            "/providers/mock",
            Some(json!({"models": ["x"]})),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["error"]["code"], "defined_in_file");
    assert_eq!(api.revision().await, before, "nothing changed");
    let revision = current["revision"].as_str().unwrap();
    let (status, _) = api
        .call_if(
            Method::PATCH,
            "/routes/api-route",
            Some(stale),
            Some(revision),
        )
        .await;
    assert_eq!(status, 200, "the current revision is accepted");

    // Delete the route: its models are gone; restore the revision that had it.
    assert_eq!(
        api.call(Method::DELETE, "/routes/api-route", None).await.0,
        204
    );
    assert_eq!(
        api.call(Method::GET, "/routes/api-route", None).await.0,
        404
    );
    assert_eq!(chat(&gw, "api-x", &second).await.0, 404);
    let (_, history) = api.call(Method::GET, "/revisions", None).await;
    let changes = history["items"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["action"] == "delete" && c["kind"] == "route"),
        "{history}"
    );
    let path = format!("/revisions/{route_revision}/restore");
    let (status, v) = api.call(Method::POST, &path, None).await;
    assert_eq!(status, 200, "{v}");
    // That revision had the first credential and both keys in rotation.
    assert_eq!(chat(&gw, "api-x", &first).await.0, 200);
    assert_eq!(chat(&gw, "api-x", &second).await.0, 401);
    let (_, audit) = api.call(Method::GET, "/audit?limit=3", None).await;
    assert_eq!(audit["items"][0]["action"], "restore", "{audit}");
    assert_eq!(audit["items"][0]["who"], "token");

    // `kill -9` right after an acknowledged write loses nothing.
    let (status, _) = api
        .call(Method::POST, "/consumers", Some(json!({"name": "dave"})))
        .await;
    assert_eq!(status, 201);
    gw.signal_and_wait("-KILL");
    gw.respawn();
    let mut api2 = Api::new(&gw, Some(TOKEN));
    assert_eq!(api2.call(Method::GET, "/consumers/dave", None).await.0, 200);
    let (_, p) = api2.call(Method::GET, "/providers/api-p", None).await;
    assert_eq!(p["source"], "api");
    assert_eq!(chat(&gw, "api-x", &first).await.0, 200);
    let state = gw.dir.path().join("api-state.yaml");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&state).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // `config export` is the merged config, and `-t` accepts it; `config diff` shows the
    // API's objects, masked.
    let run = |args: &[&str]| gw.cli(args);
    let exported = run(&["config", "export"]);
    assert!(
        exported.contains("api-route") && exported.contains(KEY_ONE),
        "{exported}"
    );
    let copy = tempfile::tempdir().unwrap();
    let copy_path = copy.path().join("exported.yaml");
    std::fs::write(&copy_path, &exported).unwrap();
    let checked = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["-t", "-c", copy_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let diff = run(&["config", "diff"]);
    assert!(
        diff.contains("+- name: api-p") && diff.contains("+- name: api-route"),
        "{diff}"
    );
    assert!(!diff.contains(KEY_ONE), "{diff}");
    let removed = diff
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"));
    assert_eq!(
        removed.count(),
        0,
        "the API only adds to the file's objects:\n{diff}"
    );

    // No secret anywhere the operator or a client looks.
    let metrics = gw.metrics().await;
    let log = gw.stop();
    let access = gw.access_log_text();
    for secret in [KEY_ONE, KEY_TWO, &first, &second, TOKEN] {
        // A generated credential is in the one answer that issued it, nowhere else.
        let issued = usize::from(secret == first || secret == second);
        assert_eq!(
            api.seen.matches(secret).count(),
            issued,
            "{secret} in the API's answers"
        );
        for (what, text) in [
            ("api2", &api2.seen),
            ("log", &log),
            ("metrics", &metrics),
            ("access log", &access),
        ] {
            assert!(!text.contains(secret), "{secret} in the {what}");
        }
    }
    let state = std::fs::read_to_string(&state).unwrap();
    assert!(
        !state.contains(&first) && !state.contains(&second),
        "credentials are kept as digests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_users_first_run_login_and_roles() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let mut open = Api::new(&gw, None);
    let (_, v) = open.call(Method::GET, "/setup", None).await;
    assert_eq!(v["needed"], true);
    let (status, v) = open
        .call(Method::POST, "/setup", Some(json!({"password": "short"})))
        .await;
    assert_eq!(status, 400, "{v}");
    let password = "correct horse battery staple";
    let (status, v) = open
        .call(Method::POST, "/setup", Some(json!({"password": password})))
        .await;
    assert_eq!(status, 201, "{v}");
    // From now on the admin API needs credentials; setup is done.
    assert_eq!(open.call(Method::GET, "/config", None).await.0, 401);
    let (status, _) = open
        .call(Method::POST, "/setup", Some(json!({"password": password})))
        .await;
    assert_ne!(status, 201);
    let (status, _) = open
        .call(
            Method::POST,
            "/login",
            Some(json!({"user": "admin", "password": "wrong password!"})),
        )
        .await;
    assert_eq!(status, 401);
    let (status, v) = open
        .call(
            Method::POST,
            "/login",
            Some(json!({"user": "admin", "password": password})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let session = v["token"].as_str().unwrap().to_string();
    let mut admin = Api::new(&gw, Some(&session));
    assert_eq!(admin.call(Method::GET, "/config", None).await.0, 200);
    let viewer = json!({"name": "vera", "role": "viewer", "password": "another long password"});
    assert_eq!(
        admin.call(Method::POST, "/users", Some(viewer)).await.0,
        201
    );
    let (_, users) = admin.call(Method::GET, "/users", None).await;
    assert!(!users.to_string().contains("argon2"), "{users}");
    // A viewer (by password) reads but cannot write.
    let basic = |path: &str| {
        client()
            .request(Method::POST, gw.admin_url(&format!("/admin/api/v1{path}")))
            .basic_auth("vera", Some("another long password"))
    };
    let read = client()
        .get(gw.admin_url("/admin/api/v1/providers"))
        .basic_auth("vera", Some("another long password"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = basic("/consumers")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 403);
    let reload = client()
        .post(gw.admin_url("/admin/reload"))
        .basic_auth("vera", Some("another long password"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 403);
    let (_, audit) = admin.call(Method::GET, "/audit", None).await;
    assert_eq!(audit["items"][0]["who"], "admin", "{audit}");
    // Reloads and balance changes are in the audit log too.
    let reload = client()
        .post(gw.admin_url("/admin/reload"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200);
    let (_, audit) = admin.call(Method::GET, "/audit", None).await;
    assert_eq!(audit["items"][0]["action"], "reload", "{audit}");
    assert_eq!(admin.call(Method::POST, "/logout", None).await.0, 200);
    assert_eq!(admin.call(Method::GET, "/config", None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sharing_redis_serve_each_others_changes() {
    let mock = Mock::start();
    let mut redis = Redis::start();
    let shared = format!(
        "redis: {{url: \"{}\", timeout: 300ms, prefix: \"m{}\"}}\n",
        redis.url(),
        redis.port
    );
    let body = format!("{}{shared}", mock_provider(&mock.url(), ""));
    let a = Gateway::start_opts(&body, None, Some(TOKEN), &[]);
    let b = Gateway::start_opts(&body, None, Some(TOKEN), &[]);
    let mut on_a = Api::new(&a, Some(TOKEN));
    let mut on_b = Api::new(&b, Some(TOKEN));
    let route = |name: &str, pattern: &str| json!({"name": name, "models": [{"model": pattern, "targets": [{"provider": "mock"}]}]});
    let (status, v) = on_a
        .call(Method::POST, "/routes", Some(route("first", "shared-*")))
        .await;
    assert_eq!(status, 201, "{v}");
    eventually("b serves a's first route", || async {
        chat(&b, "shared-x", "any").await.0 == 200
    })
    .await;

    // A change made on one is served by the other within a second.
    let (status, _) = on_a
        .call(Method::POST, "/routes", Some(route("second", "later-*")))
        .await;
    let acked = std::time::Instant::now();
    assert_eq!(status, 201);
    eventually("b serves a's second route", || async {
        chat(&b, "later-x", "any").await.0 == 200
    })
    .await;
    let took = acked.elapsed();
    assert!(took < std::time::Duration::from_secs(1), "b took {took:?}");
    // And the other way round; both keep one history.
    assert_eq!(
        on_b.call(Method::DELETE, "/routes/first", None).await.0,
        204
    );
    eventually("a drops the route b deleted", || async {
        chat(&a, "shared-x", "any").await.0 == 404
    })
    .await;
    let (_, history) = on_a.call(Method::GET, "/revisions", None).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 3, "{history}");

    // Without Redis each keeps serving its last good config and says so.
    redis.kill();
    assert_eq!(chat(&b, "later-x", "any").await.0, 200);
    let readyz = b.admin_url("/readyz");
    eventually("b reports the store down", || async {
        get_json(&readyz, None).await["config_store"]["reachable"] == false
    })
    .await;
    let metrics = b.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "tollgate_config_store_up", &[]),
        0.0,
        "{metrics}"
    );
    let (status, v) = on_a
        .call(Method::POST, "/routes", Some(route("third", "third-*")))
        .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "state_unavailable");
    assert_eq!(
        chat(&a, "third-x", "any").await.0,
        404,
        "a failed write changes nothing"
    );
    assert_eq!(chat(&a, "later-x", "any").await.0, 200);
}

/// Two processes on one state directory, as during a zero-downtime upgrade: a write to
/// either is served by both within the check interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_state_directory_follow_each_other() {
    let mock = Mock::start();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap().to_string();
    let mut procs = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(
            dir.path(),
            PROXY_LISTEN,
            ADMIN_LISTEN,
            None,
            Some(TOKEN),
            &mock_provider(&mock.url(), ""),
        );
        let path = dir.path().join("tollgate.yaml");
        std::fs::write(&path, text).unwrap();
        let mut p = GatewayProcess::spawn(&path, &["--state-dir", &state_dir]);
        let ready = p.wait_ready();
        procs.push((
            p,
            ready.proxy().to_string(),
            ready.admin().unwrap().to_string(),
        ));
        dirs.push(dir);
    }
    let api = |i: usize| format!("http://{}/admin/api/v1", procs[i].2);
    let route =
        json!({"name": "r", "models": [{"model": "both-*", "targets": [{"provider": "mock"}]}]});
    let created = client()
        .post(format!("{}/routes", api(0)))
        .bearer_auth(TOKEN)
        .json(&route)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let second = procs[1].1.clone();
    eventually("the other process serves the route", || {
        let second = second.clone();
        async move { chat_at(&second, "both-x", "any").await.0 == 200 }
    })
    .await;
    let deleted = client()
        .delete(format!("{}/routes/r", api(1)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let first = procs[0].1.clone();
    eventually("the first process drops it", || {
        let first = first.clone();
        async move { chat_at(&first, "both-x", "any").await.0 == 404 }
    })
    .await;
    for (p, _, _) in procs {
        p.stop();
    }
}

/// The served OpenAPI document is valid OpenAPI 3.1 (openapi-spec-validator, installed by
/// `tests/deps.sh`; skipped with a note outside CI where it is missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python");
    let check = "import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')";
    let has = std::process::Command::new(&python)
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/deps.sh installs openapi-spec-validator"
        );
        eprintln!("skipped: no openapi-spec-validator in target/pyvenv (run tests/deps.sh)");
        return;
    }
    let mock = Mock::start();
    let gw = Gateway::start_opts(&mock_provider(&mock.url(), ""), None, Some(TOKEN), &[]);
    let doc = get_json(&gw.admin_url("/admin/api/v1/openapi.json"), Some(TOKEN)).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let file = gw.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new(&python)
        .args(["-c", check, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file change that breaks an object the API created is refused, naming the API's object;
/// the running config keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_that_breaks_an_api_object_is_refused_naming_it() {
    let mock = Mock::start();
    let gw = Gateway::start(&mock_provider(&mock.url(), ""));
    let mut api = Api::new(&gw, None);
    let route = json!({"name": "api-route", "models": [{"model": "api-*", "targets": [{"provider": "mock"}]}]});
    assert_eq!(api.call(Method::POST, "/routes", Some(route)).await.0, 201);
    // The new file renames the provider the API's route uses.
    gw.rewrite_config(
        &mock_provider(&mock.url(), "")
            .replace("name: mock", "name: renamed")
            .replace("provider: mock", "provider: renamed"),
    );
    let resp = client()
        .post(gw.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("management API's objects") && message.contains("api-route"),
        "{message}"
    );
    assert_eq!(
        chat(&gw, "api-x", "any").await.0,
        200,
        "the running config keeps serving"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["-t", "-c", gw.config_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("api-state.yaml"));
}
