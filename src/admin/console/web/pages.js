// The console's pages. Every number and object comes from the management API under
// /admin/api/v1 (the same calls an operator can make with curl).
import { html, useState, useEffect, useRef } from "./preact-htm.js";
import { t } from "./i18n.js";

const API = "/admin/api/v1";
const PLAYGROUND = `${API}/playground`;
let csrf = null;
export function setCsrf(v) { csrf = v || null; }
const csrfHeader = () => (csrf ? { "X-CSRF-Token": csrf } : {});

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// One call; JSON in and out; an error carries the API's message.
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path.startsWith("/") ? path : `${API}/${path}`, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) throw new ApiError(r.status, (data && data.error && data.error.message) || r.statusText);
  return data;
}

// Load `path` (re-run when `deps` change); [data, error, reload].
export function useApi(path, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    if (!path) return;
    api("GET", path).then(
      (data) => live && setState({ data, error: null }),
      (e) => live && setState({ data: null, error: e.message }),
    );
    return () => { live = false; };
  }, [path, n, ...deps]);
  return [state.data, state.error, () => setN(n + 1)];
}

const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
const fixed = (n, d = 2) => (n === null || n === undefined || !isFinite(n) ? "–" : Number(n).toFixed(d));
const ms = (n) => (n === null || n === undefined ? "–" : `${n} ms`);

export function Problem({ error }) {
  return error ? html`<p class="error" role="alert">${error}</p>` : null;
}

// A form's submit: runs `f`, shows its error, re-enables the button.
export function useAction() {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const run = async (f) => {
    setBusy(true); setError(null);
    try { await f(); } catch (e) { setError(e.message); }
    setBusy(false);
  };
  return [run, error, busy];
}

const RANGES = [["15m", 900, "1m", 60], ["1h", 3600, "1m", 60], ["6h", 21600, "5m", 300], ["24h", 86400, "15m", 900], ["7d", 604800, "2h", 7200]];

// Points at every step of [from, to), zero where the API has none.
function filled(points, from, to, step) {
  const at = new Map(points.map((p) => [p.time, p]));
  const out = [];
  for (let t = Math.floor(from / step) * step; t < to; t += step) out.push(at.get(t) || { time: t });
  return out;
}

function Chart({ points, series }) {
  const ref = useRef(null);
  useEffect(() => {
    if (!ref.current || !window.uPlot || !points.length) return;
    const xs = points.map((p) => p.time);
    const data = [xs, ...series.map((s) => points.map((p) => p[s.field] || 0))];
    const dark = matchMedia("(prefers-color-scheme: dark)").matches || document.documentElement.dataset.theme === "dark";
    const axis = { stroke: dark ? "#ccc" : "#333", grid: { stroke: dark ? "#333" : "#eee" } };
    const plot = new window.uPlot({
      width: Math.max(320, ref.current.clientWidth), height: 220,
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2 }))],
      axes: [axis, axis],
    }, data, ref.current);
    return () => plot.destroy();
  }, [points, series]);
  return html`<div class="chart" ref=${ref}></div>`;
}

const COLORS = ["#2f6fde", "#e0702f", "#2a9d5c", "#b04ad6", "#d6a31f", "#1fb3c4", "#d64a6b", "#7a8a99"];

// Tokens over time stacked by `by`: each group's band on top of the ones before it (the top
// line is the total).
function Stacked({ usage, by, from, to, step }) {
  const ref = useRef(null);
  const groups = ((usage && usage.groups) || []).slice(0, COLORS.length);
  useEffect(() => {
    if (!ref.current || !window.uPlot || !groups.length) return;
    const xs = filled([], from, to, step).map((p) => p.time);
    const sums = xs.map(() => 0);
    const lines = groups.map((g) => {
      const at = new Map(g.points.map((p) => [p.time, p.input_tokens + p.output_tokens]));
      return xs.map((x, i) => (sums[i] += at.get(x) || 0));
    });
    const series = groups.map((g, i) => ({ label: g.group[by], stroke: COLORS[i], fill: `${COLORS[i]}55`, width: 1 }));
    // Draw the highest band first so that each lower one paints over it.
    const order = lines.map((_, i) => i).reverse();
    const plot = new window.uPlot({
      width: Math.max(320, ref.current.clientWidth), height: 200,
      series: [{}, ...order.map((i) => series[i])],
    }, [xs, ...order.map((i) => lines[i])], ref.current);
    return () => plot.destroy();
  }, [usage, by, from, to, step]);
  return html`<div class="chart" ref=${ref} data-testid=${`stacked-${by}`}></div>`;
}

// Horizontal bars of tokens per group.
function Bars({ title, by, usage, testid }) {
  const groups = (usage && usage.groups) || [];
  const rows = groups
    .map((g) => ({ name: g.group[by], tokens: g.totals.input_tokens + g.totals.output_tokens, g }))
    .sort((a, b) => b.tokens - a.tokens);
  const max = Math.max(1, ...rows.map((r) => r.tokens));
  return html`<section class="card wide" data-testid=${testid}>
    <h3>${title}</h3>
    ${rows.length === 0 ? html`<p class="muted">${t("none")}</p>` : html`<table class="bars">
      <tbody>${rows.map((r) => html`<tr>
        <th scope="row">${r.name}</th>
        <td><meter min="0" max=${max} value=${r.tokens} aria-label=${r.name}></meter></td>
        <td class="num" data-testid=${`${testid}-${r.name}`}>${fmt(r.tokens)}</td></tr>`)}
      </tbody></table>`}
  </section>`;
}

