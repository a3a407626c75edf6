#!/usr/bin/env bash
# What content policies cost, in one run: two Tollgates started by load/profile.sh, one
# without policies, one whose route masks PII (`pii: {mode: mask}`: the request scanned, the
# answer's placeholders restored as it streams) and has input and output deny rules (the
# stream checked over a sliding window), then
#   streams   load/sse-client at CONC (default 200) concurrent streams of 64 chunks 20 ms apart
#             (`--held 1`: every upstream content chunk counted, its text possibly held back)
#             against each: the chunk delay (arrival against the chunk's nominal time) p50 and
#             p99; on minus off is what the policies add per chunk (target: p99 < 1 ms);
#   whole     wrk at c=64, non-streaming, against nginx and both Tollgates: the ratios
#             off/nginx (a route without policies must not get slower) and on/off.
# Loopback only; every run bounded by DURATION. Needs the release build
# (cargo build --release --workspace: tollgate, mock-llm and tollgate-sse-load).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SSE=$TARGET/release/tollgate-sse-load
DURATION=${DURATION:-8}
CONC=${CONC:-200}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d /tmp/tollgate-policies.XXXXXX)
start() {
	local out
	out=$(KEEP=1 bash "$ROOT/load/profile.sh" 2>&1) || true
	echo "$out" | sed -n 's/servers left running: //p' >>"$WORK/pids"
	echo "$out"
}
trap 'for p in $(cat "$WORK/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done' EXIT
off=$(start)
on=$(POLICIES=1 start)
port() { echo "$1" | sed -n "s/.* $2=\([0-9]*\).*/\1/p"; }
nginx=$(port "$off" nginx)
tg_off=$(port "$off" tollgate)
tg_on=$(port "$on" tollgate)
[ -n "$nginx" ] && [ -n "$tg_off" ] && [ -n "$tg_on" ] || {
	echo "servers did not start: $off $on" >&2
	exit 1
}
python3 -c 'import json,sys; open(sys.argv[1],"w").write(json.dumps({"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello, my email is ada@example.com, how are you today?"}]},separators=(",",":")))' "$WORK/whole.json"
streams() { # name port
	local common=(--model mock-gpt-4o --header "x-mock-chunks: 64" --header "x-mock-chunk-delay-ms: 20"
		--chunks 64 --pace-ms 20 --concurrency "$CONC" --timeout 20 --ramp-ms 1000 --held 1)
	timeout 60 "$SSE" --addr "127.0.0.1:$2" "${common[@]}" --duration 2 --label warm >/dev/null 2>&1 || true
	timeout $((DURATION + 60)) "$SSE" --addr "127.0.0.1:$2" "${common[@]}" --duration "$DURATION" --label "$1" 2>/dev/null |
		tee -a "$WORK/streams" |
		python3 -c 'import sys, json
d = json.loads(sys.stdin.read())
print("%-11s streams=%d errors=%d chunk_delay_us p50=%d p99=%d" % (d["label"], d["streams_ok"], d["errors_total"], d["chunk_delay_us"]["p50"], d["chunk_delay_us"]["p99"]))'
}
whole() { # name port
	local url="http://127.0.0.1:$2/v1/chat/completions" r
	timeout 30 wrk -t2 -c64 -d1s --timeout 10s -s "$ROOT/load/post.lua" "$url" -- "$WORK/whole.json" >/dev/null 2>&1 || true
	r=$(timeout $((DURATION + 20)) wrk -t2 -c64 -d"${DURATION}s" --timeout 10s --latency -s "$ROOT/load/post.lua" "$url" -- "$WORK/whole.json" 2>&1 | sed -n 's/^WRKRESULT //p')
	echo "$1 $r" >>"$WORK/whole"
	python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("%-11s c=64 rps=%8.0f p50=%6dus p99=%6dus status_errors=%d" % (sys.argv[1], r["rps"], r["latency_us"]["p50"], r["latency_us"]["p99"], r["errors"]["status"]))' "$1" "$r"
}
for _ in $(seq "$ROUNDS"); do
	streams stream-off "$tg_off"
	streams stream-on "$tg_on"
	whole nginx "$nginx"
	whole whole-off "$tg_off"
	whole whole-on "$tg_on"
done
python3 - "$WORK/streams" "$WORK/whole" <<'PY'
import json, sys
best = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d["label"] in ("stream-off", "stream-on"):
        p99 = d["chunk_delay_us"]["p99"]
        best[d["label"]] = min(best.get(d["label"], p99), p99)
rps = {}
for line in open(sys.argv[2]):
    name, _, r = line.partition(" ")
    rps[name] = max(rps.get(name, 0), json.loads(r)["rps"])
print("chunk delay p99 added by the policies = %d us (target < 1000; best round each)" % (best["stream-on"] - best["stream-off"]))
print("whole-off / nginx = %.2f   whole-on / whole-off = %.2f" % (rps["whole-off"] / rps["nginx"], rps["whole-on"] / rps["whole-off"]))
PY
echo "load average: $(cat /proc/loadavg)"
