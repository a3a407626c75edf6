# Sourced by load/cache.sh and load/cache-instructions.sh: start several sets of
# load/profile.sh's servers, each with its own environment, and stop them all on exit.
# Needs $ROOT and $WORK.
#   out=$(VAR=... start)      the servers' line (work=… mock=… nginx=… tollgate=… (pid …))
#   port "$out" tollgate      a port from that line (tollgate, nginx, mock, admin)
#   pid_of "$out"             the gateway's pid
start() {
	local out
	out=$(KEEP=1 bash "$ROOT/load/profile.sh" 2>&1) || true
	echo "$out" | sed -n 's/servers left running: //p' >>"$WORK/pids"
	echo "$out"
}
port() { echo "$1" | sed -n "s/.* $2=\([0-9]*\).*/\1/p"; }
pid_of() { echo "$1" | sed -n 's/.*tollgate=[0-9]* (pid \([0-9]*\)).*/\1/p'; }
trap 'for p in $(cat "$WORK/pids" 2>/dev/null); do kill "$p" 2>/dev/null || true; done' EXIT