export function Overview() {
  const [range, setRange] = useState(RANGES[1]);
  const [now, setNow] = useState(() => Math.floor(Date.now() / 1000));
  const from = now - range[1];
  const q = `from=${from}&to=${now + 60}`;
  const [series, err] = useApi(`usage?${q}&step=${range[2]}`, [now]);
  const [byProvider] = useApi(`usage?${q}&group_by=provider`, [now]);
  const [byModel] = useApi(`usage?${q}&group_by=model`, [now]);
  const [byConsumer] = useApi(`usage?${q}&group_by=consumer`, [now]);
  const [stackBy, setStackBy] = useState("provider");
  const [stacked] = useApi(`usage?${q}&step=${range[2]}&group_by=${stackBy}`, [now]);
  const [last] = useApi(`usage?from=${now - 60}&to=${now}`, [now]);
  const lt = (last && last.totals) || null;
  const [keys] = useApi("/admin/keys", [now]);
  const [streams, setStreams] = useState(null);
  useEffect(() => {
    fetch("/metrics", { credentials: "same-origin" }).then((r) => r.text()).then((text) => {
      const line = text.split("\n").find((l) => l.startsWith("tollgate_active_streams "));
      setStreams(line ? Number(line.split(" ")[1]) : null);
    }, () => setStreams(null));
  }, [now]);
  const tot = (series && series.totals) || null;
  const secs = range[1];
  const points = filled((series && series.groups && series.groups[0] && series.groups[0].points) || [], from, now, range[3]);
  const keyStates = {};
  for (const p of (keys && keys.providers) || []) for (const k of p.keys) {
    const s = k.state || (k.healthy ? "healthy" : "unhealthy");
    keyStates[s] = (keyStates[s] || 0) + 1;
  }
  const stat = (label, value, testid) => html`<div class="stat"><span class="label">${label}</span><span class="value" data-testid=${testid}>${value}</span></div>`;
  return html`<div>
    <div class="toolbar">
      <label>${t("range")} <select value=${range[0]} onChange=${(e) => setRange(RANGES.find((r) => r[0] === e.target.value))}>
        ${RANGES.map((r) => html`<option value=${r[0]}>${r[0]}</option>`)}</select></label>
      <button onClick=${() => setNow(Math.floor(Date.now() / 1000))}>${t("refresh")}</button>
      ${series && html`<span class="muted">${t("scope")}: ${series.scope === "fleet" ? t("fleet") : t("this_gateway")}</span>`}
    </div>
    <${Problem} error=${err} />
    <section class="stats" data-from=${from} data-to=${now + 60} data-testid="overview-stats">
      ${stat(t("total_requests"), fmt(tot && tot.requests), "total-requests")}
      ${stat(t("total_in"), fmt(tot && tot.input_tokens), "total-input")}
      ${stat(t("total_out"), fmt(tot && tot.output_tokens), "total-output")}
      ${stat(t("tokens_in"), fixed(tot && tot.input_tokens / secs), "input-per-s")}
      ${stat(t("tokens_out"), fixed(tot && tot.output_tokens / secs), "output-per-s")}
      ${stat(t("req_s"), fixed(tot && tot.requests / secs, 3), "requests-per-s")}
      ${stat(t("error_rate"), tot && tot.requests ? `${fixed((100 * tot.errors) / tot.requests, 1)} %` : "–", "error-rate")}
      ${stat(t("cache_hits"), tot ? `${fmt(tot.cache_hits)}${Object.entries(tot.cache_saved || {}).map(([c, v]) => ` · ${v} ${c} ${t("saved")}`).join("")}` : "–", "cache-hits")}
      ${stat(t("latency"), tot ? `${ms(tot.latency_ms.p50)} / ${ms(tot.latency_ms.p99)}` : "–", "latency")}
      ${stat(t("ttft"), tot ? `${ms(tot.ttft_ms.p50)} / ${ms(tot.ttft_ms.p99)}` : "–", "ttft")}
      ${stat(t("in_now"), fixed(lt && lt.input_tokens / 60), "input-per-s-now")}
      ${stat(t("out_now"), fixed(lt && lt.output_tokens / 60), "output-per-s-now")}
      ${stat(t("req_now"), fixed(lt && lt.requests / 60, 3), "requests-per-s-now")}
      ${stat(t("active_streams"), fmt(streams), "active-streams")}
      ${stat(t("key_health"), Object.entries(keyStates).map(([k, v]) => `${v} ${k}`).join(", ") || "–", "key-health")}
    </section>
    <section class="card wide"><h3>${t("tokens")}</h3>
      <${Chart} points=${points} series=${[
        { field: "input_tokens", label: t("total_in"), color: "#2f6fde" },
        { field: "output_tokens", label: t("total_out"), color: "#e0702f" }]} />
    </section>
    <section class="card wide"><h3>${t("stacked")}
      <select aria-label=${t("stacked")} value=${stackBy} onChange=${(e) => setStackBy(e.target.value)}>
        ${["provider", "model", "consumer"].map((d) => html`<option value=${d}>${t(d)}</option>`)}</select></h3>
      <${Stacked} usage=${stacked} by=${stackBy} from=${from} to=${now} step=${range[3]} />
    </section>
    <div class="grid">
      <${Bars} title=${t("by_provider")} by="provider" usage=${byProvider} testid="by-provider" />
      <${Bars} title=${t("by_model")} by="model" usage=${byModel} testid="by-model" />
      <${Bars} title=${t("by_consumer")} by="consumer" usage=${byConsumer} testid="by-consumer" />
      <section class="card wide"><h3>${t("latency_by_model")}</h3>
        <table><thead><tr><th>${t("model")}</th><th>p50</th><th>p95</th><th>p99</th><th>${t("first_token")} p50</th></tr></thead>
        <tbody>${((byModel && byModel.groups) || []).map((g) => html`<tr><td>${g.group.model}</td>
          <td class="num">${ms(g.totals.latency_ms.p50)}</td><td class="num">${ms(g.totals.latency_ms.p95)}</td>
          <td class="num">${ms(g.totals.latency_ms.p99)}</td><td class="num">${ms(g.totals.ttft_ms.p50)}</td></tr>`)}</tbody></table>
      </section>
    </div>
  </div>`;
}

