#!/usr/bin/env python3
"""Render load/RESULTS.md from the raw files of one `load/run.sh` run (stdlib only).

    python3 load/report.py WORK_DIR > load/RESULTS.md

Every figure comes from WORK_DIR: meta.tsv (machine facts, commands, configs), runs/ (one
.cmd and .out per measurement, in runs/index order) and bench/ (criterion estimates).
"""

import json
import os
import sys

TARGETS = ["direct", "nginx", "tollgate", "tollgate_h2", "litellm"]
NAMES = {"direct": "direct", "nginx": "nginx", "tollgate": "Tollgate", "tollgate_h2": "Tollgate, h2 upstream",
         "litellm": "LiteLLM"}


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def load_meta(work):
    meta = {}
    for line in read(os.path.join(work, "meta.tsv")).splitlines():
        if "\t" not in line:
            continue
        k, v = line.split("\t", 1)
        if v.startswith("@"):
            v = {"file": v[1:], "text": read(v[1:])}
        meta[k] = v
    return meta


def load_runs(work):
    runs = {}
    order = []
    for line in read(os.path.join(work, "runs", "index")).splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        name, kind = parts
        scenario, target = name.split("__", 1)
        out = read(os.path.join(work, "runs", name + ".out"))
        cmd = read(os.path.join(work, "runs", name + ".cmd")).strip()
        result = None
        for l in out.splitlines():
            l = l.strip()
            if kind == "wrk" and l.startswith("WRKRESULT "):
                result = json.loads(l[len("WRKRESULT "):])
            elif kind == "sse" and l.startswith("{"):
                result = json.loads(l)
        runs[(scenario, target)] = {"kind": kind, "cmd": cmd, "out": out, "r": result,
                                    "err": read(os.path.join(work, "runs", name + ".err"))}
        order.append((scenario, target))
    return runs, order


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{v:,.0f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.{digits}f}×"


def wrk_errors(r):
    e = r["errors"]
    return e["connect"] + e["read"] + e["write"] + e["timeout"] + e["status"]


def md_table(lines, header_prefix):
    """The rows of the first markdown table whose header starts with `header_prefix`, as
    {first cell: [cells]}, and the header's cells."""
    for i, line in enumerate(lines):
        if line.startswith(header_prefix):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
            rows = {}
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [c.strip() for c in row.strip().strip("|").split("|")]
                rows[cells[0]] = cells
            return header, rows
    return None, {}


def before_after(now_lines):
    """A section comparing this run with the previous RESULTS.md (read before it is replaced):
    both are actual runs of this script; nothing is typed in."""
    path = os.environ.get("PREVIOUS_RESULTS") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    try:
        with open(path, encoding="utf-8") as f:
            old_lines = f.read().splitlines()
    except OSError:
        return []
    started = next((l.split("started ", 1)[1].split(".")[0] for l in old_lines if l.startswith("Written by")), "?")
    out = ["## Before and after", "",
           f"Before: the previous `load/RESULTS.md` (its run started {started}), read by this script just before "
           "replacing it; after: this run. Both were measured by this script on this machine, but not in the same run "
           "and not necessarily under the same background load: compare the ratios to nginx and to direct rather than "
           "the raw figures.", ""]
    oh, old = md_table(old_lines, "| metric | direct |")
    nh, new = md_table(now_lines, "| metric | direct |")
    if oh and nh:
        def col(header, name):
            return header.index(name) if name in header else None
        out.append("| metric | Tollgate before | Tollgate now | Tollgate/nginx before | Tollgate/nginx now |")
        out.append("|---|---:|---:|---:|---:|")
        for label, cells in new.items():
            prev = old.get(label)
            def cell(cs, header, name):
                i = col(header, name)
                return cs[i] if cs is not None and i is not None and i < len(cs) else "–"
            out.append(f"| {label} | {cell(prev, oh, 'Tollgate')} | {cell(cells, nh, 'Tollgate')} | "
                       f"{cell(prev, oh, 'Tollgate/nginx')} | {cell(cells, nh, 'Tollgate/nginx')} |")
        out.append("")
    _, old_t = md_table(old_lines, "| target | measured |")
    _, new_t = md_table(now_lines, "| target | measured |")
    if new_t:
        out.append("| target | before | now |")
        out.append("|---|---|---|")
        for label, cells in new_t.items():
            prev = old_t.get(label)
            b = f"{prev[1]} ({prev[2]})" if prev and len(prev) > 2 else "–"
            out.append(f"| {label} | {b} | {cells[1]} ({cells[2]}) |")
        out.append("")
    return out


