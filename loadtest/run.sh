#!/usr/bin/env bash
# Run a k6 scenario against a freshly started gateway and upstreams.
#
#   loadtest/run.sh smoke                  # loadtest/smoke.js with loadtest/conf/smoke.yaml
#   VUS=20 DURATION=30s loadtest/run.sh smoke
#   SKIP_BUILD=1 loadtest/run.sh smoke
#
# The config is the template loadtest/conf/SCENARIO.yaml, or conf/plain.yaml when there is
# none, rendered with ports chosen free at run time. One upstream process (examples/upstream)
# listens on every {upstream*} port of it; k6 gets BASE_URL (the listener), ADMIN_URL and
# TARGETS (the upstream addresses, in order). The k6 summary goes to
# loadtest/results/SCENARIO-<time>.json, k6's HTML dashboard to SCENARIO-<time>.html. Exits
# with k6's status (non-zero if a threshold failed).
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
TEMPLATE="$LOADTEST_DIR/conf/$SCENARIO.yaml"
[[ -f $TEMPLATE ]] || TEMPLATE="$LOADTEST_DIR/conf/plain.yaml"

begin_run run
CONF="$WORK/portcullis.yaml"
TARGETS=()

start_upstreams() {
	local name args=()
	for name in $(upstream_ports "$TEMPLATE"); do
		TARGETS+=("127.0.0.1:${PORT[$name]}")
		args+=(--listen "127.0.0.1:${PORT[$name]}")
	done
	((${#TARGETS[@]})) || die "$TEMPLATE: no {upstream} port"
	start_bg upstream - INT "$WORK/upstream.log" "$UPSTREAM_BIN" "${args[@]}" --name "$SCENARIO" --threads 1
	local pid=$STARTED_PID addr
	for addr in "${TARGETS[@]}"; do
		wait_http "http://$addr/healthz" "$pid" 10 || die "upstream did not start: $(tail -n 5 "$WORK/upstream.log")"
	done
}

start_gateway() {
	start_bg portcullis - INT "$WORK/portcullis.log" "$GATEWAY_BIN" -c "$CONF"
	wait_http "http://127.0.0.1:${PORT[admin]}/readyz" "$STARTED_PID" 30 ||
		die "gateway did not become ready: $(tail -n 20 "$WORK/portcullis.log")"
}

main() {
	ensure_k6
	ensure_tools curl:curl
	if [[ ${SKIP_BUILD:-0} != 1 ]]; then
		build_release || die "cargo build failed"
	fi
	[[ -x $GATEWAY_BIN && -x $UPSTREAM_BIN ]] || die "missing release binaries (unset SKIP_BUILD)"

	render_conf "$TEMPLATE" "$CONF"
	start_upstreams
	start_gateway

	mkdir -p "$RESULTS_DIR"
	local summary base_url stamp
	stamp="$(date +%Y%m%d-%H%M%S)"
	summary="$RESULTS_DIR/$SCENARIO-$stamp.json"
	base_url="http://127.0.0.1:${PORT[listen]}"
	log "k6 run $SCENARIO.js against $base_url (config $TEMPLATE)"
	local rc=0 targets
	targets="$(IFS=, && echo "${TARGETS[*]}")"
	# k6's own HTML report (a data point every 2 s).
	K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PERIOD=2s K6_WEB_DASHBOARD_EXPORT="$RESULTS_DIR/$SCENARIO-$stamp.html" \
		BASE_URL="$base_url" ADMIN_URL="http://127.0.0.1:${PORT[admin]}" TARGETS="$targets" \
		k6 run --summary-export "$summary" "$SCRIPT" || rc=$?
	log "summary written to $summary"
	if ((rc != 0)); then
		log "k6 exited with $rc; gateway log tail:"
		tail -n 20 "$WORK/portcullis.log" >&2 || true
	fi
	return "$rc"
}

main "$@"