function KeyRows({ provider, mayWrite, reload }) {
  const [keys, err, again] = useApi(`providers/${encodeURIComponent(provider.name)}/keys`);
  const [run, actErr] = useAction();
  const [name, setName] = useState("");
  const [key, setKey] = useState("");
  const path = (k) => `providers/${encodeURIComponent(provider.name)}/keys/${encodeURIComponent(k)}`;
  const health = {};
  for (const h of (keys && keys.health) || []) health[h.name] = h;
  // A key written as a bare string has the name its position gives it (key-1, …).
  const hs = (keys && keys.health) || [];
  const items = ((keys && keys.keys) || []).map((k, i) => {
    const entry = typeof k === "string" ? { key: k, name: (hs[i] && hs[i].name) || `key-${i + 1}` } : k;
    return { ...entry, ...(health[entry.name] || {}) };
  });
  const api_ = provider.source !== "file";
  return html`<div>
    <${Problem} error=${err || actErr} />
    <table data-testid=${`keys-${provider.name}`}><thead><tr><th>${t("key_name")}</th><th>${t("key")}</th><th>${t("state")}</th><th>${t("weight")}</th>${mayWrite && api_ && html`<th>${t("actions")}</th>`}</tr></thead>
    <tbody>${items.map((k) => html`<tr data-testid=${`key-${provider.name}-${k.name}`}>
      <td>${k.name}</td><td><code>${k.key}</code></td>
      <td class=${`state ${k.state || ""}`} data-testid="key-state">${k.disabled ? "disabled" : (k.state || "")}${k.rest_until_ms ? ` (${new Date(k.rest_until_ms).toLocaleTimeString()})` : ""}${k.failures_total ? ` · ${k.failures_total} failures` : ""}</td>
      <td class="num">${k.weight ?? 1}</td>
      ${mayWrite && api_ && html`<td>
        <button onClick=${() => run(async () => { await api("PATCH", path(k.name), { disabled: !k.disabled }); again(); })}>${k.disabled ? t("enable") : t("disable")}</button>
        <button class="danger" onClick=${() => run(async () => { await api("DELETE", path(k.name)); again(); })}>${t("delete")}</button></td>`}
    </tr>`)}</tbody></table>
    ${mayWrite && api_ && html`<form class="inline" onSubmit=${(e) => { e.preventDefault(); run(async () => {
        await api("POST", `providers/${encodeURIComponent(provider.name)}/keys`, { name, key }); setName(""); setKey(""); again(); reload(); }); }}>
      <label>${t("key_name")} <input name="key_name" value=${name} onInput=${(e) => setName(e.target.value)} required /></label>
      <label>${t("key")} <input name="key" type="password" autocomplete="off" value=${key} onInput=${(e) => setKey(e.target.value)} required /></label>
      <button type="submit">${t("add_key")}</button></form>`}
  </div>`;
}

const TYPES = ["openai", "azure", "deepseek", "qwen", "doubao", "moonshot", "zhipu", "anthropic", "gemini", "ollama", "vllm", "openai-compatible"];

export function Providers({ me }) {
  const [data, err, reload] = useApi("providers");
  const [status] = useApi("/admin/keys");
  const preset = (name) => {
    const p = ((status && status.providers) || []).find((x) => x.provider === name);
    return (p && p.preset_base_url) || "";
  };
  const [run, actErr, busy] = useAction();
  const [form, setForm] = useState({ name: "", type: "openai-compatible", base_url: "", key: "" });
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const items = (data && data.items) || [];
  return html`<div>
    <${Problem} error=${err || actErr} />
    ${items.map((p) => html`<section class="card wide" data-testid=${`provider-${p.name}`}>
      <h3>${p.name} <small class="muted">${p.type} · ${p.base_url || `${preset(p.name)} (${t("preset")})`} · ${p.source}</small></h3>
      <${KeyRows} provider=${p} mayWrite=${me.may_write} reload=${reload} />
      <${JsonEdit} value=${p} path=${`providers/${encodeURIComponent(p.name)}`} editable=${me.may_write && p.source !== "file"} saved=${reload} />
    </section>`)}
    ${me.may_write && html`<section class="card wide"><h3>${t("new_provider")}</h3>
      <form onSubmit=${(e) => { e.preventDefault(); run(async () => {
          const body = { name: form.name, type: form.type, api_keys: form.key ? [{ name: "key-1", key: form.key }] : [] };
          if (form.base_url) body.base_url = form.base_url;
          await api("POST", "providers", body); setForm({ name: "", type: form.type, base_url: "", key: "" }); reload(); }); }}>
        <label>${t("name")} <input name="provider_name" value=${form.name} onInput=${set("name")} required /></label>
        <label>${t("type")} <select name="provider_type" value=${form.type} onChange=${set("type")}>${TYPES.map((x) => html`<option value=${x}>${x}</option>`)}</select></label>
        <label>${t("base_url")} <input name="base_url" value=${form.base_url} onInput=${set("base_url")} placeholder="https://…" /></label>
        <label>${t("first_key")} <input name="first_key" type="password" autocomplete="off" value=${form.key} onInput=${set("key")} /></label>
        <button type="submit" disabled=${busy}>${t("create")}</button>
      </form></section>`}
  </div>`;
}

