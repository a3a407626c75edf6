// The Budgets page: money budgets per consumer, team, route or provider key, each
// subject's standing in the current period (spent, reserved, remaining, when it resets),
// top-ups and resets, the spend of past periods, and new budgets. Everything goes through
// /admin/api/v1/budgets (the same calls an operator can make with curl).
import { html, useState } from "./preact-htm.js";
import { t } from "./i18n.js";
import { api, useApi, useAction, Problem, JsonEdit } from "./pages.js";

const SCOPES = ["consumer", "team", "route", "key"];
const PERIODS = ["day", "week", "month", "custom", "lifetime"];
const SYMBOL = { USD: "$", CNY: "¥" };
const enc = encodeURIComponent;

// The text of `key` with `{s}` replaced.
const tf = (key, s) => t(key).replace("{s}", s);

const scopeOf = (b) => SCOPES.find((s) => b[s] !== undefined && b[s] !== null) || "consumer";
const currencyOf = (b) => b.currency || "USD";

// An amount of money (the API's exact decimal string, or a number) for people: grouped
// thousands, two to six decimals (the exact figure is in the element's title).
export function money(v, currency) {
  if (v === null || v === undefined || v === "") return "–";
  let s = String(v);
  if (/e/i.test(s)) s = Number(s).toFixed(6);
  const neg = s.startsWith("-");
  if (neg) s = s.slice(1);
  let [whole, frac = ""] = s.split(".");
  frac = frac.slice(0, 6).replace(/0+$/, "").padEnd(2, "0");
  whole = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const sym = SYMBOL[currency];
  return `${neg ? "-" : ""}${sym || ""}${whole}.${frac}${sym ? "" : ` ${currency}`}`;
}

function Money({ value, currency, testid }) {
  return html`<span class="num" title=${`${value} ${currency}`} data-exact=${value} data-testid=${testid}>${money(value, currency)}</span>`;
}

// Whom a budget caps, in words.
function appliesTo(b) {
  const scope = scopeOf(b);
  const target = b[scope];
  if (target === "*") return t(`each_${scope}`);
  if (scope === "key" && target.endsWith("/*")) return tf("each_key_of", target.slice(0, -2));
  return `${t(scope === "key" ? "provider_key" : scope)} ${target}`;
}

function period(b) {
  const p = b.period || "month";
  return `${t(`period_${p}`)}${p === "custom" && b.every ? ` (${b.every})` : ""}`;
}

// RFC 3339 local time in the budget's zone, as the API gives it: shown as is, the browser's
// own clock in the title.
function When({ at, testid }) {
  if (!at) return html`<span class="muted" data-testid=${testid}>${t("never")}</span>`;
  const local = new Date(at);
  const shown = at.replace("T", " ").replace(/:00(?=[+-]|Z$)/, "").replace(/([+-]\d\d:\d\d|Z)$/, " $1");
  return html`<time datetime=${at} title=${isNaN(local) ? "" : local.toLocaleString()} data-testid=${testid}>${shown}</time>`;
}

const level = (pct) => (pct >= 100 ? "over" : pct >= 80 ? "warn" : "ok");

// Spend per period of one subject, newest first.
function History({ budget, subject, tick }) {
  const [data, err] = useApi(`budgets/${enc(budget.name)}/history?subject=${enc(subject)}&limit=24`, [tick]);
  const cur = currencyOf(budget);
  const items = (data && data.items) || [];
  return html`<div class="history" data-testid=${`history-${budget.name}-${subject}`}>
    <h4>${t("spend_per_period")}: ${subject}</h4>
    <${Problem} error=${err} />
    ${data && !items.length ? html`<p class="muted">${t("none")}</p>` : html`<table class="compact">
      <thead><tr><th>${t("period_start")}</th><th class="num">${t("spent")}</th><th class="num">${t("topups")}</th></tr></thead>
      <tbody>${items.map((h) => html`<tr><td><${When} at=${h.period_start} /></td>
        <td class="num"><${Money} value=${h.spent} currency=${h.currency || cur} /></td>
        <td class="num"><${Money} value=${h.topup} currency=${h.currency || cur} /></td></tr>`)}</tbody></table>`}
  </div>`;
}

