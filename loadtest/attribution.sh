#!/usr/bin/env bash
# Per-request CPU attribution with callgrind: instruction counts do not depend on what else
# the machine runs, so this can be taken on a loaded box (docs/performance-attribution.md).
#
#   loadtest/attribution.sh                        # rows bare plain full, 20,000 requests each
#   ROWS="bare plain" REQUESTS=5000 SKIP_BUILD=1 loadtest/attribution.sh
#   ROWS=bare BARE_ARGS="--l4-read-buffer 0" TAG=l4read0 loadtest/attribution.sh
#
# Each row's proxy runs under `valgrind --tool=callgrind`; after WARMUP_REQUESTS requests the
# counters are zeroed, h2load sends REQUESTS keep-alive HTTP/1.1 requests over CONNECTIONS
# connections, and the profile is dumped; then the counters are zeroed again and dumped
# after the process sat idle for as long (timers and background threads), which
# callgrind_groups.py subtracts. Output: loadtest/results/attribution-ROW-<time>.md (the
# tables) next to the raw callgrind files (callgrind_annotate --inclusive=yes reads them).
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REQUESTS="${REQUESTS:-20000}"
WARMUP_REQUESTS="${WARMUP_REQUESTS:-2000}"
CONNECTIONS="${CONNECTIONS:-10}"
BARE_BIN="$(dirname "$GATEWAY_BIN")/examples/bare_proxy"
FIXTURE_BIN="$(dirname "$GATEWAY_BIN")/examples/auth_fixture"
# BIN_DIR: take portcullis and bare_proxy from there instead (e.g. the system-allocator build
# that idle-connections.sh keeps in target/release/system-allocator).
if [[ -n ${BIN_DIR:-} ]]; then
	GATEWAY_BIN="$BIN_DIR/portcullis"
	BARE_BIN="$BIN_DIR/bare_proxy"
fi
STAMP="$(date +%Y%m%d-%H%M%S)${TAG:+-$TAG}"
# Extra arguments of the bare row's examples/bare_proxy.
read -ra BARE_EXTRA <<<"${BARE_ARGS:-}"

# row: server, config template (portcullis), measured path, needs (gzip: every request
# carries Accept-Encoding: gzip); the rows of compare.sh. The cache rows measure hits only
# (the warm-up requests fill the cache).
ROW_TABLE="
bare   bare        -           /
plain  portcullis  plain.yaml  /
edge   portcullis  edge.yaml   /api/v1/items/42
full   portcullis  full.yaml   /api/v1/items/42
cache       portcullis  cache.yaml       /
cache-json  portcullis  cache-gzip.yaml  /doc.json
cache-gzip  portcullis  cache-gzip.yaml  /doc.json  gzip
"
ROWS="${ROWS:-bare plain full}"

# Allocator entry points whose callers are kept 30 frames deep, so every allocation can be
# charged to the code that asked for it, not to Vec or Bytes.
CALLGRIND_OPTS=(
	--tool=callgrind --dump-instr=no --compress-strings=yes
	--separate-callers30=mi_malloc_aligned --separate-callers30=mi_zalloc_aligned
	--separate-callers30=mi_realloc_aligned --separate-callers30=malloc
	--separate-callers30=calloc --separate-callers30=realloc
)

# glibc copies large blocks with `rep movsb`, which callgrind counts one instruction per
# byte; above this threshold the vector loop (32 bytes an instruction) is used instead, so
# that memcpy weighs in the profile about what it costs a CPU.
VALGRIND_ENV=(env GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1073741824:glibc.cpu.x86_rep_stosb_threshold=1073741824)

begin_run attribution

prepare() {
	ensure_tools valgrind:valgrind h2load:nghttp2-client curl:curl
	if [[ ${SKIP_BUILD:-0} != 1 ]]; then
		build_release || die "build failed"
	fi
	mkdir -p "$RESULTS_DIR"
	reserve_port 'PORT[upstream]'
	start_bg upstream - INT "$WORK/upstream.log" \
		"$UPSTREAM_BIN" --listen "127.0.0.1:${PORT[upstream]}" --name bench --threads 1 --body-size 64
	wait_http "http://127.0.0.1:${PORT[upstream]}/healthz" "$STARTED_PID" 10 || die "upstream did not start"
}