function Yaml({ value }) {
  return html`<pre class="yaml">${JSON.stringify(value, null, 2)}</pre>`;
}

// An object in the settings file's YAML (secrets masked), as the API gives it; an API
// object can be edited and saved (PUT as YAML, with If-Match on its revision so that a
// concurrent change is not overwritten).
export function JsonEdit({ value, path, editable, saved }) {
  const [yaml, setYaml] = useState(null);
  const [etag, setEtag] = useState(null);
  const [editing, setEditing] = useState(false);
  const [run, err] = useAction();
  const load = () => run(async () => {
    const r = await fetch(`${API}/${path}?format=yaml`, { credentials: "same-origin" });
    if (!r.ok) throw new Error(r.statusText);
    setEtag(r.headers.get("etag"));
    setYaml(await r.text());
  });
  return html`<details onToggle=${(e) => e.target.open && yaml === null && load()}><summary>YAML</summary>
    ${!editing ? html`<pre class="yaml" data-testid="yaml-view">${yaml || ""}</pre>${editable && yaml !== null && html`<button onClick=${() => setEditing(true)}>${t("edit")}</button>`}`
      : html`<textarea aria-label="YAML" rows="14" value=${yaml} onInput=${(e) => setYaml(e.target.value)}></textarea>
        <button onClick=${() => run(async () => {
          const headers = { "Content-Type": "application/yaml", ...csrfHeader() };
          if (etag) headers["If-Match"] = etag;
          const r = await fetch(`${API}/${path}`, { method: "PUT", credentials: "same-origin", headers, body: yaml });
          if (!r.ok) throw new Error(((await r.json()).error || {}).message || r.statusText);
          setEditing(false); setYaml(null); saved(); })}>${t("save")}</button>
        <button onClick=${() => { setEditing(false); setYaml(null); load(); }}>×</button>`}
    <${Problem} error=${err} /></details>`;
}

export function Routes({ me }) {
  const [data, err, reload] = useApi("routes");
  const [providers] = useApi("providers");
  const [run, actErr, busy] = useAction();
  const [form, setForm] = useState({ name: "", prefix: "/v1", model: "*" });
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const names = ((providers && providers.items) || []).map((p) => p.name);
  return html`<div>
    <${Problem} error=${err || actErr} />
    ${((data && data.items) || []).map((r) => html`<section class="card wide" data-testid=${`route-${r.name}`}>
      <h3>${r.name} <small class="muted">${r.path_prefix || ""} · ${r.source}</small></h3>
      <${JsonEdit} value=${r} path=${`routes/${encodeURIComponent(r.name)}`} editable=${me.may_write && r.source !== "file"} saved=${reload} />
      <table><thead><tr><th>${t("model")}</th><th>${t("provider")}</th></tr></thead><tbody>
      ${(r.models || []).map((m) => html`<tr><td>${m.model}</td><td>${(m.targets || []).map((x) => `${x.provider}${x.weight ? ` ×${x.weight}` : ""}`).join(", ")}${m.fallback ? ` → ${JSON.stringify(m.fallback)}` : ""}</td></tr>`)}
      </tbody></table>
      ${me.may_write && r.source !== "file" && html`<button class="danger" onClick=${() => run(async () => { await api("DELETE", `routes/${encodeURIComponent(r.name)}`); reload(); })}>${t("delete")}</button>`}
    </section>`)}
    ${me.may_write && html`<section class="card wide"><h3>${t("create")} ${t("route")}</h3>
      <form onSubmit=${(e) => { e.preventDefault(); const target = e.target.elements.route_target.value; run(async () => {
          await api("POST", "routes", { name: form.name, path_prefix: form.prefix, models: [{ model: form.model, targets: [{ provider: target }] }] });
          reload(); }); }}>
        <label>${t("name")} <input name="route_name" value=${form.name} onInput=${set("name")} required /></label>
        <label>${t("path_prefix")} <input name="route_prefix" value=${form.prefix} onInput=${set("prefix")} /></label>
        <label>${t("model")} <input name="route_model" value=${form.model} onInput=${set("model")} /></label>
        <label>${t("provider")} <select name="route_target">${names.map((n) => html`<option value=${n}>${n}</option>`)}</select></label>
        <button type="submit" disabled=${busy}>${t("create")}</button>
      </form></section>`}
  </div>`;
}

function Secret({ value }) {
  const [done, setDone] = useState(false);
  if (!value) return null;
  return html`<div class="secret" role="status"><p>${t("credential_once")}</p>
    <code data-testid="new-credential">${value}</code>
    <button onClick=${async () => { try { await navigator.clipboard.writeText(value); setDone(true); } catch { setDone(false); } }}>${done ? t("copied") : t("copy")}</button></div>`;
}

function Balance({ name, mayWrite }) {
  const [bal, err, again] = useApi(`quota/balances/${encodeURIComponent(name)}`);
  const [run, actErr] = useAction();
  const [n, setN] = useState("");
  return html`<span class="balance">
    <span data-testid=${`balance-${name}`}>${err ? "–" : fmt(bal && bal.quota)}</span>
    ${mayWrite && html`<form class="inline" onSubmit=${(e) => { e.preventDefault(); run(async () => {
        await api("POST", `quota/balances/${encodeURIComponent(name)}/delta`, { value: Number(n) }); setN(""); again(); }); }}>
      <input name=${`topup-${name}`} aria-label=${t("amount")} type="number" value=${n} onInput=${(e) => setN(e.target.value)} required />
      <button type="submit">${t("top_up")}</button></form>`}
    <${Problem} error=${actErr} /></span>`;
}

