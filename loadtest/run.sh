#!/usr/bin/env bash
# Run a k6 scenario against a freshly started gateway and upstreams.
#
#   loadtest/run.sh smoke                  # loadtest/smoke.js with loadtest/conf/smoke.yaml
#   VUS=20 DURATION=30s loadtest/run.sh smoke
#   SKIP_BUILD=1 loadtest/run.sh smoke
#
# The config is loadtest/conf/SCENARIO.yaml, or conf/plain.yaml when there is none. One
# upstream process (examples/upstream) listens on every target address of its `upstreams:`;
# k6 gets BASE_URL from its first listener and ADMIN_URL from its admin listener. The k6 summary goes to
# loadtest/results/SCENARIO-<time>.json, k6's HTML dashboard to SCENARIO-<time>.html. Exits with k6's status (non-zero if a threshold failed).
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	local f names=""
	for f in "$LOADTEST_DIR"/*.js; do
		[[ -e $f ]] && names+=" $(basename "$f" .js)"
	done
	echo "usage: $0 SCENARIO   (scenarios:${names:- none})" >&2
	exit 2
}

[[ $# -eq 1 ]] || usage
SCENARIO="$1"
SCRIPT="$LOADTEST_DIR/$SCENARIO.js"
[[ -f $SCRIPT ]] || usage
CONF="$LOADTEST_DIR/conf/$SCENARIO.yaml"
[[ -f $CONF ]] || CONF="$LOADTEST_DIR/conf/plain.yaml"

WORK="$(mktemp -d /tmp/portcullis-run.XXXXXX)"
cleanup() {
	stop_all
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_upstreams() {
	local targets=() addr args=()
	mapfile -t targets < <(conf_addresses "$CONF" upstreams)
	((${#targets[@]})) || die "$CONF: no upstream target addresses"
	for addr in "${targets[@]}"; do args+=(--listen "$addr"); done
	start_bg upstream - INT "$WORK/upstream.log" "$UPSTREAM_BIN" "${args[@]}" --name "$SCENARIO" --threads 1
	local pid=$STARTED_PID
	for addr in "${targets[@]}"; do
		wait_http "http://$addr/healthz" "$pid" 10 || die "upstream did not start: $(tail -n 5 "$WORK/upstream.log")"
	done
}

start_gateway() {
	local admin
	admin="$(conf_first_address "$CONF" admin)"
	start_bg portcullis - INT "$WORK/portcullis.log" "$GATEWAY_BIN" -c "$CONF"
	wait_http "http://$admin/readyz" "$STARTED_PID" 30 ||
		die "gateway did not become ready: $(tail -n 20 "$WORK/portcullis.log")"
}

main() {
	ensure_k6
	ensure_tools curl:curl
	if [[ ${SKIP_BUILD:-0} != 1 ]]; then
		build_release || die "cargo build failed"
	fi
	[[ -x $GATEWAY_BIN && -x $UPSTREAM_BIN ]] || die "missing release binaries (unset SKIP_BUILD)"

	start_upstreams
	start_gateway

	mkdir -p "$RESULTS_DIR"
	local summary base_url stamp
	stamp="$(date +%Y%m%d-%H%M%S)"
	summary="$RESULTS_DIR/$SCENARIO-$stamp.json"
	base_url="http://$(conf_first_address "$CONF" listeners)"
	log "k6 run $SCENARIO.js against $base_url (config $CONF)"
	local rc=0
	# k6's own HTML report (a data point every 2 s).
	K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PERIOD=2s K6_WEB_DASHBOARD_EXPORT="$RESULTS_DIR/$SCENARIO-$stamp.html" \
		BASE_URL="${BASE_URL:-$base_url}" ADMIN_URL="${ADMIN_URL:-http://$(conf_first_address "$CONF" admin)}" \
		k6 run --summary-export "$summary" "$SCRIPT" || rc=$?
	log "summary written to $summary"
	if ((rc != 0)); then
		log "k6 exited with $rc; gateway log tail:"
		tail -n 20 "$WORK/portcullis.log" >&2 || true
	fi
	return "$rc"
}

main "$@"
