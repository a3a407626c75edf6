#!/usr/bin/env bash
# Interleaved A/B of two Tollgate binaries on scenario a of load/run.sh (small chat, consumer
# auth, a rate limit, model mapping, access log to a file): one mock-llm, both gateways up at
# once, wrk rounds alternating A and B at c=64 and c=1, so background load hits both alike.
# Loopback only; bounded in time (ROUNDS x 4 runs of DUR seconds).
#   bash load/ab-chat.sh TOLLGATE_A TOLLGATE_B        (ROUNDS=4, DUR=5)
# EXTRA_A / EXTRA_B: YAML appended to that side's config, to compare one binary with a
# setting on and off, e.g. EXTRA_B='analytics: {enabled: false}'.
# Prints one line per round and scenario: req/s, p50 and p99 latency (µs), non-2xx count.
# Needs wrk and target/release/mock-llm (bash load/run.sh installs and builds them).
set -euo pipefail
A=$1
B=$2
ROUNDS=${ROUNDS:-4}
DUR=${DUR:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/tollgate-ab.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$ROOT/target/release/mock-llm" --listen 127.0.0.1:0 >"$W/mock.out" 2>"$W/mock.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$W/mock.out" && break; sleep 0.1; done
MOCK=$(grep -o "listening on [0-9.:]*" "$W/mock.out" | awk '{print $3}')
printf '{"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello"}]}' >"$W/small.json"
export TOLLGATE_ADMIN_TOKEN=ab LOAD_CONSUMER_KEY=sk-load-test MOCK_KEY_1=k1 MOCK_KEY_2=k2
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # DIR BIN EXTRA -> prints "PID PORT"
	local d=$W/$1 port
	mkdir -p "$d"
	port=$(free_port)
	cat >"$d/t.yaml" <<YAML
server: {threads: 2, pid_file: $d/t.pid, upgrade_sock: $d/u.sock, upstream_keepalive_pool_size: 2048}
listeners: {proxy: [{address: "127.0.0.1:$port"}]}
access_log: {path: $d/access.log}
consumers: [{name: loadtest, credentials: ["\${LOAD_CONSUMER_KEY}"]}]
auth: {sources: [bearer]}
rate_limits:
  - {name: budget, key: consumer, values: ["*"], window: minute, tokens: 1000000000000, requests: 1000000000}
providers:
  - name: mock
    type: openai-compatible
    base_url: http://$MOCK/v1
    api_keys: [{name: primary, key: "\${MOCK_KEY_1}"}, {name: secondary, key: "\${MOCK_KEY_2}"}]
    model_mapping: {mock-gpt-4o: gpt-4o-mock}
routes:
  - name: default
    auth: {required: true, allow: [loadtest]}
    models: [{model: "mock-*", targets: [{provider: mock}]}]
$3
YAML
	RUST_LOG=warn "$2" -c "$d/t.yaml" >"$d/out" 2>"$d/err" &
	echo "$! $port"
}
read -r apid APORT < <(start a "$A" "${EXTRA_A:-}")
read -r bpid BPORT < <(start b "$B" "${EXTRA_B:-}")
pids+=("$apid" "$bpid")
for p in $APORT $BPORT; do
	for _ in $(seq 100); do
		curl -sf -o /dev/null "http://127.0.0.1:$p/v1/models" -H 'Authorization: Bearer sk-load-test' && break
		sleep 0.1
	done
done
run() { # THREADS CONNS PORT
	wrk -t"$1" -c"$2" -d"${DUR}s" --timeout 10s --latency -s "$ROOT/load/post.lua" \
		"http://127.0.0.1:$3/v1/chat/completions" -- "$W/small.json" | sed -n 's/^WRKRESULT //p' |
		python3 -c 'import sys, json; d = json.load(sys.stdin); l = d["latency_us"]
print("%d req/s p50 %d p99 %d non-2xx %d" % (d["rps"], l["p50"], l["p99"], d["errors"]["status"]))'
}
run 2 64 "$APORT" >/dev/null
run 2 64 "$BPORT" >/dev/null
for r in $(seq "$ROUNDS"); do
	echo "round $r c=64  A: $(run 2 64 "$APORT")  |  B: $(run 2 64 "$BPORT")"
	echo "round $r c=1   A: $(run 1 1 "$APORT")  |  B: $(run 1 1 "$BPORT")"
done
