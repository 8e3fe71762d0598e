#!/usr/bin/env bash
# Hostile connections against a normal client: k6 sends GETs at a constant rate (fixed-rate.js)
# once alone, then again while loadtest/slowloris.py holds CONNECTIONS hostile connections
# (silent, slowloris, idle keep-alive; each reopened when the gateway closes it). Prints and
# writes to results/slowloris-<time>.md the normal client's latency and errors in both runs,
# the gateway's peak RSS, and how the gateway closed the hostile connections.
#
#   loadtest/slowloris.sh      # CONNECTIONS=2000 RATE=300 DURATION=30s RAMP_S=15
#
# Loopback only, bounded in time (about 2 × DURATION + RAMP_S + 15 s).
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNECTIONS="${CONNECTIONS:-2000}"
RATE="${RATE:-300}"
DURATION="${DURATION:-30s}"
RAMP_S="${RAMP_S:-15}"

begin_run slowloris

# k6_run NAME URL — the normal client at RATE for DURATION; its summary is $WORK/NAME.json.
k6_run() {
	URL="$2" RATE="$RATE" DURATION="$DURATION" \
		k6 run --quiet --summary-export "$WORK/$1.json" "$LOADTEST_DIR/fixed-rate.js" >"$WORK/k6-$1.log" 2>&1 ||
		log "k6 ($1) failed a threshold: see the table"
}

# latency_row NAME — "| NAME | p50 | p90 | p99 | max | failed |" from its k6 summary.
latency_row() {
	python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
d, f = m["http_req_duration"], m["http_req_failed"]
print("| %s | %.2f | %.2f | %.2f | %.1f | %d of %d |" % (sys.argv[2], d["med"], d["p(90)"], d["p(99)"], d["max"],
      f.get("passes", 0), f.get("passes", 0) + f.get("fails", 0)))' "$WORK/$1.json" "$1"
}

main() {
	ensure_k6
	ensure_tools curl:curl python3:python3
	if [[ ${SKIP_BUILD:-0} != 1 ]]; then
		build_release || die "cargo build failed"
	fi
	render_conf "$LOADTEST_DIR/conf/slowloris.yaml" "$WORK/portcullis.yaml"

	start_bg upstream - INT "$WORK/upstream.log" "$UPSTREAM_BIN" --listen "127.0.0.1:${PORT[upstream]}" --threads 1
	wait_http "http://127.0.0.1:${PORT[upstream]}/healthz" "$STARTED_PID" 10 || die "upstream did not start"
	start_bg portcullis - INT "$WORK/portcullis.log" "$GATEWAY_BIN" -c "$WORK/portcullis.yaml"
	local gateway=$STARTED_PID url="http://127.0.0.1:${PORT[listen]}/"
	wait_http "http://127.0.0.1:${PORT[admin]}/readyz" "$gateway" 30 || die "gateway did not become ready"

	log "baseline: k6 at $RATE req/s for $DURATION"
	k6_run baseline "$url"

	local attack_s=$((RAMP_S + $(seconds "$DURATION") + 5))
	log "attack: $CONNECTIONS hostile connections for ${attack_s}s"
	python3 "$LOADTEST_DIR/slowloris.py" --port "${PORT[listen]}" --connections "$CONNECTIONS" \
		--duration "$attack_s" >"$WORK/hostile.json" 2>"$WORK/hostile.log" &
	local attacker=$!
	sleep "$RAMP_S"
	local open
	open="$(ss -Htn state established "( sport = :${PORT[listen]} )" | wc -l)"
	log "under attack ($open established connections on the listener): k6 at $RATE req/s for $DURATION"
	k6_run attack "$url"
	wait "$attacker" || die "the attacker failed: $(tail -n 5 "$WORK/hostile.log")"

	local peak_kib stamp report
	peak_kib="$(awk '/^VmHWM:/ { print $2 }' "/proc/$gateway/status")"
	stamp="$(date +%Y%m%d-%H%M%S)"
	mkdir -p "$RESULTS_DIR"
	report="$RESULTS_DIR/slowloris-$stamp.md"
	{
		echo "Normal client: k6 at $RATE req/s for $DURATION (fixed-rate.js), latency in ms."
		echo
		echo "| run | p50 | p90 | p99 | max | failed |"
		echo "|---|---|---|---|---|---|"
		latency_row baseline
		latency_row attack
		echo
		echo "Attack: $CONNECTIONS hostile connections ($open established after ${RAMP_S}s)."
		echo "Gateway peak RSS (VmHWM): $((peak_kib / 1024)) MiB."
		echo
		echo "Hostile connections (opened, closed by the gateway, median and longest life in s):"
		echo
		echo '```'
		python3 -m json.tool "$WORK/hostile.json"
		echo '```'
	} | tee "$report"
	log "report written to $report"
}

# seconds DURATION — a k6 duration (30s, 2m) in seconds.
seconds() {
	case "$1" in
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*) die "not a duration: $1" ;;
	esac
}

main "$@"
