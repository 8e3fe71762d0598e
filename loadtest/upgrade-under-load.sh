#!/usr/bin/env bash
# Zero-downtime proof under load: k6 sends a constant arrival rate for DURATION while
# loadtest/reload-under-load.js reloads the configuration RELOADS times (this script
# flips the target weights in the file between reloads, so each reload changes
# something) and this script upgrades the binary twice with `portcullis upgrade`.
# Passes only if not one request failed.
#
#   loadtest/upgrade-under-load.sh
#   RATE=1000 DURATION=60s SKIP_BUILD=1 loadtest/upgrade-under-load.sh
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-30s}"
RATE="${RATE:-500}"
RELOADS="${RELOADS:-10}"
UPGRADES="${UPGRADES:-2}"
begin_run zero-downtime
CONF="$WORK/portcullis.yaml"
# conf/zero-downtime.yaml with this run's ports; write_conf edits copies of it.
TEMPLATE="$WORK/template.yaml"

# The process serving at the end was started by `portcullis upgrade`, not by us.
before_exit() {
	if [[ -f $WORK/zero-downtime.pid ]]; then
		kill -INT "$(cat "$WORK/zero-downtime.pid")" 2>/dev/null || true
	fi
}

seconds() {
	local d="$1"
	case "$d" in
	*ms) echo 0 ;;
	*m) echo $((${d%m} * 60)) ;;
	*s) echo "${d%s}" ;;
	*) echo "$d" ;;
	esac
}

# Rewrites the config with target weights A:B.
write_conf() {
	awk -v a="$1" -v b="$2" '/weight: 1 }/ { n++; sub(/weight: 1 }/, "weight: " (n == 1 ? a : b) " }") } { print }' \
		"$TEMPLATE" >"$CONF.tmp"
	mv "$CONF.tmp" "$CONF"
}

main() {
	ensure_k6
	ensure_tools curl:curl
	if [[ ${SKIP_BUILD:-0} != 1 ]]; then
		build_release || die "cargo build failed"
	fi
	render_conf "$LOADTEST_DIR/conf/zero-downtime.yaml" "$TEMPLATE"
	cp "$TEMPLATE" "$CONF"
	local admin_url="http://127.0.0.1:${PORT[admin]}"

	start_bg upstream - INT "$WORK/upstream.log" "$UPSTREAM_BIN" --listen "127.0.0.1:${PORT[upstream]}" \
		--listen "127.0.0.1:${PORT[upstream2]}" --name zero-downtime --threads 1
	wait_http "http://127.0.0.1:${PORT[upstream]}/healthz" "$STARTED_PID" 10 || die "upstream did not start"
	start_bg portcullis - INT "$WORK/portcullis.log" "$GATEWAY_BIN" -c "$CONF"
	wait_http "$admin_url/readyz" "$STARTED_PID" 30 ||
		die "gateway did not become ready: $(tail -n 20 "$WORK/portcullis.log")"

	mkdir -p "$RESULTS_DIR"
	local stamp summary
	stamp="$(date +%Y%m%d-%H%M%S)"
	summary="$RESULTS_DIR/zero-downtime-$stamp.json"
	log "k6: $RATE req/s for $DURATION, $RELOADS reloads, $UPGRADES upgrades"
	K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PERIOD=2s K6_WEB_DASHBOARD_EXPORT="$RESULTS_DIR/zero-downtime-$stamp.html" \
		BASE_URL="http://127.0.0.1:${PORT[listen]}" ADMIN_URL="$admin_url" ADMIN_TOKEN=loadtest \
		RATE="$RATE" DURATION="$DURATION" RELOADS="$RELOADS" \
		k6 run --quiet --summary-export "$summary" "$LOADTEST_DIR/reload-under-load.js" &
	local k6_pid=$!

	# Flip the weights every half reload interval, and upgrade at evenly spaced times.
	local total step i flips=0 upgraded=0
	total="$(seconds "$DURATION")"
	step=$(awk -v t="$total" -v r="$RELOADS" 'BEGIN { printf "%.2f", t / (r + 1) / 2 }')
	local next_upgrade=$((total / (UPGRADES + 1))) started=$SECONDS
	while kill -0 "$k6_pid" 2>/dev/null; do
		sleep "$step"
		flips=$((flips + 1))
		if ((flips % 2)); then write_conf 1 3; else write_conf 3 1; fi
		if ((upgraded < UPGRADES && SECONDS - started >= next_upgrade)); then
			"$GATEWAY_BIN" upgrade -c "$CONF" >&2 || die "portcullis upgrade failed"
			upgraded=$((upgraded + 1))
			next_upgrade=$((next_upgrade + total / (UPGRADES + 1)))
		fi
	done
	local rc=0
	wait "$k6_pid" || rc=$?
	log "$upgraded upgrades done; k6 summary in $summary"
	if command -v python3 >/dev/null; then
		python3 - "$summary" <<'PY' >&2
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
reqs = m["http_reqs"]["count"]
failed = m.get("http_req_failed{scenario:traffic}", m["http_req_failed"])
print(f"requests: {reqs}  failed rate: {failed.get('value', failed.get('rate'))}  "
      f"p99: {m['http_req_duration'].get('p(99)', 'n/a')} ms")
PY
	fi
	return "$rc"
}

main "$@"
