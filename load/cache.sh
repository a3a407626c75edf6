#!/usr/bin/env bash
# The response cache's cost and gain, in one run: two Tollgates started by load/profile.sh
# (one without a cache, one with `cache: {ttl: 10m}` on its route), then wrk at concurrency
# C (default 64) against
#   nginx       the same request each time, proxied to mock-llm (the reference);
#   hit         Tollgate with the cache, the same request each time (every one a hit after
#               the first: none goes upstream);
#   miss-off    Tollgate without the cache, every request different;
#   miss-on     Tollgate with the cache, every request different (each a miss, kept).
# It prints each figure and the ratios hit/nginx and miss-on/miss-off. Loopback only; every
# wrk run is bounded by DURATION. Needs the release build (cargo build --release --workspace).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-8}
C=${C:-64}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d /tmp/tollgate-cache.XXXXXX)
start() {
	local out
	out=$(KEEP=1 bash "$ROOT/load/profile.sh" 2>&1) || true
	echo "$out" | sed -n 's/servers left running: //p' >>"$WORK/pids"
	echo "$out"
}
trap 'for p in $(cat "$WORK/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done' EXIT
off=$(start)
on=$(CACHE_TTL=10m start)
port() { echo "$1" | sed -n "s/.* $2=\([0-9]*\).*/\1/p"; }
nginx=$(port "$off" nginx)
tg_off=$(port "$off" tollgate)
tg_on=$(port "$on" tollgate)
[ -n "$nginx" ] && [ -n "$tg_off" ] && [ -n "$tg_on" ] || {
	echo "servers did not start: $off $on" >&2
	exit 1
}
python3 -c 'import json,sys; open(sys.argv[1],"w").write(json.dumps({"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello, how are you today?"}]},separators=(",",":")))' "$WORK/same.json"
python3 -c 'import json,sys; open(sys.argv[1],"w").write(json.dumps({"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello @N@, how are you today?"}]},separators=(",",":")))' "$WORK/unique.json"
run() { # name port script body
	local url="http://127.0.0.1:$2/v1/chat/completions" r
	timeout 30 wrk -t2 -c"$C" -d1s --timeout 10s -s "$ROOT/load/$3" "$url" -- "$WORK/$4" >/dev/null 2>&1 || true
	r=$(timeout $((DURATION + 20)) wrk -t2 -c"$C" -d"${DURATION}s" --timeout 10s --latency -s "$ROOT/load/$3" "$url" -- "$WORK/$4" 2>&1 | sed -n 's/^WRKRESULT //p')
	echo "$1 $r" >>"$WORK/results"
	python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("%-9s c=%s rps=%8.0f p50=%6dus p99=%6dus status_errors=%d" % (sys.argv[1], sys.argv[3], r["rps"], r["latency_us"]["p50"], r["latency_us"]["p99"], r["errors"]["status"]))' "$1" "$r" "$C"
}
for _ in $(seq "$ROUNDS"); do
	run nginx "$nginx" post.lua same.json
	run hit "$tg_on" post.lua same.json
	run miss-off "$tg_off" post-unique.lua unique.json
	run miss-on "$tg_on" post-unique.lua unique.json
done
python3 - "$WORK/results" <<'PY'
import json, sys
best = {}
for line in open(sys.argv[1]):
    name, _, r = line.partition(" ")
    rps = json.loads(r)["rps"]
    best[name] = max(best.get(name, 0), rps)
print("hit / nginx         = %.2f (target >= 1.0)" % (best["hit"] / best["nginx"]))
print("miss-on / miss-off  = %.2f (target >= 0.95)" % (best["miss-on"] / best["miss-off"]))
PY
echo "load average: $(cat /proc/loadavg)"