export function Consumers({ me }) {
  const [data, err, reload] = useApi("consumers");
  const [quotaSection] = useApi("quota");
  const quota = quotaSection && quotaSection.quota;
  const [top] = useApi(`usage/top?by=consumer&n=1000&from=${Math.floor(Date.now() / 1000) - 86400}`);
  const [limits] = useApi("rate_limits");
  const [standing, setStanding] = useState({});
  useEffect(() => {
    const rules = ((limits && limits.items) || []).filter((r) => r.key === "consumer");
    Promise.all(rules.map((r) => api("GET", `rate_limits/${encodeURIComponent(r.name)}/usage`).catch(() => null)))
      .then((all) => {
        const by = {};
        for (const u of all) for (const i of (u && u.items) || []) {
          (by[i.key] = by[i.key] || []).push(...i.limits.map((l) => `${u.rule}: ${fmt(l.used)}/${fmt(l.limit)} ${l.measure}`));
        }
        setStanding(by);
      });
  }, [limits]);
  const [run, actErr, busy] = useAction();
  const [name, setName] = useState("");
  const [team, setTeam] = useState("");
  const [secret, setSecret] = useState(null);
  const used = {};
  for (const i of (top && top.items) || []) used[i.consumer] = i.tokens;
  const credential = async (c, replace) => {
    const r = await api("POST", `consumers/${encodeURIComponent(c)}/credentials`, { replace });
    setSecret(r.credential);
  };
  return html`<div>
    <${Problem} error=${err || actErr} />
    <${Secret} value=${secret} />
    <table data-testid="consumers"><thead><tr><th>${t("name")}</th><th>${t("team")}</th><th>${t("source")}</th><th>${t("usage")} (24h)</th><th>${t("rate_limits")}</th>${quota && html`<th>${t("balance")}</th>`}<th>${t("actions")}</th></tr></thead>
    <tbody>${((data && data.items) || []).map((c) => html`<tr data-testid=${`consumer-${c.name}`}>
      <td>${c.name}</td><td data-testid=${`team-${c.name}`}>${c.team || "–"}</td><td>${c.source}</td><td class="num">${fmt(used[c.name] || 0)}</td>
      <td class="small" data-testid=${`limits-${c.name}`}>${(standing[c.name] || []).join(" · ") || "–"}</td>
      ${quota && html`<td><${Balance} name=${c.name} mayWrite=${me.may_write} /></td>`}
      <td>${me.may_write && c.source !== "file" && html`
        <button onClick=${() => run(() => credential(c.name, true))}>${t("rotate")}</button>
        <button class="danger" onClick=${() => run(async () => { await api("DELETE", `consumers/${encodeURIComponent(c.name)}`); reload(); })}>${t("delete")}</button>`}</td>
    </tr>`)}</tbody></table>
    ${me.may_write && html`<section class="card wide"><h3>${t("new_consumer")}</h3>
      <form onSubmit=${(e) => { e.preventDefault(); run(async () => {
          await api("POST", "consumers", team ? { name, team } : { name }); await credential(name, false); setName(""); setTeam(""); reload(); }); }}>
        <label>${t("name")} <input name="consumer_name" value=${name} onInput=${(e) => setName(e.target.value)} required /></label>
        <label>${t("team")} <input name="consumer_team" value=${team} onInput=${(e) => setTeam(e.target.value)} placeholder=${t("optional")} /></label>
        <button type="submit" disabled=${busy}>${t("create")}</button></form></section>`}
  </div>`;
}

const when = (secs) => (secs ? new Date(secs * 1000).toLocaleString() : "–");
const KINDS = ["tokens", "spike", "error_rate", "keys_down", "quota", "budget"];

function Webhooks({ me }) {
  const [hooks, err, reload] = useApi("alert_webhooks");
  const [run, actErr] = useAction();
  const [result, setResult] = useState({});
  const [f, setF] = useState({ name: "", url: "", format: "json" });
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  return html`<section class="card wide"><h3>${t("webhooks")}</h3>
    <${Problem} error=${err || actErr} />
    <table data-testid="webhooks"><thead><tr><th>${t("name")}</th><th>URL</th><th>${t("format")}</th><th>${t("source")}</th><th>${t("actions")}</th></tr></thead>
    <tbody>${((hooks && hooks.items) || []).map((w) => html`<tr data-testid=${`webhook-${w.name}`}>
      <td>${w.name}</td><td><code>${w.url}</code></td><td>${w.format || "json"}</td><td>${w.source}</td>
      <td>${me.may_write && html`<button onClick=${() => run(async () => {
          const r = await api("POST", `alert_webhooks/${encodeURIComponent(w.name)}/test`);
          setResult({ ...result, [w.name]: r.delivered ? `✓ ${r.status}` : `✗ ${r.error || r.status}` }); })}>${t("test")}</button>
        <span data-testid="webhook-test-result">${result[w.name] || ""}</span>
        ${w.source !== "file" && html` <button class="danger" onClick=${() => run(async () => { await api("DELETE", `alert_webhooks/${encodeURIComponent(w.name)}`); reload(); })}>${t("delete")}</button>`}`}</td>
    </tr>`)}</tbody></table>
    ${me.may_write && html`<form class="inline" onSubmit=${(e) => { e.preventDefault(); run(async () => {
        await api("POST", "alert_webhooks", f); setF({ name: "", url: "", format: f.format }); reload(); }); }}>
      <label>${t("name")} <input name="webhook_name" value=${f.name} onInput=${set("name")} required /></label>
      <label>URL <input name="webhook_url" type="password" autocomplete="off" value=${f.url} onInput=${set("url")} placeholder="https://…" required /></label>
      <label>${t("format")} <select name="webhook_format">${["json", "slack", "dingtalk", "feishu"].map((x) => html`<option value=${x}>${x}</option>`)}</select></label>
      <button type="submit">${t("create")}</button></form>`}
  </section>`;
}

