#!/usr/bin/env bash
# Per-request cost of one Tollgate build, robust to a busy machine: starts the servers of
# load/profile.sh (KEEP=1), runs wrk for 6 s under `perf stat -p`, and divides user and kernel
# instructions, CPU time and context switches by the requests served (access-log lines written
# meanwhile); also counts Pingora's "failed to acquire reusable stream" log lines.
#   bash load/per-request.sh TOLLGATE_BIN [WORK_STEALING(true|false|'')] [CONCURRENCY]
# MOCK_BIN defaults as in load/profile.sh. Loopback only; bounded in time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$1
WS=${2:-}
C=${3:-1}
T=1
[ "$C" -gt 1 ] && T=2
TOLLGATE_BIN=$BIN WORK_STEALING=$WS . "$ROOT/load/keep-servers.sh"
url="http://127.0.0.1:$port/v1/chat/completions"
timeout 10 wrk -t$T -c"$C" -d2s -s "$ROOT/load/post.lua" "$url" -- "$work/small.json" >/dev/null 2>&1 || true
sleep 0.5
before=$(wc -l <"$work/tollgate/access.log")
perf stat -x, -e instructions:u,instructions:k,task-clock,context-switches -p "$pid" -o "$work/pstat.txt" -- \
	timeout 20 wrk -t$T -c"$C" -d6s -s "$ROOT/load/post.lua" "$url" -- "$work/small.json" >/dev/null 2>&1
sleep 0.5
after=$(wc -l <"$work/tollgate/access.log")
errs=$(grep -c "reusable" "$work/tollgate/stderr.log" || true)
python3 - "$((after - before))" "$errs" "$BIN" "${WS:-default}" "$C" "$work/pstat.txt" <<'PY'
import sys
n, errs, binary, ws, c, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
vals = {}
for line in open(path):
    p = line.strip().split(",")
    if len(p) > 3:
        try:
            vals[p[2]] = float(p[0])
        except ValueError:
            pass
g = lambda k: vals.get(k, 0.0)
print(f"{binary} ws={ws} c={c} requests={n} user-instr/req={g('instructions:u')/n:.0f} "
      f"kernel-instr/req={g('instructions:k')/n:.0f} cpu-us/req={g('task-clock')*1000/n:.1f} "
      f"ctxsw/req={g('context-switches')/n:.2f} reusable-stream-errors={errs}")
PY
