#!/usr/bin/env bash
# Tollgate load comparison: the client straight to mock-llm (the floor), nginx (plain reverse
# proxy), Tollgate, and the LiteLLM proxy, all in front of the same mock-llm, all on loopback.
# Builds release binaries, starts every server on ports chosen at run time, runs the scenarios
# of load/README.md with wrk and load/sse-client, writes load/RESULTS.md from what it measured,
# and stops everything it started. Every measurement is bounded in time (wrk -d, the SSE
# client's own deadline, and `timeout` around each command).
#
#   bash load/run.sh
#
# Knobs (environment): DURATION (s per wrk measurement, 10), WARMUP (s, 2), STREAM_DURATION
# (s of new streams per streaming measurement, 8), STREAM_LEVELS ("200 2000"), NGINX_WORKERS (1),
# LITELLM_WORKERS (2), SKIP_LITELLM=1, RESULTS (output file, load/RESULTS.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD="$ROOT/load"
cd "$ROOT"

LITELLM_VERSION=1.102.4 # pinned; never 1.107.0 (compromised release)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
STREAM_DURATION=${STREAM_DURATION:-8}
STREAM_LEVELS=${STREAM_LEVELS:-"200 2000"}
STREAM_CHUNKS=64
STREAM_PACE_MS=20
NGINX_WORKERS=${NGINX_WORKERS:-1}
LITELLM_WORKERS=${LITELLM_WORKERS:-2}
TOLLGATE_THREADS=2
RESULTS=${RESULTS:-$LOAD/RESULTS.md}

WORK=$(mktemp -d /tmp/tollgate-load.XXXXXX)
RUNS="$WORK/runs"
mkdir -p "$RUNS"
: >"$RUNS/index"
META="$WORK/meta.tsv"
: >"$META"
T_START=$(date +%s)

