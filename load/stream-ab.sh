#!/usr/bin/env bash
# Streams through one Tollgate build, for A/B work on memory and time to first token: starts
# the servers of load/profile.sh (KEEP=1), then runs load/sse-client straight to mock-llm and
# through Tollgate (3 s warm-up, then 8 s of CONCURRENCY streams of 64 chunks 20 ms apart, as
# load/run.sh's scenario b) and prints one line each: streams, errors, TTFT, chunk delay and
# RSS per active stream (baseline taken before the warm-up). Loopback only; bounded in time.
#   bash load/stream-ab.sh TOLLGATE_BIN [CONCURRENCY]       (UPSTREAM_HTTP2=true: provider over h2)
# Needs the sse-client built by load/run.sh (target/release/tollgate-sse-load).
set -euo pipefail
BIN=$1
CONC=${2:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TOLLGATE_BIN=$BIN . "$ROOT/load/keep-servers.sh"
SSE=target/release/tollgate-sse-load
common=(--model mock-gpt-4o --header "x-mock-chunks: 64" --header "x-mock-chunk-delay-ms: 20"
	--chunks 64 --pace-ms 20 --concurrency "$CONC" --timeout 20 --ramp-ms 1000)
for target in direct tollgate; do
	p=$mport
	rss=()
	if [ "$target" = tollgate ]; then
		p=$port
		rss=(--rss-pid "$pid" --rss-baseline-kb "$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")")
	fi
	timeout 60 "$SSE" --addr "127.0.0.1:$p" "${common[@]}" --duration 3 --label warm >/dev/null 2>&1 || true
	sleep 1
	timeout 80 "$SSE" --addr "127.0.0.1:$p" "${common[@]}" --duration 8 "${rss[@]}" --label "$target" 2>/dev/null |
		python3 -c 'import sys, json
d = json.loads(sys.stdin.read())
print(d["label"], "streams", d["streams_ok"], "errors", d["errors_total"],
      "ttft_us p50/p99", d["ttft_us"]["p50"], d["ttft_us"]["p99"],
      "chunk_delay_us p50", d["chunk_delay_us"]["p50"],
      "rss_per_active_stream_kb", d.get("rss_per_active_stream_kb"))'
done
