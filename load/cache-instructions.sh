#!/usr/bin/env bash
# What enabling the response cache costs a miss, in instructions: the measurement this
# machine can resolve. (load/cache.sh measures throughput and CPU time, whose round-to-round
# noise here is larger than the cost.) Three Tollgates run under callgrind (valgrind's
# instruction counter: the same binary and requests give the same count whatever else the
# machine is doing): one without a cache, and two with `cache: {ttl: 10m}` on the route:
#   full  memory of 256 KiB (FULL_BYTES), full during the measurement: while it is full, an
#         answer never asked for before is not kept (the doorkeeper, src/cache/door.rs;
#         moka's admission would refuse it), so a miss costs the lookup and the key;
#   room  memory of 64 MiB (ROOM_BYTES, the default), never full here: every answer is
#         kept (moka inserts it), the costlier case.
# Each is warmed with WARM requests, then its counters are zeroed and it is sent N
# requests, every one different (so each is a miss). It prints the instructions per
# request of each gateway (all its threads: the request's own work and whatever
# housekeeping it causes) and the ratios against the gateway without a cache for each of
# ROUNDS rounds (default 3, the gateways alternating), the median ratios, and, with TOP=K,
# the K functions of the cache that cost the most in `room` (inclusive, the first round).
#
# PAD=B gives every request a system prompt of about B bytes (default 0: a one-line question
# of about 110 bytes), to see how the cost grows with the request: the key reads and hashes
# the whole body. The prompt is the same in every request (as an application's is), so the
# key's memo of long strings' digests (src/cache/long.rs) knows it; UNIQUE=1 makes it
# differ from request to request (the memo's worst case).
#
# Loopback only; the client sends exactly WARM + N requests to each gateway, one at a time.
# Needs the release build (cargo build --release --workspace) and valgrind.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-2000}
WARM=${WARM:-600}
TOP=${TOP:-0}
ROUNDS=${ROUNDS:-3}
PAD=${PAD:-0}
UNIQUE=${UNIQUE:-0}
WORK=$(mktemp -d /tmp/tollgate-cachei.XXXXXX)
command -v valgrind >/dev/null || {
	echo "needs valgrind (apt-get install valgrind)" >&2
	exit 1
}
# shellcheck source=load/gateways.sh
. "$ROOT/load/gateways.sh"
# Under callgrind, instrumented only when measuring; its output named after the gateway.
under_callgrind() {
	READY_SECONDS=120 TOLLGATE_WRAP="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$WORK/$1.%p" start
}
off=$(under_callgrind off)
full=$(CACHE_TTL=10m CACHE_MAX_BYTES=${FULL_BYTES:-262144} under_callgrind full)
room=$(CACHE_TTL=10m CACHE_MAX_BYTES=${ROOM_BYTES:-67108864} under_callgrind room)
[ -n "$(port "$off" tollgate)" ] && [ -n "$(port "$full" tollgate)" ] && [ -n "$(port "$room" tollgate)" ] || {
	echo "servers did not start: $off $full $room" >&2
	exit 1
}
# send PORT TAG COUNT: COUNT different requests, one at a time, each must be a 200.
send() {
	python3 - "$1" "$2" "$3" "$PAD" "$UNIQUE" <<'PY'
import http.client, json, sys
port, tag, n, pad, unique = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
line = "You are a careful assistant for an online shop; answer briefly. "
system = [{"role": "system", "content": (line * (pad // len(line) + 1))[:pad]}] if pad else []
for i in range(n):
    prompt = system
    if unique and system:
        prompt = [{"role": "system", "content": "%s-%d. %s" % (tag, i, system[0]["content"])}]
    body = json.dumps({"model": "mock-gpt-4o", "messages": prompt + [
        {"role": "user", "content": "Hello %s-%d, how are you today?" % (tag, i)}]},
        separators=(",", ":"))
    c.request("POST", "/v1/chat/completions", body,
              {"Content-Type": "application/json", "Authorization": "Bearer sk-load-test"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit("request %d answered %d" % (i, r.status))
PY
}
# measure NAME ROUND: (warm on the first round), zero, N requests, dump; prints the
# instructions counted.
measure() {
	local name=$1 round=$2 p pid
	p=$(port "${!name}" tollgate)
	pid=$(pid_of "${!name}")
	[ "$round" -gt 1 ] || send "$p" "warm-$name-$$" "$WARM"
	# The usage query flushes the analytics thread's pending rows first: the window then
	# starts with nothing pending, and the first flush's one-time work (preparing its SQL,
	# about 0.9 M instructions) falls outside it, whichever gateway's timer it would have
	# landed in.
	curl -fsS -o /dev/null -H "Authorization: Bearer load-admin-token" \
		"http://127.0.0.1:$(port "${!name}" admin)/admin/api/v1/usage"
	callgrind_control -i on "$pid" >/dev/null 2>&1
	callgrind_control -z "$pid" >/dev/null 2>&1
	send "$p" "run$round-$name-$$" "$N"
	callgrind_control -d "$name" "$pid" >/dev/null 2>&1
	callgrind_control -i off "$pid" >/dev/null 2>&1
	# The totals of this round's dump (the newest file; the threads are summed).
	awk '/^totals:/ {s += $2} END {print s}' "$(ls -t "$WORK/$name.$pid".* | head -n 1)"
}
# Rounds alternate the gateways; the verdict is the median of the rounds' ratios (the
# time-driven work of the gateways' own timers and background tasks moves a round's count
# by a few hundred instructions a request).
counts=()
for round in $(seq 1 "$ROUNDS"); do
	counts+=("$(measure off "$round")" "$(measure full "$round")" "$(measure room "$round")")
done
python3 - "$N" "${counts[@]}" <<'PY'
import statistics, sys
n, counts = int(sys.argv[1]), [int(c) for c in sys.argv[2:]]
full, room = [], []
for r, i in enumerate(range(0, len(counts), 3), 1):
    off, f, m = counts[i:i + 3]
    full.append(f / off)
    room.append(m / off)
    print("round %d: instructions per request: cache off %.0f; cache full %.0f (%.3f); cache with room %.0f (%.3f)"
          % (r, off / n, f / n, f / off, m / n, m / off))
worst = max(statistics.median(full), statistics.median(room))
print("miss cost: cache full %.3f, cache with room %.3f (on / off, the medians of %d rounds); %s"
      % (statistics.median(full), statistics.median(room), len(full),
         "within the 5 % target" if worst <= 1.05 else "above the 5 % target"))
PY
if [ "$TOP" -gt 0 ]; then
	f=$(ls -tr "$WORK"/room.*.* | head -n 1)
	echo "the cache's costliest functions with room (inclusive, per request):"
	callgrind_annotate --inclusive=yes "$f" 2>/dev/null |
		awk -v n="$N" '/cache::|moka::/ { gsub(",", "", $1); printf "%10.0f  %s\n", $1 / n, $0 }' |
		cut -c1-220 | head -n "$TOP"
fi