log() { printf '[load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
meta_file() { printf '%s\t@%s\n' "$1" "$2" >>"$META"; }

PIDS=()
LL_PGID=""
cleanup() {
	local pid
	# LiteLLM runs in its own process group (gunicorn master + workers): stop the whole group.
	[ -n "$LL_PGID" ] && kill -TERM -- "-$LL_PGID" 2>/dev/null || true
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	[ -n "$LL_PGID" ] && kill -KILL -- "-$LL_PGID" 2>/dev/null || true
	LL_PGID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Wait (bounded) until a TCP port accepts connections.
wait_port() {
	local port=$1 secs=$2 i
	for i in $(seq $((secs * 10))); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

meta load_start "$(cat /proc/loadavg)"
meta date_start "$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# ---------------------------------------------------------------- dependencies
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
	log "installing nginx and wrk from Debian"
	apt-get install -y nginx wrk >/dev/null 2>&1 || {
		apt-get update >/dev/null && apt-get install -y nginx wrk >/dev/null
	}
fi
# Debian's package starts a system nginx on :80; it is not used here (ours has its own config).

LITELLM_SKIP=""
if [ "${SKIP_LITELLM:-0}" = 1 ]; then
	LITELLM_SKIP="SKIP_LITELLM=1 was set for this run"
elif [ "$(load/.venv/bin/python -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" != "$LITELLM_VERSION" ]; then
	log "installing litellm[proxy]==$LITELLM_VERSION into load/.venv (several minutes the first time)"
	if ! { python3 -m venv load/.venv && timeout 1200 load/.venv/bin/pip install -q "litellm[proxy]==$LITELLM_VERSION"; } >"$WORK/litellm-install.log" 2>&1; then
		LITELLM_SKIP="pip install litellm[proxy]==$LITELLM_VERSION failed: $(tail -n 3 "$WORK/litellm-install.log" | tr '\n' ' ' | cut -c1-400)"
	fi
fi

# ---------------------------------------------------------------- build
log "cargo build --release (the first build takes several minutes)"
cargo build --release --workspace --bins >"$WORK/build.log" 2>&1 || {
	tail -n 30 "$WORK/build.log" >&2
	exit 1
}
if [ "${BENCH:-1}" = 1 ]; then
	# Compiled now (the bench profile rebuilds the library with dev-dependency features), run
	# after the measurements with the servers stopped.
	cargo bench --bench hot_path --no-run >"$WORK/build-bench.log" 2>&1 || {
		tail -n 30 "$WORK/build-bench.log" >&2
		exit 1
	}
fi
meta build_s "$(($(date +%s) - T_START))"
T_SERVERS=$(date +%s)
TOLLGATE_BIN="$ROOT/target/release/tollgate"
MOCK_BIN="$ROOT/target/release/mock-llm"
SSE_BIN="$ROOT/target/release/tollgate-sse-load"

# ---------------------------------------------------------------- machine facts
meta nproc "$(nproc)"
meta cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta cpu_mhz "$(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta mem_total "$(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}')"
meta kernel "$(uname -srm)"
meta os "$(. /etc/os-release && echo "$PRETTY_NAME")"
meta rustc "$(rustc -V)"
meta cargo "$(cargo -V)"
meta nginx "$(nginx -v 2>&1)"
meta wrk "$(wrk -v 2>&1 | head -n 1 | sed 's/ Copyright.*//')"
meta python "$(python3 -V 2>&1)"
meta git_head "$(git rev-parse --short HEAD 2>/dev/null || echo unknown) ($(git log -1 --format=%s 2>/dev/null | cut -c1-80))"
meta git_dirty "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l) changed files under src/, Cargo.toml, Cargo.lock"
meta tollgate_version "$("$TOLLGATE_BIN" --version 2>&1 | head -n 1)"
meta duration "$DURATION"
meta warmup "$WARMUP"
meta stream_duration "$STREAM_DURATION"
meta nginx_workers "$NGINX_WORKERS"
meta litellm_workers "$LITELLM_WORKERS"
meta tollgate_threads "$TOLLGATE_THREADS"
meta work_dir "$WORK"

# File descriptors for 2,000 streams (client, gateway downstream + upstream, mock).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
meta ulimit_n "$(ulimit -n)"

# ---------------------------------------------------------------- request bodies
python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
small = {"model": "mock-gpt-4o", "messages": [{"role": "user", "content": "Hello, how are you today?"}]}
open(f"{work}/small.json", "w").write(json.dumps(small, separators=(",", ":")))
# 1 MiB (1,048,576 bytes) body: one long user message of varied ASCII text.
text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog. " for i in range(30000))
head = {"model": "mock-gpt-4o", "messages": [{"role": "system", "content": "You are a summariser."}, {"role": "user", "content": ""}]}
skeleton = json.dumps(head, separators=(",", ":"))
need = 1048576 - len(skeleton)
head["messages"][1]["content"] = text[:need]
body = json.dumps(head, separators=(",", ":"))
assert len(body) == 1048576, len(body)
open(f"{work}/big.json", "w").write(body)
EOF
meta small_body_bytes "$(stat -c %s "$WORK/small.json")"
meta big_body_bytes "$(stat -c %s "$WORK/big.json")"

# ---------------------------------------------------------------- mock-llm
log "starting mock-llm"
"$MOCK_BIN" --listen 127.0.0.1:0 >"$WORK/mock.out" 2>"$WORK/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_ADDR=""
for _ in $(seq 100); do
	MOCK_ADDR=$(sed -n 's/^mock-llm listening on //p' "$WORK/mock.out" | head -n 1)
	[ -n "$MOCK_ADDR" ] && break
	sleep 0.1
done
[ -n "$MOCK_ADDR" ] || {
	log "mock-llm did not start"
	exit 1
}
MOCK_PORT=${MOCK_ADDR##*:}
meta mock_cmd "$MOCK_BIN --listen 127.0.0.1:0   # -> $MOCK_ADDR, $(nproc) tokio worker threads (default)"

# ---------------------------------------------------------------- nginx
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
# Generated by load/run.sh: a plain reverse proxy to mock-llm with upstream keep-alive.
user root;
daemon off;
worker_processes $NGINX_WORKERS;
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
  client_body_buffer_size 2m;   # keep 1 MiB bodies in memory, as Tollgate does
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  upstream mock {
    server 127.0.0.1:$MOCK_PORT;
    keepalive 2048;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;        # stream SSE chunks as they come
      proxy_read_timeout 300s;
    }
  }
}
EOF
log "starting nginx on 127.0.0.1:$NGINX_PORT"
nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" >"$WORK/nginx/stdout" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_PORT" 10 || {
	log "nginx did not start"
	cat "$WORK/nginx/error.log" >&2
	exit 1
}
NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
meta nginx_cmd "nginx -c $WORK/nginx/nginx.conf"
meta_file nginx_conf "$WORK/nginx/nginx.conf"

# ---------------------------------------------------------------- Tollgate
TG_PORT=$(free_port)
TG_ADMIN_PORT=$(free_port)
mkdir -p "$WORK/tollgate"
# tollgate_config yes|no: with consumer auth and a token limit, or without (a gateway that
# does not have them yet rejects those sections at `tollgate -t`).
tollgate_config() {
	local auth_route="" auth_sections=""
	if [ "$1" = yes ]; then
		auth_route="    auth: {required: true, allow: [loadtest]}"
		auth_sections="
# Consumer auth: every client request carries \`Authorization: Bearer sk-load-test\`.
consumers:
  - name: loadtest
    credentials: [\"\${LOAD_CONSUMER_KEY}\"]
auth:
  sources: [bearer]

# A token limit and a request limit per consumer, far above what the run sends, so they are
# counted and checked on every request but never refuse one.
rate_limits:
  - name: loadtest-budget
    key: consumer
    values: [\"*\"]
    window: minute
    tokens: 1000000000000
    requests: 1000000000"
	fi
	cat <<EOF
# Generated by load/run.sh. Realistic single-provider deployment: two keys in the pool, a model
# mapping (so every request body is rewritten), retries, access log to a file, metrics on the
# admin listener (token-protected /admin), consumer auth and limits when the gateway has them.
server:
  threads: $TOLLGATE_THREADS
  pid_file: $WORK/tollgate/tollgate.pid
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

access_log:
  path: $WORK/tollgate/access.log
  buffer_lines: 65536
$auth_sections

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

routes:
  - name: default
    path_prefix: /v1
    forward_headers: ["x-mock-*"]   # mock-llm pacing headers from the load client
$auth_route
    models:
      - model: "mock-*"
        targets: [{provider: mock}]
    retry: {attempts: 2, per_target: 2, deadline: 30s}
EOF
}
export TOLLGATE_ADMIN_TOKEN=load-admin-token MOCK_KEY_1=sk-mock-primary MOCK_KEY_2=sk-mock-secondary \
	LOAD_CONSUMER_KEY=sk-load-test
TG_AUTH="consumer auth (bearer) and a per-consumer token + request limit (never reached)"
tollgate_config yes >"$WORK/tollgate/tollgate.yaml"
if ! "$TOLLGATE_BIN" -t -c "$WORK/tollgate/tollgate.yaml" >"$WORK/tollgate/check.log" 2>&1; then
	TG_AUTH="not part of this run: this build of the gateway rejects the consumers/auth/rate_limits configuration ($(tail -n 2 "$WORK/tollgate/check.log" | tr '\n' ' ' | cut -c1-300))"
	tollgate_config no >"$WORK/tollgate/tollgate.yaml"
	"$TOLLGATE_BIN" -t -c "$WORK/tollgate/tollgate.yaml" >"$WORK/tollgate/check.log" 2>&1 || {
		cat "$WORK/tollgate/check.log" >&2
		exit 1
	}
fi
meta tollgate_auth "$TG_AUTH"
log "starting Tollgate on 127.0.0.1:$TG_PORT (admin $TG_ADMIN_PORT)"
RUST_LOG=warn "$TOLLGATE_BIN" -c "$WORK/tollgate/tollgate.yaml" >"$WORK/tollgate/stdout.log" 2>"$WORK/tollgate/stderr.log" &
TG_PID=$!
PIDS+=("$TG_PID")
wait_port "$TG_PORT" 20 && wait_port "$TG_ADMIN_PORT" 5 || {
	log "tollgate did not start"
	tail -n 20 "$WORK/tollgate/stderr.log" >&2
	exit 1
}
meta tollgate_cmd "RUST_LOG=warn $TOLLGATE_BIN -c $WORK/tollgate/tollgate.yaml"
meta_file tollgate_conf "$WORK/tollgate/tollgate.yaml"

# The same gateway with the provider over HTTP/2 (`http2: true`, h2c to the mock), for the
# streaming scenarios only: many streams share a connection, and the HTTP/1.1 response reader's
# 64 KiB buffer per upstream connection is gone.
TG2_PORT=$(free_port)
TG2_ADMIN_PORT=$(free_port)
mkdir -p "$WORK/tollgate_h2"
sed -e "s|$WORK/tollgate/|$WORK/tollgate_h2/|g" -e "s|127.0.0.1:$TG_PORT\$|127.0.0.1:$TG2_PORT|" \
	-e "s|127.0.0.1:$TG_ADMIN_PORT\$|127.0.0.1:$TG2_ADMIN_PORT|" \
	-e "s|^    timeouts: {connect: 5s, read: 60s, write: 60s, idle: 90s}\$|&\n    http2: true|" \
	"$WORK/tollgate/tollgate.yaml" >"$WORK/tollgate_h2/tollgate.yaml"
grep -q "http2: true" "$WORK/tollgate_h2/tollgate.yaml" || {
	log "could not derive the HTTP/2 configuration"
	exit 1
}
RUST_LOG=warn "$TOLLGATE_BIN" -c "$WORK/tollgate_h2/tollgate.yaml" >"$WORK/tollgate_h2/stdout.log" 2>"$WORK/tollgate_h2/stderr.log" &
TG2_PID=$!
PIDS+=("$TG2_PID")
wait_port "$TG2_PORT" 20 && wait_port "$TG2_ADMIN_PORT" 5 || {
	log "tollgate (provider over HTTP/2) did not start"
	tail -n 20 "$WORK/tollgate_h2/stderr.log" >&2
	exit 1
}
meta tollgate_h2_cmd "RUST_LOG=warn $TOLLGATE_BIN -c $WORK/tollgate_h2/tollgate.yaml"

# ---------------------------------------------------------------- LiteLLM
LL_PORT=""
LL_PIDS=""
if [ -z "$LITELLM_SKIP" ]; then
	LL_PORT=$(free_port)
	mkdir -p "$WORK/litellm"
	cat >"$WORK/litellm/config.yaml" <<EOF
# Generated by load/run.sh: the same mock as an OpenAI-compatible provider, no database. The streaming model
# sets mock-llm's pacing headers itself (LiteLLM does not forward client headers upstream).
model_list:
  - model_name: mock-gpt-4o
    litellm_params:
      model: openai/gpt-4o-mock
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-mock-primary
  - model_name: mock-gpt-4o-stream64
    litellm_params:
      model: openai/gpt-4o-mock
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-mock-primary
      extra_headers:
        x-mock-chunks: "$STREAM_CHUNKS"
        x-mock-chunk-delay-ms: "$STREAM_PACE_MS"
litellm_settings:
  telemetry: false
  request_timeout: 60
general_settings:
  master_key: sk-load-test   # the clients' bearer key: LiteLLM checks it on every request
EOF
	log "starting LiteLLM $LITELLM_VERSION on 127.0.0.1:$LL_PORT ($LITELLM_WORKERS workers)"
	# gunicorn with uvicorn workers: plain `--num_workers N` (uvicorn's supervisor) kills workers
	# whose import takes longer than its 5 s health check, which LiteLLM's does on a busy machine.
	# Its own session, so that cleanup can stop the master and its workers together.
	LL_ARGS=(--config "$WORK/litellm/config.yaml" --host 127.0.0.1 --port "$LL_PORT" --telemetry False)
	if [ "$LITELLM_WORKERS" -gt 1 ]; then
		LL_ARGS+=(--num_workers "$LITELLM_WORKERS" --run_gunicorn)
	fi
	(
		cd "$WORK/litellm"
		export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR NO_DOCS=True
		exec setsid "$ROOT/load/.venv/bin/litellm" "${LL_ARGS[@]}"
	) >"$WORK/litellm/stdout.log" 2>"$WORK/litellm/stderr.log" &
	LL_PID=$!
	PIDS+=("$LL_PID")
	LL_PGID=$LL_PID
	ll_up=0
	for _ in $(seq 180); do
		if curl -fsS -m 2 "http://127.0.0.1:$LL_PORT/health/liveliness" >/dev/null 2>&1; then
			ll_up=1
			break
		fi
		kill -0 "$LL_PID" 2>/dev/null || break
		sleep 0.5
	done
	if [ "$ll_up" != 1 ]; then
		LITELLM_SKIP="the LiteLLM proxy did not answer /health/liveliness within 90 s: $(tail -n 3 "$WORK/litellm/stderr.log" | tr '\n' ' ' | cut -c1-400)"
	else
		sleep 3 # let every worker come up
		LL_PIDS=$(pgrep -g "$LL_PGID" | tr '\n' ' ')
		meta litellm "$("$ROOT/load/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')"
		meta litellm_cmd "LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR NO_DOCS=True load/.venv/bin/litellm ${LL_ARGS[*]}"
		meta_file litellm_conf "$WORK/litellm/config.yaml"
	fi
fi
meta litellm_skip "$LITELLM_SKIP"
[ -n "$LITELLM_SKIP" ] && log "LiteLLM skipped: $LITELLM_SKIP"

# target name -> port, model for streams, extra client headers for streams, RSS pids
TARGETS="direct nginx tollgate"
[ -z "$LITELLM_SKIP" ] && TARGETS="$TARGETS litellm"
port_of() { case $1 in direct) echo "$MOCK_PORT" ;; nginx) echo "$NGINX_PORT" ;; tollgate) echo "$TG_PORT" ;; tollgate_h2) echo "$TG2_PORT" ;; litellm) echo "$LL_PORT" ;; esac }
pids_of() { case $1 in direct) echo "$MOCK_PID" ;; nginx) echo "$NGINX_WORKER_PIDS" ;; tollgate) echo "$TG_PID" ;; tollgate_h2) echo "$TG2_PID" ;; litellm) echo "$LL_PIDS" ;; esac }
meta targets "$TARGETS"
meta rss_pids "direct=mock-llm($MOCK_PID) nginx=worker($NGINX_WORKER_PIDS) tollgate=$TG_PID tollgate_h2=$TG2_PID litellm=$LL_PIDS"