function AlertRules({ me }) {
  const [alerts, err, reload] = useApi("alerts");
  const [rules, err2, reloadRules] = useApi("alert_rules");
  const [run, actErr] = useAction();
  const [f, setF] = useState({ name: "", window: "5m", threshold: "" });
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const states = {};
  for (const a of (alerts && alerts.items) || []) states[a.rule] = a;
  return html`<section class="card wide"><h3>${t("alerts")} <button onClick=${() => { reload(); reloadRules(); }}>${t("refresh")}</button></h3>
    <${Problem} error=${err || err2 || actErr} />
    <table data-testid="alert-rules"><thead><tr><th>${t("name")}</th><th>${t("type")}</th><th>${t("state")}</th><th>${t("value")}</th><th>${t("threshold")}</th><th>${t("since")}</th><th>${t("notified")}</th><th></th></tr></thead>
    <tbody>${((rules && rules.items) || []).map((r) => { const a = states[r.name] || {}; return html`<tr data-testid=${`alert-${r.name}`}>
      <td>${r.name}</td><td>${r.kind}</td><td class=${`state ${a.state || ""}`}>${a.state || "–"}</td><td class="num">${fixed(a.value)}</td>
      <td class="num">${r.threshold ?? "–"}</td><td>${when(a.since)}</td><td>${when(a.notified)}</td>
      <td>${me.may_write && r.source !== "file" && html`<button class="danger" onClick=${() => run(async () => { await api("DELETE", `alert_rules/${encodeURIComponent(r.name)}`); reloadRules(); })}>${t("delete")}</button>`}</td></tr>`; })}</tbody></table>
    ${me.may_write && html`<form class="inline" onSubmit=${(e) => { e.preventDefault(); const el = e.target.elements; run(async () => {
        const body = { name: f.name, kind: el.alert_kind.value, window: f.window };
        if (f.threshold !== "") body.threshold = Number(f.threshold);
        if (el.alert_consumer.value) body.filter = { consumer: el.alert_consumer.value };
        await api("POST", "alert_rules", body); setF({ name: "", window: f.window, threshold: "" }); reloadRules(); }); }}>
      <label>${t("name")} <input name="alert_name" value=${f.name} onInput=${set("name")} required /></label>
      <label>${t("type")} <select name="alert_kind">${KINDS.map((k) => html`<option value=${k}>${k}</option>`)}</select></label>
      <label>${t("window")} <input name="alert_window" value=${f.window} onInput=${set("window")} /></label>
      <label>${t("threshold")} <input name="alert_threshold" type="number" step="any" value=${f.threshold} onInput=${set("threshold")} /></label>
      <label>${t("consumer")} <input name="alert_consumer" /></label>
      <button type="submit">${t("create")}</button></form>`}
    <h3>${t("history")}</h3>
    <table data-testid="alert-history"><thead><tr><th>${t("time")}</th><th>${t("name")}</th><th>${t("state")}</th><th>${t("value")}</th><th></th></tr></thead>
    <tbody>${((alerts && alerts.history) || []).map((h) => html`<tr><td>${when(h.at)}</td><td>${h.rule}</td><td class=${`state ${h.state}`}>${h.state}</td><td class="num">${fixed(h.value)}</td><td class="muted">${h.by === "other_gateway" ? t("other_gateway") : ""}</td></tr>`)}</tbody></table>
  </section>`;
}

// What a rule has counted now, per consumer or route (or nothing to show for rules
// counted per header, IP or key: those keys are not listed).
function RuleUsage({ name }) {
  const [u, err] = useApi(`rate_limits/${encodeURIComponent(name)}/usage`);
  if (err) return html`<p class="muted">${err}</p>`;
  const items = (u && u.items) || [];
  if (!items.length) return null;
  return html`<table class="usage"><thead><tr><th>${t("key_name")}</th>${items[0].limits.map((l) => html`<th>${l.measure}</th>`)}</tr></thead>
    <tbody>${items.map((i) => html`<tr data-testid=${`limit-${name}-${i.key}`}><td>${i.key}</td>
      ${i.limits.map((l) => html`<td><meter min="0" max=${l.limit} value=${l.used} aria-label=${`${l.measure} ${i.key}`}></meter> <span class="num">${fmt(l.used)} / ${fmt(l.limit)}</span></td>`)}</tr>`)}</tbody></table>`;
}

export function Limits({ me }) {
  const [limits, e1] = useApi("rate_limits");
  const [quotaSection] = useApi("quota");
  const quota = quotaSection && quotaSection.quota;
  return html`<div>
    <${Problem} error=${e1} />
    <section class="card wide"><h3>${t("rate_limits")}</h3>
      ${((limits && limits.items) || []).length === 0 && html`<p class="muted">${t("none")}</p>`}
      ${((limits && limits.items) || []).map((r) => html`<div class="rule" data-testid=${`limit-${r.name}`}>
        <h4>${r.name} <small class="muted">${r.key} · ${r.window} · ${r.source}</small></h4>
        <${RuleUsage} name=${r.name} />
        <details><summary>JSON</summary><${Yaml} value=${r} /></details></div>`)}
    </section>
    <section class="card wide"><h3>${t("quota")}</h3>${quota ? html`<${Yaml} value=${quota} />` : html`<p class="muted">${t("none")}</p>`}</section>
    <${AlertRules} me=${me} />
    <${Webhooks} me=${me} />
  </div>`;
}

