"""The console in a real browser (headless Chromium through Playwright), driven like an
operator: first-run setup, login, a provider, a route and a consumer through the forms,
traffic, the request log and the overview against the usage API, a quota top-up, a key
disabled, budgets (spend against the API, top-ups, reset, history, a new budget), a viewer
who cannot write, CSRF, logout. Any failed step, and any error in the
page's console, fails the run. Usage: browser.py ADMIN_URL PROXY_URL MOCK_URL SHOTS_DIR
"""
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
from decimal import ROUND_HALF_UP, Decimal
import urllib.request

from playwright.sync_api import expect, sync_playwright

ADMIN, PROXY, MOCK, SHOTS = sys.argv[1:5]
PASSWORD = "console-pass-2026"
KEY = "sk-browser-provider-key-0123456789"
expect.set_options(timeout=15_000)


def stream_chat(credential):
    """A streaming chat through the proxy as the new consumer; its usage chunk."""
    body = json.dumps({"model": "browser-1", "stream": True,
                       "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "hello from the console test"}]})
    req = urllib.request.Request(f"{PROXY}/v1/chat/completions", data=body.encode(),
                                 headers={"Authorization": f"Bearer {credential}",
                                          "Content-Type": "application/json"})
    usage = None
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200, r.status
        for line in r.read().decode().splitlines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                usage = chunk.get("usage") or usage
    assert usage, "the stream reported its usage"
    return usage


def chat(credential, model):
    """A plain chat through the proxy with `credential`; its status."""
    body = json.dumps({"model": model, "max_tokens": 20,
                       "messages": [{"role": "user", "content": "what does this cost"}]})
    req = urllib.request.Request(f"{PROXY}/v1/chat/completions", data=body.encode(),
                                 headers={"Authorization": f"Bearer {credential}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def eventually(what, probe, within=15):
    """`probe()`'s first true value, asked again until `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        v = probe()
        if v:
            return v
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def fetch(page, method, path, body=None, csrf=True):
    """A call from the page, with the session cookie (and its CSRF token when asked)."""
    return page.evaluate(
        """async ([method, path, body, csrf]) => {
            const s = await (await fetch('/console/api/session')).json();
            const h = {'Content-Type': 'application/json'};
            if (csrf && s.csrf) h['X-CSRF-Token'] = s.csrf;
            const r = await fetch(path, {method, headers: h, body: body === null ? undefined : JSON.stringify(body)});
            return {status: r.status, body: await r.text()};
        }""", [method, path, body, csrf])


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver on a port the OS picks; keeps the bodies it got."""
    bodies = []

    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        Receiver.bodies.append(json.loads(self.rfile.read(n)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/hook"


def outside(page, method, path, body=None):
    """A call with the browser's session cookie but from outside the page (another site's
    form or script would have the cookie sent, never the CSRF token); its status."""
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{ADMIN}{path}", data=data, method=method,
                                 headers={"Cookie": cookies, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def shot(page, name):
    page.wait_for_load_state("networkidle")
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)


def login(page, user, password):
    page.goto(f"{ADMIN}/console/")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.get_by_test_id("who")).to_contain_text(user)


def main():
    os.makedirs(SHOTS, exist_ok=True)
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            steps(page, errors)
        except Exception:
            page.screenshot(path=os.path.join(SHOTS, "failure.png"), full_page=True)
            print("page text at the failure:\n" + page.inner_text("body"), file=sys.stderr)
            print(f"errors in the page: {errors}", file=sys.stderr)
            raise
        browser.close()
    assert not errors, f"errors in the page: {errors}"
    print("console: every step passed")


def steps(page, errors):
    if True:

        # First run: the administrator's password, then logged in.
        page.goto(f"{ADMIN}/")
        expect(page.locator("main.login h2")).to_be_visible()
        shot(page, "setup")
        page.fill("input[name=user]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.get_by_test_id("who")).to_contain_text("admin")
        cookie = [c for c in page.context.cookies() if c["name"] == "tollgate_session"][0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie

        # A provider with a key, through the form; the key is shown masked only.
        page.click("[data-testid=nav-providers]")
        page.fill("input[name=provider_name]", "browser-mock")
        page.fill("input[name=base_url]", MOCK)
        page.fill("input[name=first_key]", KEY)
        page.click("text=New provider >> xpath=.. >> button[type=submit]")
        card = page.get_by_test_id("provider-browser-mock")
        expect(card.get_by_test_id("key-state")).to_have_text("healthy")
        assert KEY not in page.content(), "the key is never sent back"

        # A route for browser-* to it.
        page.click("[data-testid=nav-routes]")
        page.fill("input[name=route_name]", "browser")
        page.fill("input[name=route_model]", "browser-*")
        page.select_option("select[name=route_target]", "browser-mock")
        page.click("form >> button[type=submit]")
        expect(page.get_by_test_id("route-browser")).to_be_visible()
        shot(page, "routes")

        # A consumer: the credential shown once.
        page.click("[data-testid=nav-consumers]")
        page.fill("input[name=consumer_name]", "webapp")
        page.fill("input[name=consumer_team]", "web")
        page.click("text=New consumer >> xpath=.. >> button[type=submit]")
        credential = page.get_by_test_id("new-credential").inner_text()
        assert credential.startswith("tg-"), credential
        expect(page.get_by_test_id("consumer-webapp")).to_be_visible()
        expect(page.get_by_test_id("team-webapp")).to_have_text("web")
        expect(page.get_by_test_id("team-alice")).to_have_text("research")

        # A quota top-up changes the balance.
        expect(page.get_by_test_id("balance-webapp")).to_have_text("0")
        page.fill("input[name=topup-webapp]", "5000")
        page.get_by_test_id("consumer-webapp").locator("button[type=submit]").click()
        expect(page.get_by_test_id("balance-webapp")).to_have_text("5,000")
        shot(page, "consumers")

        # A per-consumer rate limit (through the API), whose standing the pages show.
        r = fetch(page, "POST", "/admin/api/v1/rate_limits",
                  {"name": "per-consumer", "key": "consumer", "window": "minute", "tokens": 100000})
        assert r["status"] == 201, r

        # Traffic as that consumer from a client, then a streamed request in the playground.
        usage = stream_chat(credential)
        page.click("[data-testid=nav-playground]")
        page.fill("input[name=play_model]", "browser-2")
        page.select_option("select[name=play_consumer]", "webapp")
        page.fill("textarea[name=play_content]", "hello from the playground")
        page.click("form button[type=submit]")
        expect(page.get_by_test_id("play-stats")).to_contain_text("HTTP 200")
        expect(page.get_by_test_id("play-stats")).to_contain_text("Output tokens")
        assert page.get_by_test_id("play-answer").inner_text().strip(), "an answer"
        assert "browser-2" in page.get_by_test_id("play-curl").inner_text()
        assert "OpenAI(base_url=" in page.get_by_test_id("play-python").inner_text()
        shot(page, "playground")
        page.click("[data-testid=nav-requests]")
        page.fill("input[name=filter-consumer]", "webapp")
        page.click("form.toolbar button[type=submit]")
        row = page.get_by_test_id("requests").locator("tbody tr").first
        expect(row).to_contain_text("browser-2")
        expect(page.get_by_test_id("requests")).to_contain_text("browser-1")
        expect(page.get_by_test_id("requests")).to_contain_text(str(usage["prompt_tokens"]))
        row.click()
        expect(page.get_by_test_id("request-detail")).to_contain_text("browser-mock")
        expect(page.get_by_test_id("request-detail")).to_contain_text("webapp")
        expect(page.get_by_test_id("request-detail")).to_contain_text("key-1")
        shot(page, "requests")

        # The overview's numbers are the usage API's for the same range.
        page.click("[data-testid=nav-overview]")
        stats = page.get_by_test_id("overview-stats")
        expect(page.get_by_test_id("total-requests")).not_to_have_text("–")
        expect(page.get_by_test_id("active-streams")).to_have_text("0")
        frm, to = stats.get_attribute("data-from"), stats.get_attribute("data-to")
        api = json.loads(fetch(page, "GET", f"/admin/api/v1/usage?from={frm}&to={to}")["body"])
        for testid, field in [("total-requests", "requests"), ("total-input", "input_tokens"),
                              ("total-output", "output_tokens")]:
            shown = page.get_by_test_id(testid).inner_text().replace(",", "")
            assert shown == str(api["totals"][field]), (testid, shown, api["totals"])
        expect(page.get_by_test_id("by-consumer-webapp")).to_be_visible()
        # The breakdowns and latencies too.
        by_model = json.loads(fetch(page, "GET",
                                    f"/admin/api/v1/usage?from={frm}&to={to}&group_by=model")["body"])
        for g in by_model["groups"]:
            model, t = g["group"]["model"], g["totals"]
            shown = page.get_by_test_id(f"by-model-{model}").inner_text().replace(",", "")
            assert shown == str(t["input_tokens"] + t["output_tokens"]), (model, shown, t)
        by_consumer = json.loads(fetch(page, "GET",
                                       f"/admin/api/v1/usage?from={frm}&to={to}&group_by=consumer")["body"])
        for g in by_consumer["groups"]:
            name, t = g["group"]["consumer"], g["totals"]
            shown = page.get_by_test_id(f"by-consumer-{name}").inner_text().replace(",", "")
            assert shown == str(t["input_tokens"] + t["output_tokens"]), (name, shown, t)
        for testid, field in [("latency", "latency_ms"), ("ttft", "ttft_ms")]:
            q = api["totals"][field]
            expect(page.get_by_test_id(testid)).to_have_text(f"{q['p50']:g} ms / {q['p99']:g} ms")
        errors_shown = page.get_by_test_id("error-rate").inner_text()
        assert errors_shown == f"{100 * api['totals']['errors'] / api['totals']['requests']:.1f} %", errors_shown
        expect(page.get_by_test_id("stacked-provider").locator("canvas")).to_have_count(1)
        expect(page.get_by_test_id("requests-per-s-now")).not_to_have_text("–")
        shot(page, "overview")

        # Disable the key: its state shows it.
        page.click("[data-testid=nav-providers]")
        key_row = page.get_by_test_id("key-browser-mock-key-1")
        key_row.get_by_role("button", name="Disable").click()
        expect(key_row.get_by_test_id("key-state")).to_have_text("disabled")
        shot(page, "providers")

        # A write without the CSRF token is refused.
        assert outside(page, "POST", "/admin/api/v1/consumers", {"name": "forged"}) == 403

        # The rule's standing: what webapp used of its 100,000 tokens this minute.
        page.click("[data-testid=nav-consumers]")
        expect(page.get_by_test_id("limits-webapp")).to_contain_text("per-consumer:")
        expect(page.get_by_test_id("limits-webapp")).to_contain_text("/100,000 tokens")
        assert "per-consumer: 0/" not in page.get_by_test_id("limits-webapp").inner_text()

        # Alerts: a webhook (its URL shown masked) and its test button, a rule.
        page.click("[data-testid=nav-limits]")
        expect(page.get_by_test_id("limit-per-consumer-webapp")).to_contain_text("/ 100,000")
        page.fill("input[name=webhook_name]", "ops")
        page.fill("input[name=webhook_url]", receiver())
        page.get_by_test_id("webhooks").locator("xpath=..").locator("button[type=submit]").click()
        hook = page.get_by_test_id("webhook-ops")
        expect(hook).to_be_visible()
        hook.get_by_role("button", name="Test").click()
        expect(hook.get_by_test_id("webhook-test-result")).to_have_text("✓ 200")
        assert Receiver.bodies and Receiver.bodies[-1]["state"] == "test", Receiver.bodies
        page.fill("input[name=alert_name]", "webapp-tokens")
        page.select_option("select[name=alert_kind]", "tokens")
        page.fill("input[name=alert_threshold]", "1000000")
        page.fill("input[name=alert_consumer]", "webapp")
        page.get_by_test_id("alert-rules").locator("xpath=..").locator("form button[type=submit]").click()
        expect(page.get_by_test_id("alert-webapp-tokens")).to_contain_text("tokens")
        shot(page, "limits")

        budgets(page, errors)

        # A route edited as JSON (If-Match on its revision), then the config page's diff.
        page.click("[data-testid=nav-routes]")
        route = page.get_by_test_id("route-browser")
        route.locator("summary").click()
        expect(route.get_by_test_id("yaml-view")).to_contain_text("path_prefix: /v1")
        route.get_by_role("button", name="Edit").click()
        text = route.locator("textarea").input_value()
        route.locator("textarea").fill(text.replace("browser-*", "browser*"))
        route.get_by_role("button", name="Save").click()
        expect(route.locator("table")).to_contain_text("browser*")
        page.click("[data-testid=nav-config]")
        expect(page.locator("text=create consumer webapp")).to_be_visible()
        expect(page.get_by_test_id("config-diff")).to_contain_text("webapp-tokens")
        # What one revision changed: the route edit.
        page.locator("tr", has_text="replace route browser").get_by_role("button", name="Changes").click()
        expect(page.get_by_test_id("revision-diff")).to_contain_text("+")
        expect(page.get_by_test_id("revision-diff")).to_contain_text("browser*")
        assert KEY not in page.content()
        shot(page, "config")

        # Chinese UI text.
        page.get_by_test_id("lang").click()
        expect(page.get_by_test_id("nav-overview")).to_have_text("概览")
        page.get_by_test_id("lang").click()

        # A viewer sees but cannot change.
        r = fetch(page, "POST", "/admin/api/v1/users",
                  {"name": "watcher", "role": "viewer", "password": "viewer-pass-2026"})
        assert r["status"] in (200, 201), r
        page.get_by_test_id("logout").click()
        expect(page.locator("main.login")).to_be_visible()
        login(page, "watcher", "viewer-pass-2026")
        page.click("[data-testid=nav-consumers]")
        expect(page.get_by_test_id("consumer-webapp")).to_be_visible()
        assert page.locator("input[name=consumer_name]").count() == 0
        page.click("[data-testid=nav-budgets]")
        page.get_by_test_id("open-alice-monthly").click()
        expect(page.get_by_test_id("subject-alice-monthly-alice")).to_be_visible()
        assert page.locator("input[name=budget_name]").count() == 0
        assert page.locator("input[name^=topup-]").count() == 0
        r = fetch(page, "POST", "/admin/api/v1/consumers", {"name": "viewer-made"})
        assert r["status"] == 403, r
        errors.remove("Failed to load resource: the server responded with a status of 403 (Forbidden)")

        # Logout ends the session: the API refuses the old cookie.
        old_cookie = [c for c in page.context.cookies() if c["name"] == "tollgate_session"]
        page.get_by_test_id("logout").click()
        expect(page.locator("main.login")).to_be_visible()
        page.context.add_cookies(old_cookie)
        assert outside(page, "GET", "/admin/api/v1/consumers") == 401
        shot(page, "login")


def spend(page, budget, subject):
    """The budgets API's standing of `subject` in `budget` now."""
    r = fetch(page, "GET", f"/admin/api/v1/budgets/{budget}/spend?subject={subject}")
    assert r["status"] == 200, r
    return json.loads(r["body"])["items"][0]


def top_up(subject_row, id, amount):
    """A top-up typed into a subject's row."""
    subject_row.locator(f"input[name=topup-{id}]").fill(amount)
    subject_row.get_by_role("button", name="Top up").click()


def budgets(page, errors):
    """alice's monthly budget (from the file): her spend after some traffic as the API gives
    it, top-ups and a reset through the page, her history; a budget made with the form."""
    r = fetch(page, "POST", "/admin/api/v1/quota/balances/alice/delta", {"value": 1000000})
    assert r["status"] == 200, r
    for _ in range(3):
        assert chat("sk-alice", "mock-a") == 200
    # Every request settled: nothing reserved any more.
    before = eventually("alice's requests settled", lambda: (
        lambda s: s if s["reserved"] == "0" and Decimal(s["spent"]) > 0 else None)(
            spend(page, "alice-monthly", "alice")))

    page.click("[data-testid=nav-budgets]")
    row = page.get_by_test_id("budget-alice-monthly")
    for text in ["Consumer alice", "$5.00", "Monthly", "Asia/Shanghai", "hard: refuses", "file"]:
        expect(row).to_contain_text(text)
    assert row.get_by_role("button", name="Delete").count() == 0, "a file's budget is read-only"
    page.get_by_test_id("open-alice-monthly").click()
    alice = page.get_by_test_id("subject-alice-monthly-alice")
    for field in ["spent", "remaining", "reserved"]:
        expect(alice.get_by_test_id(field)).to_have_attribute("data-exact", before[field])
    shown = Decimal(before["percent_used"]).quantize(Decimal("0.1"), ROUND_HALF_UP)  # as toFixed(1)
    expect(alice.get_by_test_id("percent")).to_have_text(f"{shown} %")
    expect(alice.get_by_test_id("resets-at")).to_have_attribute("datetime", before["resets_at"])
    assert before["resets_at"].endswith("+08:00"), before

    # A top-up through the page: the API shows it, and the remaining grows by it.
    top_up(alice, "alice-monthly-alice", "2.5")
    expect(alice.get_by_test_id("topup")).to_have_attribute("data-exact", "2.5")
    after = spend(page, "alice-monthly", "alice")
    assert after["topup"] == "2.5", after
    assert Decimal(after["remaining"]) == Decimal(before["remaining"]) + Decimal("2.5"), after
    expect(alice.get_by_test_id("remaining")).to_have_attribute("data-exact", after["remaining"])
    alice.get_by_role("button", name="History").click()
    history = page.get_by_test_id("history-alice-monthly-alice")
    expect(history).to_contain_text("$2.50")
    api = json.loads(fetch(page, "GET", "/admin/api/v1/budgets/alice-monthly/history?subject=alice")["body"])
    assert api["items"][0]["topup"] == "2.5", api

    # A negative top-up leaves about 85 % of the allowance spent: the bar warns.
    spent = Decimal(after["spent"])
    allowance = (spent / Decimal("0.85")).quantize(Decimal("0.001"))
    top_up(alice, "alice-monthly-alice", str(allowance - Decimal("7.5")))
    expect(alice.locator("progress.used")).to_have_class("used warn")
    assert 80 <= spend(page, "alice-monthly", "alice")["percent_used"] < 100

    # A soft budget for each team, in yuan, through the form; it opens with its teams.
    page.fill("input[name=budget_name]", "team-daily")
    page.select_option("select[name=budget_scope]", "team")
    page.fill("input[name=budget_target]", "*")
    page.fill("input[name=budget_amount]", "20")
    page.select_option("select[name=budget_currency]", "CNY")
    page.select_option("select[name=budget_period]", "day")
    page.fill("input[name=budget_time_zone]", "Asia/Shanghai")
    page.check("input[name=budget_soft]")
    page.select_option("select[name=budget_unpriced]", "admit")
    page.get_by_test_id("new-budget").locator("button[type=submit]").click()
    team = page.get_by_test_id("budget-team-daily")
    for text in ["each team", "¥20.00", "Daily", "soft: alerts only", "api"]:
        expect(team).to_contain_text(text)
    expect(page.get_by_test_id("subject-team-daily-research")).to_contain_text("¥0.00")
    expect(page.get_by_test_id("subject-team-daily-web")).to_be_visible()
    made = json.loads(fetch(page, "GET", "/admin/api/v1/budgets/team-daily")["body"])
    for k, v in {"team": "*", "amount": 20, "currency": "CNY", "period": "day",
                 "time_zone": "Asia/Shanghai", "soft": True, "unpriced": "admit"}.items():
        assert made.get(k) == v, (k, made)
    shot(page, "budgets")

    # Spent to the last cent: the bar is red; then a reset (confirmed) empties the period.
    now = spend(page, "alice-monthly", "alice")
    top_up(alice, "alice-monthly-alice", str(Decimal(now["spent"]) - Decimal(now["amount"]) - Decimal(now["topup"])))
    expect(alice.locator("progress.used")).to_have_class("used over")
    expect(alice.get_by_test_id("percent")).to_have_text("100.0 %")
    page.once("dialog", lambda d: d.accept())
    alice.get_by_role("button", name="Reset").click()
    expect(alice.get_by_test_id("spent")).to_have_attribute("data-exact", "0")
    assert spend(page, "alice-monthly", "alice")["spent"] == "0"
    expect(alice.locator("progress.used")).to_have_class("used ok")

    # The API's budget as YAML (editable), then deleted (confirmed).
    standing = page.get_by_test_id("standing-team-daily")
    standing.locator("summary").click()
    expect(standing.get_by_test_id("yaml-view")).to_contain_text("currency: CNY")
    expect(standing.get_by_role("button", name="Edit")).to_be_visible()
    page.once("dialog", lambda d: d.accept())
    team.get_by_role("button", name="Delete").click()
    expect(team).to_have_count(0)
    assert fetch(page, "GET", "/admin/api/v1/budgets/team-daily")["status"] == 404
    errors.remove("Failed to load resource: the server responded with a status of 404 (Not Found)")


if __name__ == "__main__":
    main()