# callgrind_do PID -z|-d — zeroes or dumps the counters of the process. Callgrind acts on the
# command when the process next runs; a request to the admin listener (or the proxy, for the
# bare row, counted as one more request) wakes it.
callgrind_do() {
	local pid="$1" what="$2" wake="$3"
	callgrind_control "$what" "$pid" >/dev/null &
	local ctl=$!
	sleep 1
	curl -s -o /dev/null --max-time 5 "$wake" || true
	wait "$ctl"
}

run_row() {
	local row="$1" server conf path needs
	read -r server conf path needs < <(awk -v r="$row" '$1 == r { print $2, $3, $4, $5 }' <<<"$ROW_TABLE")
	[[ -n $server ]] || die "unknown row $row"
	local out="$RESULTS_DIR/attribution-$row-$STAMP" port wake header=()
	if [[ $server == bare ]]; then
		reserve_port 'PORT[bare]'
		port=${PORT[bare]}
		start_bg "$row" - INT "$WORK/$row.log" "${VALGRIND_ENV[@]}" valgrind "${CALLGRIND_OPTS[@]}" \
			--callgrind-out-file="$out.callgrind" \
			"$BARE_BIN" --listen "127.0.0.1:$port" --upstream "127.0.0.1:${PORT[upstream]}" "${BARE_EXTRA[@]}"
		wake="http://127.0.0.1:$port/"
	else
		render_conf "$LOADTEST_DIR/conf/$conf" "$WORK/$conf"
		port=${PORT[listen]}
		[[ $needs == *gzip* ]] && header=(-H "Accept-Encoding: gzip")
		if grep -q jwks "$WORK/$conf"; then
			local token
			token="$("$FIXTURE_BIN" "$WORK/${conf%.yaml}-jwks.json")" || die "auth_fixture failed"
			header=(-H "Authorization: Bearer $token")
		fi
		start_bg "$row" - INT "$WORK/$row.log" "${VALGRIND_ENV[@]}" valgrind "${CALLGRIND_OPTS[@]}" \
			--callgrind-out-file="$out.callgrind" "$GATEWAY_BIN" -c "$WORK/$conf"
		wake="http://127.0.0.1:${PORT[admin]}/healthz"
	fi
	local pid=$STARTED_PID url="http://127.0.0.1:$port$path" ready="http://127.0.0.1:$port/"
	[[ $server == bare ]] || ready="http://127.0.0.1:${PORT[admin]}/readyz"
	wait_http "$ready" "$pid" 180 || die "$row did not start (see $WORK/$row.log)"
	h2load --h1 -n "$WARMUP_REQUESTS" -c "$CONNECTIONS" "${header[@]}" "$url" >/dev/null
	callgrind_do "$pid" -z "$wake"
	local t0 t1
	t0="$(date +%s.%N)"
	h2load --h1 -n "$REQUESTS" -c "$CONNECTIONS" "${header[@]}" "$url" >"$WORK/h2load-$row.txt"
	t1="$(date +%s.%N)"
	grep -q "succeeded, 0 errored" "$WORK/h2load-$row.txt" || log "$row: $(grep '^requests:' "$WORK/h2load-$row.txt")"
	callgrind_do "$pid" -d "$wake"
	callgrind_do "$pid" -z "$wake"
	sleep "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
	callgrind_do "$pid" -d "$wake"
	stop_bg "$pid"
	# Dumps: $out.callgrind.1 (the requests), .2 (idle), and the one at exit.
	python3 "$LOADTEST_DIR/callgrind_groups.py" "$out.callgrind.1" --idle "$out.callgrind.2" \
		--requests "$REQUESTS" >"$out.md"
	log "$row: $(head -n 1 "$out.md") -> $out.md"
}

main() {
	prepare
	local row
	for row in $ROWS; do
		run_row "$row"
	done
}

main "$@"
