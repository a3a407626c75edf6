// The console's shell: who is logged in, first-run setup, login, navigation.
import { html, render, useState, useEffect } from "./preact-htm.js";
import { t, lang, setLang } from "./i18n.js";
import { api, setCsrf, Overview, Providers, Routes, Consumers, Limits, Requests, Playground, Config } from "./pages.js";
import { Budgets } from "./budgets.js";

const PAGES = [
  ["overview", Overview], ["providers", Providers], ["routes", Routes], ["consumers", Consumers],
  ["budgets", Budgets], ["limits", Limits], ["requests", Requests], ["playground", Playground], ["config", Config],
];

function page() {
  const name = location.hash.replace(/^#\/?/, "") || "overview";
  return PAGES.find(([n]) => n === name) ? name : "overview";
}

function Setup({ me, done }) {
  const [f, setF] = useState({ user: "admin", password: "", token: "" });
  const [err, setErr] = useState(null);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const submit = async (e) => {
    e.preventDefault(); setErr(null);
    try {
      const headers = { "Content-Type": "application/json" };
      if (f.token) headers.Authorization = `Bearer ${f.token}`;
      const r = await fetch("/admin/api/v1/setup", { method: "POST", headers, body: JSON.stringify({ user: f.user, password: f.password }) });
      if (!r.ok) throw new Error(((await r.json()).error || {}).message || r.statusText);
      const who = await api("POST", "/console/api/login", { user: f.user, password: f.password });
      done(who);
    } catch (e2) { setErr(e2.message); }
  };
  return html`<main class="login"><h1>${t("title")}</h1><h2>${t("setup")}</h2><p>${t("setup_hint")}</p>
    <form onSubmit=${submit}>
      <label>${t("user")} <input name="user" value=${f.user} onInput=${set("user")} autocomplete="username" required /></label>
      <label>${t("password")} <input name="password" type="password" value=${f.password} onInput=${set("password")} autocomplete="new-password" required /></label>
      ${me.token_required && html`<label>${t("admin_token")} <input name="token" type="password" value=${f.token} onInput=${set("token")} /></label>`}
      <button type="submit">${t("create")}</button>
      ${err && html`<p class="error" role="alert">${err}</p>`}
    </form></main>`;
}

function Login({ done }) {
  const [f, setF] = useState({ user: "", password: "" });
  const [err, setErr] = useState(null);
  const set = (k) => (e) => setF({ ...f, [k]: e.target.value });
  const submit = async (e) => {
    e.preventDefault(); setErr(null);
    try { done(await api("POST", "/console/api/login", f)); } catch (e2) { setErr(e2.message); }
  };
  return html`<main class="login"><h1>${t("title")}</h1>
    <form onSubmit=${submit}>
      <label>${t("user")} <input name="user" value=${f.user} onInput=${set("user")} autocomplete="username" required /></label>
      <label>${t("password")} <input name="password" type="password" value=${f.password} onInput=${set("password")} autocomplete="current-password" required /></label>
      <button type="submit">${t("login")}</button>
      ${err && html`<p class="error" role="alert">${err}</p>`}
    </form></main>`;
}

function App() {
  const [me, setMe] = useState(null);
  const [current, setCurrent] = useState(page());
  const [, setL] = useState(lang);
  const [theme, setTheme] = useState(localStorage.getItem("tollgate.theme") || "auto");
  useEffect(() => {
    const on = () => setCurrent(page());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("tollgate.theme", theme);
  }, [theme]);
  const load = async () => {
    const r = await fetch("/console/api/session", { credentials: "same-origin" });
    const v = await r.json();
    setCsrf(v.csrf);
    setMe({ ...v, ok: r.ok && v.authenticated });
  };
  useEffect(() => { load(); }, []);
  if (!me) return html`<p class="boot">…</p>`;
  const loggedIn = (who) => { setCsrf(who.csrf); load(); };
  if (me.ok && me.setup_needed && me.user === "anonymous") return html`<${Setup} me=${me} done=${loggedIn} />`;
  if (!me.ok) return me.setup_needed ? html`<${Setup} me=${me} done=${loggedIn} />` : html`<${Login} done=${loggedIn} />`;
  const Page = PAGES.find(([n]) => n === current)[1];
  const logout = async () => { await api("POST", "/console/api/logout"); setCsrf(null); load(); };
  return html`<div class="shell">
    <nav aria-label="main">
      <p class="brand">Tollgate</p>
      <ul>${PAGES.map(([n]) => html`<li><a href=${`#/${n}`} aria-current=${n === current ? "page" : undefined} data-testid=${`nav-${n}`}>${t(n)}</a></li>`)}</ul>
    </nav>
    <div class="main">
      <header>
        <h1>${t(current)}</h1>
        <span class="who" data-testid="who">${me.user} · ${me.role}${me.may_write ? "" : ` · ${t("read_only")}`}</span>
        <button onClick=${() => { setLang(lang === "en" ? "zh" : "en"); setL(lang); }} data-testid="lang">${t("language")}</button>
        <button onClick=${() => setTheme(theme === "dark" ? "light" : "dark")} aria-label=${t("theme")}>◐</button>
        ${me.user !== "anonymous" && me.user !== "token" && html`<button onClick=${logout} data-testid="logout">${t("logout")}</button>`}
      </header>
      <main><${Page} me=${me} key=${current} /></main>
    </div></div>`;
}

document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
render(html`<${App} />`, document.getElementById("app"));