function SubjectRow({ budget, s, me, changed, tick, cols }) {
  const [amount, setAmount] = useState("");
  const [showHistory, setShowHistory] = useState(false);
  const [run, err, busy] = useAction();
  const cur = s.currency || currencyOf(budget);
  const base = `budgets/${enc(budget.name)}`;
  const pct = Number(s.percent_used) || 0;
  const id = `${budget.name}-${s.subject}`;
  const topped = s.topup && Number(s.topup) !== 0;
  return html`<tr data-testid=${`subject-${id}`}>
      <th scope="row">${s.subject}</th>
      <td class="used"><progress class=${`used ${level(pct)}`} max="100" value=${Math.min(pct, 100)} aria-label=${`${t("used")} ${s.subject}`}></progress>
        <span class=${`pct ${level(pct)}`} data-testid="percent">${pct.toFixed(1)} %</span></td>
      <td class="num"><${Money} value=${s.spent} currency=${cur} testid="spent" /></td>
      <td class="num"><${Money} value=${s.remaining} currency=${cur} testid="remaining" /></td>
      <td class="num"><${Money} value=${s.reserved} currency=${cur} testid="reserved" /></td>
      <td class="num"><${Money} value=${s.amount} currency=${cur} />${topped && html`<br /><small class="muted">${t("topups")}: <${Money} value=${s.topup} currency=${cur} testid="topup" /></small>`}</td>
      <td class="when"><${When} at=${s.resets_at} testid="resets-at" /><br /><small class="muted">${t("since")} <${When} at=${s.period_start} /></small></td>
      <td class="actions">
        ${me.may_write && html`<form class="inline" onSubmit=${(e) => { e.preventDefault(); run(async () => {
            await api("POST", `${base}/top_up`, { subject: s.subject, amount: amount.trim() }); setAmount(""); changed(); }); }}>
          <input name=${`topup-${id}`} class="amount" inputmode="decimal" pattern="-?[0-9]*[.]?[0-9]+" aria-label=${`${t("top_up")} ${s.subject}`} placeholder=${SYMBOL[cur] || cur} value=${amount} onInput=${(e) => setAmount(e.target.value)} required />
          <button type="submit" disabled=${busy}>${t("top_up")}</button>
          <button type="button" class="danger" disabled=${busy} onClick=${() => confirm(tf("reset_confirm", s.subject)) && run(async () => {
            await api("POST", `${base}/reset`, { subject: s.subject }); changed(); })}>${t("reset")}</button>
        </form>`}
        <button type="button" aria-expanded=${showHistory} onClick=${() => setShowHistory(!showHistory)}>${t("history_short")}</button>
        <${Problem} error=${err} />
      </td>
    </tr>
    ${showHistory && html`<tr class="expanded"><td colspan=${cols}><${History} budget=${budget} subject=${s.subject} tick=${tick} /></td></tr>`}`;
}

