# Sourced by load/per-request.sh and load/stream-ab.sh: start the servers of load/profile.sh
# with KEEP=1 (its environment knobs pass through: TOLLGATE_BIN, WORK_STEALING,
# UPSTREAM_HTTP2), read what it printed into $port (Tollgate), $mport (mock-llm), $pid
# (Tollgate's pid), $pids (every server) and $work (its work directory), and stop them all on
# exit.
out=$(KEEP=1 bash "$ROOT/load/profile.sh" 2>&1) || true
port=$(echo "$out" | sed -n 's/.*tollgate=\([0-9]*\) (pid.*/\1/p')
mport=$(echo "$out" | sed -n 's/.*mock=\([0-9]*\) .*/\1/p')
pid=$(echo "$out" | sed -n 's/.*(pid \([0-9]*\)).*/\1/p')
pids=$(echo "$out" | sed -n 's/servers left running: //p')
work=$(echo "$out" | sed -n 's/^work=\([^ ]*\).*/\1/p')
[ -n "$pid" ] || {
	echo "servers did not start: $out" >&2
	exit 1
}
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done' EXIT
