#!/usr/bin/env bash
# Quick A/B harness for the request hot path (scenario a of load/run.sh only): starts mock-llm,
# nginx (1 worker) and Tollgate with the same configurations as load/run.sh, then runs wrk at
# concurrency 1 and 64 against direct, nginx and Tollgate, ROUNDS times in alternation, and
# prints one line per measurement. Loopback only; every wrk run is bounded by DURATION.
#
#   CARGO_TARGET_DIR=... bash load/profile.sh            # uses $CARGO_TARGET_DIR/release
#   TOLLGATE_BIN=/path/to/tollgate bash load/profile.sh  # another build (A/B)
#   KEEP=1 ...   leave the servers running (prints their ports) for perf/callgrind;
#   TOLLGATE_WRAP="valgrind ..." runs the gateway under it, READY_SECONDS (default 30) how
#   long to wait for it to listen.
#   WORK_STEALING=true|false, UPSTREAM_HTTP2=true: those settings in Tollgate's config.
#   CACHE_TTL=10m: the route caches answers (load/cache.sh); CACHE_MAX_BYTES (and
#   CACHE_MAX_ENTRY_BYTES, default 1 MiB): the memory it may use.
#   POLICIES=1: the route masks PII and has input and output deny rules (load/policies.sh).
#
# It does not write load/RESULTS.md (that is load/run.sh's job).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE_BIN=${TOLLGATE_BIN:-$TARGET/release/tollgate}
MOCK_BIN=${MOCK_BIN:-$TARGET/release/mock-llm}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-2}
TARGETS=${TARGETS:-"direct nginx tollgate"}
CONCS=${CONCS:-"1 64"}
WORK=$(mktemp -d /tmp/tollgate-profile.XXXXXX)
PIDS=()
KEPT=0
cleanup() {
	[ "$KEPT" = 1 ] && return
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	sleep 0.5
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
	for _ in $(seq $(($2 * 10))); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
ulimit -n 65536 2>/dev/null || true
python3 -c 'import json,sys; open(sys.argv[1],"w").write(json.dumps({"model":"mock-gpt-4o","messages":[{"role":"user","content":"Hello, how are you today?"}]},separators=(",",":")))' "$WORK/small.json"

"$MOCK_BIN" --listen 127.0.0.1:0 >"$WORK/mock.out" 2>"$WORK/mock.err" &
PIDS+=($!)
for _ in $(seq 100); do
	MOCK_ADDR=$(sed -n 's/^mock-llm listening on //p' "$WORK/mock.out" | head -n 1)
	[ -n "$MOCK_ADDR" ] && break
	sleep 0.1
done
MOCK_PORT=${MOCK_ADDR##*:}

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
user root;
daemon off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 10000; }
http {
  access_log $WORK/nginx/access.log;
  client_body_temp_path $WORK/nginx/client_body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  client_max_body_size 32m;
  client_body_buffer_size 2m;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 2048; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >/dev/null 2>&1 &
PIDS+=($!)

# POLICIES=1: the route's PII masking and deny rules (its braces kept out of `${…:+…}`).
POLICY_YAML='    pii: {mode: mask}
    deny:
      input: {keywords: ["forbidden-word", "违禁词"], regex: ["(?i)ignore (all|previous) instructions"]}
      output: {keywords: ["forbidden-word", "违禁词"], regex: ["(?i)secret plan"]}
'
TG_PORT=$(free_port)
TG_ADMIN_PORT=$(free_port)
mkdir -p "$WORK/tollgate"
cat >"$WORK/tollgate/tollgate.yaml" <<EOF
server:
  threads: ${TOLLGATE_THREADS:-2}
${WORK_STEALING:+  work_stealing: $WORK_STEALING
}  pid_file: $WORK/tollgate/tollgate.pid
  upgrade_sock: $WORK/tollgate/upgrade.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  upstream_keepalive_pool_size: 2048
listeners:
  proxy:
    - address: 127.0.0.1:$TG_PORT
  admin:
    address: 127.0.0.1:$TG_ADMIN_PORT
    token: "\${TOLLGATE_ADMIN_TOKEN}"
limits:
  max_body_bytes: 33554432
${CACHE_MAX_BYTES:+cache:
  max_bytes: $CACHE_MAX_BYTES
  max_entry_bytes: ${CACHE_MAX_ENTRY_BYTES:-1048576}
}access_log:
  path: $WORK/tollgate/access.log
  buffer_lines: 65536
consumers:
  - name: loadtest
    credentials: ["\${LOAD_CONSUMER_KEY}"]
auth:
  sources: [bearer]
rate_limits:
  - name: loadtest-budget
    key: consumer
    values: ["*"]
    window: minute
    tokens: 1000000000000
    requests: 1000000000
providers:
  - name: mock
    type: openai-compatible
    base_url: http://127.0.0.1:$MOCK_PORT/v1
    api_keys:
      - {name: primary, key: "\${MOCK_KEY_1}"}
      - {name: secondary, key: "\${MOCK_KEY_2}"}
    model_mapping:
      mock-gpt-4o: gpt-4o-mock
    models: [mock-gpt-4o]
    timeouts: {connect: 5s, read: 60s, write: 60s, idle: 90s}
${UPSTREAM_HTTP2:+    http2: $UPSTREAM_HTTP2
}routes:
  - name: default
    path_prefix: /v1
    forward_headers: ["x-mock-*"]   # mock-llm pacing headers from the load client
    auth: {required: true, allow: [loadtest]}
    models:
      - model: "mock-*"
        targets: [{provider: mock}]
    retry: {attempts: 2, per_target: 2, deadline: 30s}
${CACHE_TTL:+    cache:
      ttl: $CACHE_TTL
}${POLICIES:+$POLICY_YAML}
EOF
export TOLLGATE_ADMIN_TOKEN=load-admin-token MOCK_KEY_1=sk-mock-primary MOCK_KEY_2=sk-mock-secondary LOAD_CONSUMER_KEY=sk-load-test
RUST_LOG=warn ${TOLLGATE_WRAP:-} "$TOLLGATE_BIN" -c "$WORK/tollgate/tollgate.yaml" >"$WORK/tollgate/stdout.log" 2>"$WORK/tollgate/stderr.log" &
TG_PID=$!
PIDS+=($TG_PID)
wait_port "$NGINX_PORT" 10
wait_port "$TG_PORT" "${READY_SECONDS:-30}"
echo "work=$WORK mock=$MOCK_PORT nginx=$NGINX_PORT tollgate=$TG_PORT (pid $TG_PID) admin=$TG_ADMIN_PORT"
if [ "${KEEP:-0}" = 1 ]; then
	echo "servers left running: ${PIDS[*]}"
	KEPT=1
	exit 0
fi
port_of() { case $1 in direct) echo "$MOCK_PORT" ;; nginx) echo "$NGINX_PORT" ;; tollgate) echo "$TG_PORT" ;; esac }
for round in $(seq "$ROUNDS"); do
	for c in $CONCS; do
		t_threads=1
		[ "$c" -gt 1 ] && t_threads=2
		for t in $TARGETS; do
			url="http://127.0.0.1:$(port_of "$t")/v1/chat/completions"
			timeout $((WARMUP + 20)) wrk -t$t_threads -c"$c" -d"${WARMUP}s" --timeout 10s -s "$ROOT/load/post.lua" "$url" -- "$WORK/small.json" >/dev/null 2>&1 || true
			r=$(timeout $((DURATION + 20)) wrk -t$t_threads -c"$c" -d"${DURATION}s" --timeout 10s --latency -s "$ROOT/load/post.lua" "$url" -- "$WORK/small.json" 2>&1 | sed -n 's/^WRKRESULT //p')
			python3 -c 'import json,sys; r=json.loads(sys.argv[4]); l=r["latency_us"]; e=sum(r["errors"].values()); print("round=%s c=%2s %-8s rps=%8.0f p50=%6d p99=%6d errors=%d" % (sys.argv[1], sys.argv[2], sys.argv[3], r["rps"], l["p50"], l["p99"], e))' "$round" "$c" "$t" "$r"
		done
	done
done
echo "load average: $(cat /proc/loadavg)"
echo "tollgate stderr:"
sed -E 's/^\[[^ ]+ /[/' "$WORK/tollgate/stderr.log" | cut -c1-200 | sort | uniq -c | sort -rn | head -n 5