// One budget opened: every subject's current period, and the budget itself (editable when
// the API made it).
function Standing({ budget, me, tick, saved }) {
  const [n, setN] = useState(0);
  const [data, err] = useApi(`budgets/${enc(budget.name)}/spend`, [tick, n]);
  const items = (data && data.items) || [];
  const cols = 8;
  return html`<div class="standing" data-testid=${`standing-${budget.name}`}>
    <p class="muted">${`${t("unpriced")}: ${t(`unpriced_${budget.unpriced || "refuse"}`)} · ${t("output_allowance")}: ${(budget.output_allowance ?? 4096).toLocaleString()}`}${budget.anchor ? ` · ${t("anchor")}: ${budget.anchor}` : ""}</p>
    <${Problem} error=${err} />
    ${data && !items.length && html`<p class="muted">${t("no_subjects")}</p>`}
    ${items.length > 0 && html`<table class="subjects">
      <thead><tr><th>${scopeOf(budget) === "key" ? t("provider_key") : t(scopeOf(budget))}</th><th>${t("used")}</th>
        <th class="num">${t("spent")}</th><th class="num">${t("remaining")}</th><th class="num" title=${t("reserved_hint")}>${t("reserved")}</th>
        <th class="num">${t("budget_amount")}</th><th>${t("resets_at")}</th><th>${t("actions")}</th></tr></thead>
      <tbody>${items.map((s) => html`<${SubjectRow} key=${s.subject} budget=${budget} s=${s} me=${me} cols=${cols}
        tick=${tick + n} changed=${() => setN(n + 1)} />`)}</tbody></table>`}
    <${JsonEdit} value=${budget} path=${`budgets/${enc(budget.name)}`} editable=${me.may_write && budget.source !== "file"} saved=${saved} />
  </div>`;
}

const BLANK = { name: "", scope: "consumer", target: "*", amount: "", currency: "USD", period: "month", every: "", anchor: "", time_zone: "", soft: false, unpriced: "refuse" };

function NewBudget({ created }) {
  const [f, setF] = useState(BLANK);
  const [run, err, busy] = useAction();
  const [consumers] = useApi("consumers");
  const [routes] = useApi("routes");
  const [providers] = useApi("providers");
  const set = (k) => (e) => setF({ ...f, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  const cs = (consumers && consumers.items) || [];
  const known = {
    consumer: cs.map((c) => c.name),
    team: [...new Set(cs.map((c) => c.team).filter(Boolean))],
    route: ((routes && routes.items) || []).map((r) => r.name),
    key: ((providers && providers.items) || []).flatMap((p) => [`${p.name}/*`,
      ...(p.api_keys || []).map((k, i) => `${p.name}/${typeof k === "string" ? `key-${i + 1}` : k.name}`)]),
  };
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : ["UTC", "Asia/Shanghai"];
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      const body = { name: f.name.trim(), [f.scope]: f.target.trim() || "*", amount: Number(f.amount), currency: f.currency, period: f.period, soft: f.soft, unpriced: f.unpriced };
      if (f.period === "custom" && f.every.trim()) body.every = f.every.trim();
      if (f.anchor.trim()) body.anchor = f.anchor.trim();
      if (f.time_zone.trim()) body.time_zone = f.time_zone.trim();
      await api("POST", "budgets", body);
      setF({ ...BLANK, scope: f.scope, currency: f.currency, period: f.period, time_zone: f.time_zone });
      created(body.name);
    });
  };
  return html`<section class="card wide"><h3>${t("new_budget")}</h3>
    <form onSubmit=${submit} data-testid="new-budget">
      <label>${t("name")} <input name="budget_name" value=${f.name} onInput=${set("name")} required /></label>
      <label>${t("scope")} <select name="budget_scope" value=${f.scope} onChange=${set("scope")}>
        ${SCOPES.map((s) => html`<option value=${s}>${s === "key" ? t("provider_key") : t(s)}</option>`)}</select></label>
      <label>${t("target")} <input name="budget_target" list="budget-targets" value=${f.target} onInput=${set("target")} required /></label>
      <datalist id="budget-targets"><option value="*">${t(`each_${f.scope}`)}</option>${known[f.scope].map((n) => html`<option value=${n} />`)}</datalist>
      <label>${t("budget_amount")} <input name="budget_amount" type="number" min="0" step="any" value=${f.amount} onInput=${set("amount")} required /></label>
      <label>${t("currency")} <select name="budget_currency" value=${f.currency} onChange=${set("currency")}>
        ${["USD", "CNY"].map((c) => html`<option value=${c}>${c}</option>`)}</select></label>
      <label>${t("period")} <select name="budget_period" value=${f.period} onChange=${set("period")}>
        ${PERIODS.map((p) => html`<option value=${p}>${t(`period_${p}`)}</option>`)}</select></label>
      ${f.period === "custom" && html`<label>${t("every")} <input name="budget_every" value=${f.every} onInput=${set("every")} placeholder="14d" required /></label>`}
      ${f.period !== "lifetime" && html`<label>${t("anchor")} <input name="budget_anchor" value=${f.anchor} onInput=${set("anchor")} placeholder="2026-01-01T00:00" pattern="[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?" required=${f.period === "custom"} /></label>
      <label>${t("time_zone")} <input name="budget_time_zone" list="budget-zones" value=${f.time_zone} onInput=${set("time_zone")} placeholder="UTC" /></label>
      <datalist id="budget-zones">${zones.map((z) => html`<option value=${z} />`)}</datalist>`}
      <label>${t("unpriced")} <select name="budget_unpriced" value=${f.unpriced} onChange=${set("unpriced")}>
        ${["refuse", "admit"].map((u) => html`<option value=${u}>${t(`unpriced_${u}`)}</option>`)}</select></label>
      <label class="check"><input name="budget_soft" type="checkbox" checked=${f.soft} onChange=${set("soft")} /> ${t("soft_label")}</label>
      <button type="submit" disabled=${busy}>${t("create")}</button>
      <${Problem} error=${err} />
    </form></section>`;
}