def main():
    work = sys.argv[1]
    meta = load_meta(work)
    runs, order = load_runs(work)
    targets = [t for t in TARGETS if t in meta.get("targets", "").split()]
    m = lambda k: meta.get(k, "") if isinstance(meta.get(k, ""), str) else meta[k]["text"]

    def get(scenario, target, *path):
        run = runs.get((scenario, target))
        if not run or run["r"] is None:
            return None
        v = run["r"]
        if run["kind"] == "wrk" and v.get("requests") == 0 and path[0] == "latency_us":
            return None
        # No completed stream: its timing distributions are empty, not zero.
        if run["kind"] == "sse" and v.get("streams_ok") == 0 and path[0] in ("ttft_us", "ttlt_us", "chunk_delay_us", "gap_us"):
            return None
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
            if v is None:
                return None
        return v

    o = []
    w = o.append
    w("# Tollgate load results")
    w("")
    w(f"Written by `bash load/run.sh`, started {m('date_start')}. The script took {m('total_s') or '?'} s in all: "
      f"{m('build_s')} s installing/building, {m('elapsed_s')} s of servers and measurements (finished "
      f"{m('date_end')}), the rest criterion benchmarks and this report. Every number below comes from that one "
      "run; nothing here is edited by hand — rerun the script to refresh it. Raw files were in "
      f"`{m('work_dir')}` (temporary).")
    w("")
    la_start, la_end = m("load_start"), m("load_end")
    nproc = int(m("nproc") or 0) or 1
    busy = False
    try:
        busy = max(float(la_start.split()[0]), float(la_end.split()[0])) > 0.5 * nproc
    except (ValueError, IndexError):
        pass
    w("## Machine and versions")
    w("")
    w("| | |")
    w("|---|---|")
    for k, label in [("cpu", "CPU"), ("nproc", "`nproc`"), ("mem_total", "memory"), ("kernel", "kernel"),
                     ("os", "OS"), ("rustc", "rustc"), ("cargo", "cargo"), ("tollgate_version", "tollgate"),
                     ("git_head", "git HEAD"), ("git_dirty", "uncommitted changes"),
                     ("nginx", "nginx"), ("wrk", "wrk"), ("python", "python (report, LiteLLM venv)"),
                     ("litellm", "LiteLLM"), ("ulimit_n", "`ulimit -n`"),
                     ("load_start", "load average at start (`/proc/loadavg`)"),
                     ("load_end", "load average at end of the measurements"),
                     ("load_after_bench", "load average after the benchmarks")]:
        v = m(k)
        if k == "litellm" and not v:
            v = "skipped (see below)"
        if not v:
            continue
        w(f"| {label} | {v} |")
    w("")
    if busy:
        w(f"**The machine was busy** during this run (1-minute load average above half of its {nproc} cores "
          "at the start or the end: other processes, e.g. test suites, were running). Every target suffered it "
          "alike within the run, so the ratios are the figures to read; the absolute numbers are pessimistic.")
        w("")
    w("Everything — load generator, mock upstream, proxies — shares the same "
      f"{nproc} cores, so absolute throughput is bounded by the machine, not by any one proxy.")
    w("")

    w("## What was run")
    w("")
    w("- Upstream: `mock-llm` (this repository), OpenAI chat completions. Non-streaming answers are 8 tokens; "
      f"streams are {64} content chunks paced 20 ms apart (`x-mock-chunks: 64`, `x-mock-chunk-delay-ms: 20`).")
    w("- **direct**: the load generator straight to mock-llm (the floor).")
    w(f"- **nginx**: Debian's nginx, {m('nginx_workers')} worker, plain reverse proxy with upstream keep-alive, "
      "`proxy_buffering off`, access log to a file.")
    w(f"- **Tollgate**: {m('tollgate_threads')} threads; one provider with a two-key pool, a model mapping "
      "(every body is rewritten: `mock-gpt-4o` → `gpt-4o-mock`; streams also get "
      "`stream_options.include_usage` added and the usage chunk stripped again), retries, token metering, "
      "access log to a file, Prometheus metrics and a token-protected admin listener.")
    if "tollgate_h2" in targets:
        w("- **Tollgate, h2 upstream**: the same Tollgate configuration with `http2: true` on the provider "
          "(HTTP/2 with prior knowledge to the mock, up to 100 streams per connection); a second process, "
          "measured in the streaming scenarios only.")
    auth = m("tollgate_auth")
    if auth.startswith("not part"):
        w(f"  **Consumer auth and token limits were {auth}.**")
    else:
        w(f"  Also {auth}.")
    if "litellm" in targets:
        w(f"- **LiteLLM** {m('litellm')} (PyPI, pinned; not 1.107.0): `litellm --num_workers {m('litellm_workers')}`, "
          "the same mock as an `openai/` model with `api_base`, no database, a `master_key` checked on every request. "
          "For streams a second model entry sets the mock's pacing headers (`extra_headers`), because "
          "LiteLLM does not forward client headers upstream.")
    else:
        w(f"- **LiteLLM: skipped** — {m('litellm_skip') or 'not run'}. The other comparisons ran as usual.")
    w("- Load: `wrk` 4.1 with `load/post.lua` (POST bodies, keep-alive) for non-streaming requests; "
      "`load/sse-client` (a small Rust/tokio client, keep-alive HTTP/1.1, timings per SSE event) for streams.")
    w(f"- Each wrk measurement: {m('warmup')} s warm-up (not recorded), then {m('duration')} s. Each streaming "
      f"measurement: 3 s warm-up, then {m('stream_duration')} s of streams started (first ones spread over 1 s), "
      "each stream bounded by 20 s; a connection that finished a stream starts the next one on the same "
      "connection. Order: a (c=1, c=64), b (each level), c; within each, direct, nginx, Tollgate, LiteLLM.")
    w("- Measurements run one after the other on a shared machine: differences between targets smaller than "
      "the run-to-run noise (a few hundred µs of latency or chunk delay at these loads, more on a busy machine) "
      "are not significant.")
    w("")

    # ---------------------------------------------------------------- headline
    rows = []

    def row(label, scenario, path, better, digits=0):
        vals = {t: get(scenario, t, *path) for t in targets}
        rows.append((label, vals, better, digits))

    row("a. chat c=1: p50 latency (µs)", "a1_chat_c1", ["latency_us", "p50"], "low")
    row("a. chat c=1: p99 latency (µs)", "a1_chat_c1", ["latency_us", "p99"], "low")
    row("a. chat c=64: requests/s", "a2_chat_c64", ["rps"], "high")
    row("a. chat c=64: p99 latency (µs)", "a2_chat_c64", ["latency_us", "p99"], "low")
    row("c. 1 MiB body c=16: requests/s", "c_body1m_c16", ["rps"], "high")
    levels = sorted({int(s.split("_")[-1]) for s, _ in order if s.startswith("b_stream_")})
    for lv in levels:
        sc = f"b_stream_{lv}"
        row(f"b. {lv} streams: TTFT p50 (µs)", sc, ["ttft_us", "p50"], "low")
        row(f"b. {lv} streams: TTFT p99 (µs)", sc, ["ttft_us", "p99"], "low")
        row(f"b. {lv} streams: chunk delay p50 (µs)", sc, ["chunk_delay_us", "p50"], "low")
        row(f"b. {lv} streams: chunk delay p99 (µs)", sc, ["chunk_delay_us", "p99"], "low")
        row(f"b. {lv} streams: streams completed", sc, ["streams_ok"], "high")
        row(f"b. {lv} streams: errors", sc, ["errors_total"], "low")
        row(f"b. {lv} streams: RSS per active stream (KiB)", sc, ["rss_per_active_stream_kb"], "low", 1)

    w("## Results and ratios (all from this run)")
    w("")
    w("Ratios divide the figures as named: for latencies and memory higher means the first is slower/heavier; "
      "for requests/s higher means the first is faster. A dash: no figure (e.g. no stream completed).")
    w("")
    hdr = "| metric | " + " | ".join(NAMES[t] for t in targets) + " | Tollgate/direct | Tollgate/nginx |"
    sep = "|---|" + "---:|" * len(targets) + "---:|---:|"
    if "litellm" in targets:
        hdr += " LiteLLM/Tollgate |"
        sep += "---:|"
    w(hdr)
    w(sep)
    for label, vals, better, digits in rows:
        cells = [fmt(vals.get(t), digits) for t in targets]
        line = f"| {label} | " + " | ".join(cells)
        tg = vals.get("tollgate")
        skip_ratio = "errors" in label
        line += f" | {'–' if skip_ratio else ratio(tg, vals.get('direct'))} | {'–' if skip_ratio else ratio(tg, vals.get('nginx'))} |"
        if "litellm" in targets:
            line += f" {'–' if skip_ratio else ratio(vals.get('litellm'), tg)} |"
        w(line)
    w("")

    # Added over direct
    w("### Added over direct (target minus direct, same run)")
    w("")
    others = [t for t in targets if t != "direct"]
    w("| metric | " + " | ".join(NAMES[t] for t in others) + " |")
    w("|---|" + "---:|" * len(others))
    for label, scenario, path in [("chat c=1: added p50 latency (µs)", "a1_chat_c1", ["latency_us", "p50"]),
                                  ("chat c=1: added p99 latency (µs)", "a1_chat_c1", ["latency_us", "p99"])] + [
        (f"{lv} streams: added TTFT {p} (µs)", f"b_stream_{lv}", ["ttft_us", p]) for lv in levels for p in ("p50", "p99")
    ] + [
        (f"{lv} streams: added per-chunk delay {p} (µs)", f"b_stream_{lv}", ["chunk_delay_us", p]) for lv in levels for p in ("p50", "p99")
    ]:
        d = get(scenario, "direct", *path)
        cells = []
        for t in others:
            v = get(scenario, t, *path)
            cells.append("–" if v is None or d is None else f"{v - d:+,.0f}")
        w(f"| {label} | " + " | ".join(cells) + " |")
    w("")
    w("TTFT: from writing the request to the arrival of the first SSE event with non-empty `content`. "
      "A gap p50 of 0 µs (raw table) means most chunks arrived together with the previous one in one read, i.e. "
      "in bursts. "
      "Chunk delay: for content event *i*, arrival − request start − *i* × 20 ms, over every chunk of every "
      "completed stream (the mock's own timer drift is in every target's figure alike, so the difference to "
      "direct is what the proxy added per chunk). RSS per active stream: (peak summed `VmRSS` of the proxy's "
      "processes during the measurement − their `VmRSS` just before its warm-up) ÷ the most streams open at once; "
      "sampled from `/proc` every 100 ms (the warm-up runs at the same concurrency, and allocators keep what it "
      "took, hence the baseline before it). For direct the process is mock-llm itself; for nginx its worker; for "
      "LiteLLM the gunicorn master and its workers.")
    w("")

    # ---------------------------------------------------------------- targets
    w("## Against the issue's targets")
    w("")
    w("| target | measured | met |")
    w("|---|---|---|")

    def verdict(ok):
        return "–" if ok is None else ("yes" if ok else "**no**")

    d99, t99 = get("a1_chat_c1", "direct", "latency_us", "p99"), get("a1_chat_c1", "tollgate", "latency_us", "p99")
    added = None if d99 is None or t99 is None else t99 - d99
    w(f"| added p99 latency at c=1 ≤ 150 µs | {fmt(added)} µs | {verdict(None if added is None else added <= 150)} |")
    tn = get("a2_chat_c64", "tollgate", "rps")
    nn = get("a2_chat_c64", "nginx", "rps")
    ln = get("a2_chat_c64", "litellm", "rps")
    r1 = None if not tn or not nn else tn / nn
    w(f"| c=64 throughput ≥ 0.7× nginx | {'–' if r1 is None else f'{r1:.2f}×'} | {verdict(None if r1 is None else r1 >= 0.7)} |")
    r2 = None if not tn or not ln else tn / ln
    w(f"| c=64 throughput ≥ 100× LiteLLM | {'–' if r2 is None else f'{r2:.1f}×'} | {verdict(None if r2 is None else r2 >= 100)} |")
    if 2000 in levels:
        sc = "b_stream_2000"
        e = get(sc, "tollgate", "errors_total")
        w(f"| 2,000 streams with no error | {fmt(e)} errors, {fmt(get(sc, 'tollgate', 'streams_ok'))} streams completed | {verdict(None if e is None else e == 0)} |")
        dt, tt = get(sc, "direct", "ttft_us", "p99"), get(sc, "tollgate", "ttft_us", "p99")
        a = None if dt is None or tt is None else tt - dt
        w(f"| 2,000 streams: added TTFT p99 ≤ 2 ms | {fmt(a)} µs | {verdict(None if a is None else a <= 2000)} |")
        rss = get(sc, "tollgate", "rss_per_active_stream_kb")
        w(f"| 2,000 streams: RSS ≤ 64 KiB per active stream | {fmt(rss, 1)} KiB | {verdict(None if rss is None else rss <= 64)} |")
        rss2 = get(sc, "tollgate_h2", "rss_per_active_stream_kb")
        if rss2 is not None:
            w(f"| 2,000 streams: RSS ≤ 64 KiB per active stream, provider over HTTP/2 | {fmt(rss2, 1)} KiB | {verdict(rss2 <= 64)} |")
    bench = json.loads(m("bench_json") or "[]") if m("bench_json") else []
    sse = [b for b in bench if b["id"].startswith(("sse_parser/", "stream_meter/", "usage_from_json/"))]
    if sse:
        worst = min(sse, key=lambda b: b["gbps"])
        w(f"| SSE parsing and usage extraction ≥ 1 GB/s on one core | slowest: {worst['gbps']:.2f} GB/s ({worst['id']}) | {verdict(worst['gbps'] >= 1.0)} |")
    else:
        w("| SSE parsing and usage extraction ≥ 1 GB/s on one core | criterion benchmarks not run here (`cargo bench --bench hot_path`) | – |")
    w("")
    before_after_at = len(o)

    if bench:
        w("## Criterion benchmarks (`cargo bench --bench hot_path`, same run, servers stopped)")
        w("")
        w(f"Command: `{m('bench_cmd')}`. Median time per iteration; throughput = input bytes ÷ median time (GB = 10⁹ bytes).")
        w("")
        w("| benchmark | input bytes | median | GB/s |")
        w("|---|---:|---:|---:|")
        for b in bench:
            t = b["median_ns"]
            tt = f"{t / 1000:,.2f} µs" if t >= 1000 else f"{t:,.1f} ns"
            w(f"| `{b['id']}` | {b['bytes']:,} | {tt} | {b['gbps']:.2f} |")
        w("")

    # ---------------------------------------------------------------- raw
    w("## Raw figures")
    w("")
    w("Non-streaming (wrk; latency in µs; errors = connect + read + write + timeout + non-2xx):")
    w("")
    w("| measurement | requests | duration s | req/s | mean | p50 | p90 | p99 | p99.9 | max | errors (non-2xx) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (s, t) in order:
        run = runs[(s, t)]
        r = run["r"]
        if run["kind"] != "wrk":
            continue
        if r is None:
            w(f"| {s} / {t} | no result (see output below) |||||||||")
            continue
        L = r["latency_us"]
        if r["requests"] == 0:
            w(f"| {s} / {t} | 0: no response within the measurement | {r['duration_s']:.2f} | 0 |||||||"
              f" {wrk_errors(r):,} ({r['errors']['status']:,}) |")
            continue
        w(f"| {s} / {t} | {r['requests']:,} | {r['duration_s']:.2f} | {r['rps']:,.0f} | {L['mean']:,.0f} | {L['p50']:,} | "
          f"{L['p90']:,} | {L['p99']:,} | {L['p999']:,} | {L['max']:,} | {wrk_errors(r):,} ({r['errors']['status']:,}) |")
    w("")
    w("Streaming (load/sse-client; times in µs):")
    w("")
    w("| measurement | streams ok | errors | TTFT p50 | TTFT p99 | TTFT max | chunk delay p50 | p99 | gap p50 | gap p99 | "
      "last token p50 | max active | RSS baseline KiB | RSS peak KiB | KiB/stream |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (s, t) in order:
        run = runs[(s, t)]
        r = run["r"]
        if run["kind"] != "sse":
            continue
        if r is None:
            w(f"| {s} / {t} | no result (see output below) ||||||||||||||")
            continue
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
        d = (lambda k, p: f"{r[k][p]:,}") if r["streams_ok"] else (lambda k, p: "–")
        w(f"| {s} / {t} | {r['streams_ok']:,} | {r['errors_total']:,} ({errs}) | {d('ttft_us', 'p50')} | "
          f"{d('ttft_us', 'p99')} | {d('ttft_us', 'max')} | {d('chunk_delay_us', 'p50')} | {d('chunk_delay_us', 'p99')} | "
          f"{d('gap_us', 'p50')} | {d('gap_us', 'p99')} | {d('ttlt_us', 'p50')} | {r['max_active']:,} | "
          f"{r.get('rss_baseline_kb', r['rss_idle_kb']):,} | {r['rss_peak_kb']:,} | {r['rss_per_active_stream_kb']:.1f} |")
    w("")
    settles = [(k.split("__", 2)[1:], v) for k, v in meta.items() if k.startswith("settle__") and isinstance(v, str)]
    if settles:
        w("Recovery after a measurement (the harness waits, at most 120 s, until the target answers a small "
          "chat request within 2 s before the next measurement):")
        w("")
        for (sc, t), v in settles:
            w(f"- after {sc}: {NAMES.get(t, t)}: {v}")
        w("")
    w(f"Tollgate's access log got {m('tollgate_access_log_lines')} lines over the run; its stderr "
      f"{m('tollgate_stderr_lines')} lines; nginx's error log {m('nginx_error_lines')} lines.")
    summary = m("tollgate_stderr_summary").rstrip()
    if summary:
        w("")
        w("Tollgate's stderr (`RUST_LOG=warn`), distinct messages with their counts:")
        w("")
        w("```")
        w(summary)
        w("```")
    metrics = m("tollgate_metrics")
    keep = [l for l in metrics.splitlines()
            if l.startswith(("tollgate_requests_total", "tollgate_access_log_dropped_total",
                             "tollgate_output_tokens_total", "tollgate_input_tokens_total",
                             "tollgate_attempt_failures_total", "tollgate_retries_total"))]
    if keep:
        w("")
        w("Tollgate's counters at the end of the run (`/metrics`, warm-ups and sanity requests included):")
        w("")
        w("```")
        w("\n".join(keep[:40]))
        w("```")
    w("")

    # ---------------------------------------------------------------- how
    w("## Exact commands")
    w("")
    w("The whole run: `bash load/run.sh` (environment: "
      f"DURATION={m('duration')} WARMUP={m('warmup')} STREAM_DURATION={m('stream_duration')} "
      f"NGINX_WORKERS={m('nginx_workers')} LITELLM_WORKERS={m('litellm_workers')}). Servers:")
    w("")
    w("```")
    for k in ("mock_cmd", "nginx_cmd", "tollgate_cmd", "litellm_cmd"):
        if m(k):
            w(m(k))
    w("```")
    w("")
    w(f"Request bodies: small chat {m('small_body_bytes')} bytes "
      '(`{"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello, how are you today?"}]}`); '
      f"large {m('big_body_bytes')} bytes (one system and one ~1 MiB user message). Each measurement "
      "(warm-ups use the same command with a shorter duration):")
    w("")
    w("```")
    for (s, t) in order:
        w(runs[(s, t)]["cmd"])
    w("```")
    w("")
    for k, title, lang in [("nginx_conf", "nginx configuration", "nginx"),
                           ("tollgate_conf", "Tollgate configuration", "yaml"),
                           ("litellm_conf", "LiteLLM configuration", "yaml")]:
        v = meta.get(k)
        if isinstance(v, dict):
            w(f"<details><summary>{title} (generated, <code>{v['file']}</code>)</summary>")
            w("")
            w(f"```{lang}")
            w(v["text"].rstrip())
            w("```")
            w("</details>")
            w("")
    sample = meta.get("tollgate_access_log_sample")
    if isinstance(sample, dict) and sample["text"]:
        w("<details><summary>Tollgate access log, last line</summary>")
        w("")
        w("```json")
        w(sample["text"].rstrip().splitlines()[-1])
        w("```")
        w("</details>")
        w("")
    w("<details><summary>Raw output of every measurement</summary>")
    w("")
    for (s, t) in order:
        run = runs[(s, t)]
        w(f"**{s} / {t}**")
        w("")
        w("```")
        w(run["out"].rstrip()[:4000])
        if run["err"].strip():
            w("--- stderr ---")
            w(run["err"].rstrip()[:1000])
        w("```")
        w("")
    w("</details>")
    w("")
    o[before_after_at:before_after_at] = before_after(o)
    print("\n".join(o))


def collect_bench(root):
    """Criterion's estimates under CRITERION_HOME as one JSON line (median per benchmark)."""
    out = []
    for d, _, files in os.walk(root):
        if os.path.basename(d) == "new" and "benchmark.json" in files and "estimates.json" in files:
            with open(os.path.join(d, "benchmark.json")) as f:
                b = json.load(f)
            with open(os.path.join(d, "estimates.json")) as f:
                e = json.load(f)
            n = (b.get("throughput") or {}).get("Bytes") or 0
            med = e["median"]["point_estimate"]
            out.append({"id": b["full_id"], "bytes": n, "median_ns": med, "gbps": n / med if med else 0.0})
    out.sort(key=lambda x: x["id"])
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--collect-bench":
        collect_bench(sys.argv[2])
    else:
        main()