export function Requests() {
  const [f, setF] = useState({ consumer: "", model: "", status: "", request_id: "" });
  const [applied, setApplied] = useState(f);
  const [open, setOpen] = useState(null);
  const q = Object.entries(applied).filter(([, v]) => v).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");
  const [data, err, reload] = useApi(`requests?limit=200&${q}`);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  return html`<div>
    <form class="toolbar" onSubmit=${(e) => { e.preventDefault(); setApplied(f); reload(); }}>
      ${["consumer", "model", "status", "request_id"].map((k) => html`<label>${t(k)} <input name=${`filter-${k}`} value=${f[k]} onInput=${set(k)} /></label>`)}
      <button type="submit">${t("filter")}</button></form>
    <${Problem} error=${err} />
    <table data-testid="requests"><thead><tr><th>${t("time")}</th><th>${t("consumer")}</th><th>${t("model")}</th><th>${t("provider")}</th><th>${t("status")}</th><th>${t("total_in")}</th><th>${t("total_out")}</th><th>ms</th></tr></thead>
    <tbody>${((data && data.items) || []).map((r) => html`<tr class="click" tabindex="0" onClick=${() => setOpen(r)} onKeyDown=${(e) => e.key === "Enter" && setOpen(r)}>
      <td>${new Date(r.time_ms).toLocaleTimeString()}</td><td>${r.consumer}</td><td>${r.model}</td><td>${r.provider}</td>
      <td class="num">${r.status}</td><td class="num">${fmt(r.input_tokens)}</td><td class="num">${fmt(r.output_tokens)}</td><td class="num">${Math.round(r.duration_ms)}</td></tr>`)}</tbody></table>
    ${open && html`<section class="card wide" data-testid="request-detail"><h3>${t("detail")} ${open.request_id} <button onClick=${() => setOpen(null)} aria-label="close">×</button></h3>
      <dl class="detail">${[
        [t("time"), new Date(open.time_ms).toLocaleString()], [t("route"), open.route], [t("consumer"), open.consumer || "–"],
        [t("provider"), open.provider], [t("key_name"), open.key || "–"], [t("model"), open.upstream_model && open.upstream_model !== open.model ? `${open.model} → ${open.upstream_model}` : open.model],
        ["endpoint", `${open.endpoint}${open.stream ? " (stream)" : ""}${open.cache ? ` · cache ${open.cache}` : ""}`], [t("status"), `${open.status}${open.error ? ` · ${open.error}` : ""}`],
        [t("attempts"), open.attempts], [t("total_in"), `${fmt(open.input_tokens)}${open.cached_tokens ? ` (${fmt(open.cached_tokens)} cached)` : ""}`],
        [t("total_out"), `${fmt(open.output_tokens)}${open.reasoning_tokens ? ` (${fmt(open.reasoning_tokens)} reasoning)` : ""}${open.usage_estimated ? " · estimated" : ""}`],
        [t("first_token"), open.ttft_ms === null ? "–" : `${Math.round(open.ttft_ms)} ms`], [t("duration"), `${Math.round(open.duration_ms)} ms`],
      ].map(([k, v]) => html`<dt>${k}</dt><dd>${v}</dd>`)}</dl></section>`}
  </div>`;
}

function Diff({ text }) {
  if (!text) return html`<p class="muted">${t("none")}</p>`;
  return html`<pre class="yaml diff" data-testid="config-diff">${text.split("\n").map((l) => html`<span class=${l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : ""}>${l + "\n"}</span>`)}</pre>`;
}

export function Config({ me }) {
  const [revs, err, reload] = useApi("revisions");
  const [config] = useApi("config");
  const [diff] = useApi("config/diff", [revs]);
  const [shown, setShown] = useState(null);
  const [run, actErr] = useAction();
  return html`<div>
    <${Problem} error=${err || actErr} />
    <section class="card wide"><h3>${t("revision")}</h3>
      <table><thead><tr><th>#</th><th>${t("time")}</th><th>${t("who")}</th><th>${t("what")}</th><th></th></tr></thead>
      <tbody>${((revs && revs.items) || []).map((r) => html`<tr><td>${r.revision}</td><td>${r.at}</td><td>${r.who}</td><td>${r.action} ${r.kind} ${r.name}</td>
        <td><button onClick=${() => run(async () => setShown(await api("GET", `revisions/${r.revision}/diff`)))} data-testid=${`diff-${r.revision}`}>${t("changes")}</button>
        ${me.may_write && r.revision !== revs.api_revision && html`<button onClick=${() => run(async () => { await api("POST", `revisions/${r.revision}/restore`); reload(); })}>${t("restore")}</button>`}</td></tr>`)}</tbody></table>
      ${shown && html`<h4>${t("revision")} ${shown.revision}: ${shown.change.action} ${shown.change.kind} ${shown.change.name}</h4><div data-testid="revision-diff"><${Diff} text=${shown.diff} /></div>`}
    </section>
    <section class="card wide"><h3>${t("diff")}</h3><${Diff} text=${diff && diff.diff} /></section>
    <section class="card wide"><h3>${t("export")}</h3>${config && html`<${Yaml} value=${config.settings} />`}</section>
  </div>`;
}