export function Budgets({ me }) {
  const [tick, setTick] = useState(0);
  const [data, err] = useApi("budgets", [tick]);
  const [open, setOpen] = useState([]);
  const [run, actErr] = useAction();
  const items = (data && data.items) || [];
  const toggle = (n) => setOpen(open.includes(n) ? open.filter((x) => x !== n) : [...open, n]);
  const again = () => setTick(tick + 1);
  const cols = 7;
  return html`<div>
    <div class="toolbar"><button onClick=${again}>${t("refresh")}</button></div>
    <${Problem} error=${err || actErr} />
    <section class="card wide">
      ${data && !items.length ? html`<p class="muted">${t("none")}</p>` : html`<table data-testid="budgets">
      <thead><tr><th>${t("name")}</th><th>${t("applies_to")}</th><th class="num">${t("budget_amount")}</th><th>${t("period")}</th>
        <th>${t("soft")}</th><th>${t("source")}</th><th>${t("actions")}</th></tr></thead>
      <tbody>${items.map((b) => { const isOpen = open.includes(b.name); return html`
        <tr data-testid=${`budget-${b.name}`} class=${isOpen ? "open" : ""}>
          <td><button type="button" class="link" aria-expanded=${isOpen} onClick=${() => toggle(b.name)} data-testid=${`open-${b.name}`}>${isOpen ? "▾" : "▸"} ${b.name}</button></td>
          <td>${appliesTo(b)}</td>
          <td class="num"><${Money} value=${b.amount} currency=${currencyOf(b)} /></td>
          <td>${period(b)} <small class="muted">${b.time_zone || "UTC"}</small></td>
          <td>${b.soft ? t("soft_yes") : html`<span class="muted">${t("soft_no")}</span>`}</td>
          <td>${b.source}</td>
          <td>${me.may_write && b.source !== "file" && html`<button class="danger" onClick=${() => confirm(tf("delete_confirm", b.name)) && run(async () => {
              await api("DELETE", `budgets/${enc(b.name)}`); setOpen(open.filter((x) => x !== b.name)); again(); })}>${t("delete")}</button>`}</td>
        </tr>
        ${isOpen && html`<tr class="expanded"><td colspan=${cols}><${Standing} budget=${b} me=${me} tick=${tick} saved=${again} /></td></tr>`}`; })}
      </tbody></table>`}
    </section>
    ${me.may_write && html`<${NewBudget} created=${(name) => { setOpen([...open, name]); again(); }} />`}
  </div>`;
}
