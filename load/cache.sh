#!/usr/bin/env bash
# The response cache's cost and gain, in one run: two Tollgates started by load/profile.sh
# (one without a cache, one with `cache: {ttl: 10m}` on its route), then wrk at concurrency
# C (default 64) against
#   nginx       the same request each time, proxied to mock-llm (the reference);
#   hit         Tollgate with the cache, the same request each time (every one a hit after
#               the first: none goes upstream);
#   miss-off    Tollgate without the cache, every request different;
#   miss-on     Tollgate with the cache, every request different (each a miss, kept);
#   miss-ctl    the control: a third Tollgate, identical to miss-off, every request different.
# It prints each figure and the ratios hit/nginx and miss-on/miss-off. Throughput on 2 cores
# shared by wrk, nginx, the mock and the gateway swings by ±20 % from round to round, more
# than the cost being measured, so the miss cost is also measured as the gateway's CPU time
# per request (user + system of its process, from /proc, over each measured run): the
# median over the rounds of miss-on / miss-off. The control says what that measurement
# resolves here: miss-ctl / miss-off compares two identical gateways, so its distance from
# 1.0 and its spread are noise, and a miss cost within them is not shown either way. The
# three miss runs of a round go back to back, in an order that rotates from round to round.
# Loopback only; every wrk run is bounded by DURATION.
# Needs the release build (cargo build --release --workspace).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-8}
C=${C:-64}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d /tmp/tollgate-cache.XXXXXX)
# shellcheck source=load/gateways.sh
. "$ROOT/load/gateways.sh"
off=$(start)
on=$(CACHE_TTL=10m start)
ctl=$(start)
nginx=$(port "$off" nginx)
tg_off=$(port "$off" tollgate)
tg_on=$(port "$on" tollgate)
tg_ctl=$(port "$ctl" tollgate)
pid_off=$(pid_of "$off")
pid_on=$(pid_of "$on")
pid_ctl=$(pid_of "$ctl")
TICKS=$(getconf CLK_TCK)
# User + system CPU ticks of process $1 (all its threads); `stime` its system ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
stime() { awk '{print $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
[ -n "$nginx" ] && [ -n "$tg_off" ] && [ -n "$tg_on" ] && [ -n "$tg_ctl" ] || {
	echo "servers did not start: $off $on $ctl" >&2
	exit 1
}
python3 -c 'import json,sys; open(sys.argv[1],"w").write(json.dumps({"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello, how are you today?"}]},separators=(",",":")))' "$WORK/same.json"
python3 -c 'import json,sys; open(sys.argv[1],"w").write(json.dumps({"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello @N@, how are you today?"}]},separators=(",",":")))' "$WORK/unique.json"
run() { # name port script body [pid]
	local url="http://127.0.0.1:$2/v1/chat/completions" r t0 t1 s0 cpu=0 sys=0
	timeout 30 wrk -t2 -c"$C" -d1s --timeout 10s -s "$ROOT/load/$3" "$url" -- "$WORK/$4" >/dev/null 2>&1 || true
	[ -n "${5:-}" ] && t0=$(ticks "$5") && s0=$(stime "$5")
	r=$(timeout $((DURATION + 20)) wrk -t2 -c"$C" -d"${DURATION}s" --timeout 10s --latency -s "$ROOT/load/$3" "$url" -- "$WORK/$4" 2>&1 | sed -n 's/^WRKRESULT //p')
	[ -n "${5:-}" ] && t1=$(ticks "$5") && cpu=$((t1 - t0)) && sys=$(($(stime "$5") - s0))
	echo "$1 $cpu $r" >>"$WORK/results"
	python3 -c 'import json,sys; r=json.loads(sys.argv[2]); cpu=int(sys.argv[4])*1e6/int(sys.argv[5])/max(r["requests"],1); print("%-9s c=%s rps=%8.0f p50=%6dus p99=%6dus status_errors=%d%s" % (sys.argv[1], sys.argv[3], r["rps"], r["latency_us"]["p50"], r["latency_us"]["p99"], r["errors"]["status"], (" gateway_cpu=%.1fus/req (system %d%%)" % (cpu, 100*int(sys.argv[6])/max(int(sys.argv[4]),1))) if cpu else ""))' "$1" "$r" "$C" "$cpu" "$TICKS" "$sys"
}
miss() { # which round
	case $1 in
	off) run miss-off "$tg_off" post-unique.lua unique.json "$pid_off" ;;
	on) run miss-on "$tg_on" post-unique.lua unique.json "$pid_on" ;;
	ctl) run miss-ctl "$tg_ctl" post-unique.lua unique.json "$pid_ctl" ;;
	esac
}
for r in $(seq "$ROUNDS"); do
	run nginx "$nginx" post.lua same.json
	run hit "$tg_on" post.lua same.json
	case $((r % 3)) in
	1) order="off on ctl" ;;
	2) order="on ctl off" ;;
	0) order="ctl off on" ;;
	esac
	for m in $order; do miss "$m"; done
done
python3 - "$WORK/results" "$TICKS" <<'PY'
import json, statistics, sys
best, cpu = {}, {}
ticks = int(sys.argv[2])
for line in open(sys.argv[1]):
    name, c, r = line.split(" ", 2)
    r = json.loads(r)
    best[name] = max(best.get(name, 0), r["rps"])
    if name.startswith("miss-"):
        cpu.setdefault(name, []).append(int(c) * 1e6 / ticks / max(r["requests"], 1))
print("hit / nginx         = %.2f (target >= 1.0)" % (best["hit"] / best["nginx"]))
print("miss-on / miss-off  = %.2f throughput, best round of each" % (best["miss-on"] / best["miss-off"]))
def ratios(a, b):
    return [x / y for x, y in zip(cpu.get(a, []), cpu.get(b, [])) if x and y]
for label, a, what in (("miss cost", "miss-on", "target <= 1.05"),
                       ("control", "miss-ctl", "two identical gateways: noise")):
    rs = ratios(a, "miss-off")
    if rs:
        print("%-9s gateway CPU per request, %s / miss-off = %.3f (median of %d rounds: %s; %s)"
              % (label, a, statistics.median(rs), len(rs), ", ".join("%.3f" % x for x in rs), what))
both = [on / ((off + ctl) / 2) for on, off, ctl in zip(cpu.get("miss-on", []), cpu.get("miss-off", []), cpu.get("miss-ctl", []))]
if both:
    print("miss cost against both cache-off gateways (their mean each round) = %.3f (median of %d rounds: %s)"
          % (statistics.median(both), len(both), ", ".join("%.3f" % x for x in both)))
PY
echo "load average: $(cat /proc/loadavg)"