# ---------------------------------------------------------------- sanity check
for t in $TARGETS tollgate_h2; do
	url="http://127.0.0.1:$(port_of "$t")/v1/chat/completions"
	code=$(curl -sS -m 30 -o "$WORK/sanity-$t.json" -w '%{http_code}' -H 'Content-Type: application/json' \
		-H 'Authorization: Bearer sk-load-test' --data-binary "@$WORK/small.json" "$url" || true)
	if [ "$code" != 200 ]; then
		if [ "$t" = litellm ]; then
			LITELLM_SKIP="sanity request through LiteLLM answered HTTP $code: $(head -c 300 "$WORK/sanity-$t.json")"
			TARGETS="direct nginx tollgate"
			meta litellm_skip "$LITELLM_SKIP"
			log "LiteLLM skipped: $LITELLM_SKIP"
		else
			log "sanity request to $t answered HTTP $code"
			cat "$WORK/sanity-$t.json" >&2
			exit 1
		fi
	fi
done
meta targets "$TARGETS tollgate_h2"

# ---------------------------------------------------------------- measurements
# run_wrk SCENARIO TARGET CONNECTIONS THREADS BODY
run_wrk() {
	local scenario=$1 target=$2 conns=$3 threads=$4 body=$5
	local name="${scenario}__${target}"
	local url="http://127.0.0.1:$(port_of "$target")/v1/chat/completions"
	local cmd=(wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 10s --latency -s "$LOAD/post.lua" "$url" -- "$body" "$name")
	log "$name: warm-up ${WARMUP}s, then ${DURATION}s"
	timeout $((WARMUP + 30)) wrk -t"$threads" -c"$conns" -d"${WARMUP}s" --timeout 10s -s "$LOAD/post.lua" "$url" -- "$body" warmup >/dev/null 2>&1 || true
	printf '%s\n' "${cmd[*]}" >"$RUNS/$name.cmd"
	timeout $((DURATION + 30)) "${cmd[@]}" >"$RUNS/$name.out" 2>&1 || true
	echo "$name wrk" >>"$RUNS/index"
	grep '^WRKRESULT' "$RUNS/$name.out" | sed 's/^WRKRESULT //' >&2 || true
	settle "$scenario" "$target"
}