// The answer text and usage of an OpenAI-shaped SSE stream read so far.
function readSse(buffer, state) {
  const events = buffer.split("\n\n");
  const rest = events.pop();
  for (const ev of events) {
    for (const line of ev.split("\n")) {
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      try {
        const chunk = JSON.parse(line.slice(6));
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (state.ttft === null) state.ttft = performance.now() - state.start;
          state.text += delta.content;
        }
        if (chunk.usage) state.usage = chunk.usage;
      } catch { /* a partial or foreign line */ }
    }
  }
  return rest;
}

function snippets(base, model, stream, content) {
  const body = JSON.stringify({ model, stream, messages: [{ role: "user", content }] });
  const curl = `curl ${stream ? "-N " : ""}${base}/v1/chat/completions \\\n  -H "Authorization: Bearer $TOLLGATE_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${body.replace(/'/g, "'\\''")}'`;
  const py = `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}/v1", api_key=os.environ["TOLLGATE_KEY"])\n` +
    (stream
      ? `for chunk in client.chat.completions.create(model=${JSON.stringify(model)}, stream=True,\n        messages=[{"role": "user", "content": ${JSON.stringify(content)}}]):\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or "", end="")\n`
      : `answer = client.chat.completions.create(model=${JSON.stringify(model)},\n    messages=[{"role": "user", "content": ${JSON.stringify(content)}}])\nprint(answer.choices[0].message.content)\n`);
  return { curl, py: `import os\n${py}` };
}

export function Playground({ me }) {
  const [consumers] = useApi("consumers");
  const [routes] = useApi("routes");
  const [f, setF] = useState({ model: "", content: "Hello!", stream: true });
  const [out, setOut] = useState(null);
  const [err, setErr] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  const models = [];
  for (const r of (routes && routes.items) || []) for (const m of r.models || []) if (!/[*~]/.test(m.model)) models.push(m.model);
  const base = me.proxy_url || "http://127.0.0.1:8080";
  const send = async (e) => {
    e.preventDefault();
    const consumer = e.target.elements.play_consumer.value;
    setErr(null); setBusy(true);
    const state = { text: "", usage: null, ttft: null, start: performance.now(), status: null, id: null };
    setOut({ ...state });
    try {
      const body = { model: f.model, stream: f.stream, messages: [{ role: "user", content: f.content }] };
      if (f.stream) body.stream_options = { include_usage: true };
      const r = await fetch(PLAYGROUND, { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", ...csrfHeader() },
        body: JSON.stringify({ consumer: consumer || null, body }) });
      state.status = r.status; state.id = r.headers.get("x-request-id");
      if (!f.stream || !r.ok || !(r.headers.get("content-type") || "").includes("event-stream")) {
        const v = await r.json();
        if (!r.ok) throw new Error((v.error && v.error.message) || r.statusText);
        state.text = v.choices && v.choices[0] && v.choices[0].message ? v.choices[0].message.content : JSON.stringify(v);
        state.usage = v.usage;
      } else {
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = readSse(buffer + decoder.decode(value, { stream: true }), state);
          setOut({ ...state });
        }
        readSse(buffer + "\n\n", state);
      }
      state.total = performance.now() - state.start;
      setOut({ ...state });
    } catch (e2) { setErr(e2.message); }
    setBusy(false);
  };
  const code = snippets(base, f.model, f.stream, f.content);
  return html`<div>
    <section class="card wide">
      <form onSubmit=${send}>
        <label>${t("model")} <input name="play_model" list="play-models" value=${f.model} onInput=${set("model")} required /></label>
        <datalist id="play-models">${models.map((m) => html`<option value=${m} />`)}</datalist>
        <label>${t("consumer")} <select name="play_consumer"><option value="">(${t("anonymous")})</option>
          ${((consumers && consumers.items) || []).map((c) => html`<option value=${c.name}>${c.name}</option>`)}</select></label>
        <label class="check"><input name="play_stream" type="checkbox" checked=${f.stream} onChange=${set("stream")} /> ${t("stream")}</label>
        <label class="block">${t("message")} <textarea name="play_content" rows="4" value=${f.content} onInput=${set("content")}></textarea></label>
        <button type="submit" disabled=${busy || !me.may_write}>${t("send")}</button>
      </form>
      <${Problem} error=${err} />
    </section>
    ${out && html`<section class="card wide" data-testid="play-result">
      <pre class="answer" data-testid="play-answer">${out.text}</pre>
      <p class="muted" data-testid="play-stats">${out.status ? `HTTP ${out.status}` : "…"}${out.id ? ` · ${out.id}` : ""}
        ${out.usage ? ` · ${t("total_in")} ${out.usage.prompt_tokens} · ${t("total_out")} ${out.usage.completion_tokens}` : ""}
        ${out.ttft !== null ? ` · ${t("first_token")}: ${Math.round(out.ttft)} ms` : ""}${out.total ? ` · ${Math.round(out.total)} ms` : ""}</p>
    </section>`}
    <section class="card wide"><h3>${t("code")}</h3>
      <${CopyBlock} label="curl" text=${code.curl} testid="play-curl" />
      <${CopyBlock} label="Python (openai)" text=${code.py} testid="play-python" />
    </section>
  </div>`;
}

function CopyBlock({ label, text, testid }) {
  const [done, setDone] = useState(false);
  return html`<div class="copy"><div class="toolbar"><strong>${label}</strong>
    <button onClick=${async () => { try { await navigator.clipboard.writeText(text); setDone(true); } catch { setDone(false); } }}>${done ? t("copied") : t("copy")}</button></div>
    <pre class="yaml" data-testid=${testid}>${text}</pre></div>`;
}