# settle SCENARIO TARGET: after a measurement, wait (at most 120 s) until the target answers a
# small chat request within 2 s again, so that a target still working off the previous load
# does not spoil the next measurement; a wait longer than 1 s is recorded.
settle() {
	local scenario=$1 target=$2 start now code
	local url="http://127.0.0.1:$(port_of "$target")/v1/chat/completions"
	start=$(date +%s)
	for _ in $(seq 120); do
		code=$(curl -sS -m 2 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
			-H 'Authorization: Bearer sk-load-test' --data-binary "@$WORK/small.json" "$url" 2>/dev/null || true)
		[ "$code" = 200 ] && break
		sleep 1
	done
	now=$(date +%s)
	if [ $((now - start)) -gt 1 ] || [ "$code" != 200 ]; then
		meta "settle__${scenario}__${target}" "$((now - start)) s until $target answered a small chat request within 2 s again (last status ${code:-none})"
		log "$target needed $((now - start)) s to answer again after $scenario"
	fi
}

# Summed VmRSS (KiB) of the given pids.
rss_kb() {
	local total=0 p v
	for p in "$@"; do
		v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# run_sse SCENARIO TARGET CONCURRENCY
run_sse() {
	local scenario=$1 target=$2 conc=$3
	local name="${scenario}__${target}"
	local model=mock-gpt-4o
	local hdr=(--header "x-mock-chunks: $STREAM_CHUNKS" --header "x-mock-chunk-delay-ms: $STREAM_PACE_MS")
	if [ "$target" = litellm ]; then
		model=mock-gpt-4o-stream64 # the pacing headers are set in LiteLLM's config
		hdr=()
	fi
	local rss=()
	for p in $(pids_of "$target"); do rss+=(--rss-pid "$p"); done
	local base=("$SSE_BIN" --addr "127.0.0.1:$(port_of "$target")" --model "$model" "${hdr[@]}"
		--chunks "$STREAM_CHUNKS" --pace-ms "$STREAM_PACE_MS" --concurrency "$conc" --timeout 20)
	# RSS baseline before the warm-up: the warm-up's allocations stay in the allocator.
	local baseline
	baseline=$(rss_kb $(pids_of "$target"))
	log "$name: warm-up 3s, then ${STREAM_DURATION}s of $conc concurrent streams"
	timeout 60 "${base[@]}" --duration 3 --ramp-ms 1000 --label warmup >/dev/null 2>&1 || true
	sleep 1
	local cmd=("${base[@]}" --duration "$STREAM_DURATION" --ramp-ms 1000 "${rss[@]}"
		--rss-baseline-kb "$baseline" --label "$name")
	printf '%q ' "${cmd[@]}" >"$RUNS/$name.cmd"
	echo >>"$RUNS/$name.cmd"
	timeout $((STREAM_DURATION + 60)) "${cmd[@]}" >"$RUNS/$name.out" 2>"$RUNS/$name.err" || true
	echo "$name sse" >>"$RUNS/index"
	cut -c1-400 "$RUNS/$name.out" >&2 || true
	settle "$scenario" "$target"
}

log "scenario a1: non-streaming small chat, keep-alive, concurrency 1"
for t in $TARGETS; do run_wrk a1_chat_c1 "$t" 1 1 "$WORK/small.json"; done
log "scenario a2: non-streaming small chat, keep-alive, concurrency 64"
for t in $TARGETS; do run_wrk a2_chat_c64 "$t" 64 2 "$WORK/small.json"; done
# Streams before the 1 MiB bodies, so that the RSS baselines are not inflated by them.
for level in $STREAM_LEVELS; do
	log "scenario b: streaming, $STREAM_CHUNKS chunks ${STREAM_PACE_MS} ms apart, $level concurrent streams"
	for t in $TARGETS tollgate_h2; do run_sse "b_stream_${level}" "$t" "$level"; done
done
log "scenario c: 1 MiB request bodies, concurrency 16"
for t in $TARGETS; do run_wrk c_body1m_c16 "$t" 16 2 "$WORK/big.json"; done

# ---------------------------------------------------------------- Tollgate's own view
curl -sS -m 5 "http://127.0.0.1:$TG_ADMIN_PORT/metrics" >"$WORK/tollgate/metrics.txt" 2>/dev/null || true
meta tollgate_access_log_lines "$(wc -l <"$WORK/tollgate/access.log" 2>/dev/null || echo 0)"
tail -n 1 "$WORK/tollgate/access.log" >"$WORK/tollgate/access-last.txt" 2>/dev/null || true
meta_file tollgate_access_log_sample "$WORK/tollgate/access-last.txt"
meta_file tollgate_metrics "$WORK/tollgate/metrics.txt"
meta tollgate_stderr_lines "$(wc -l <"$WORK/tollgate/stderr.log")"
# Distinct messages (timestamps cut) with their counts.
sed -E 's/^\[[^ ]+ /[/' "$WORK/tollgate/stderr.log" | cut -c1-200 | sort | uniq -c | sort -rn | head -n 20 \
	>"$WORK/tollgate/stderr-summary.txt"
meta_file tollgate_stderr_summary "$WORK/tollgate/stderr-summary.txt"
meta nginx_error_lines "$(wc -l <"$WORK/nginx/error.log")"

meta load_end "$(cat /proc/loadavg)"
meta date_end "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta elapsed_s "$(($(date +%s) - T_SERVERS))"

cleanup
PIDS=()

# ---------------------------------------------------------------- criterion benchmarks
if [ "${BENCH:-1}" = 1 ]; then
	BENCH_CMD="cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3"
	log "criterion benchmarks (servers stopped): $BENCH_CMD"
	meta bench_cmd "$BENCH_CMD"
	if CRITERION_HOME="$WORK/criterion" timeout 1200 $BENCH_CMD >"$WORK/bench.log" 2>&1; then
		meta bench_json "$(python3 "$LOAD/report.py" --collect-bench "$WORK/criterion")"
	else
		log "benchmarks failed (see $WORK/bench.log)"
		meta bench_json "[]"
	fi
	meta load_after_bench "$(cat /proc/loadavg)"
fi
meta total_s "$(($(date +%s) - T_START))"
python3 "$LOAD/report.py" "$WORK" >"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
log "wrote $RESULTS (raw files in $WORK) in $(($(date +%s) - T_START)) s"
