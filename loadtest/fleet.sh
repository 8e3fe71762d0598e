#!/usr/bin/env bash
# A fleet under load while its configuration changes: etcd, one upstream and three
# portcullis nodes started with --config-source; k6 (loadtest/fleet.js) spreads a constant
# arrival rate over the nodes while this script pushes a new revision every PUSH_EVERY
# seconds with `portcullis config push --wait`. Passes only if no request failed and every
# push was applied by all three nodes.
#
#   loadtest/fleet.sh
#   PROFILE=debug SKIP_BUILD=1 DURATION=15s RATE=200 loadtest/fleet.sh
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-15s}"
RATE="${RATE:-300}"
PUSH_EVERY="${PUSH_EVERY:-3}"
begin_run fleet
TEMPLATE="$WORK/fleet.yaml"
DOCUMENT="$WORK/document.yaml"

# push GENERATION — pushes the template with its /generation route answering it, and
# waits until every node applied it.
push() {
	sed "s|\"generation 0\"|\"generation $1\"|" "$TEMPLATE" >"$DOCUMENT"
	NODE_LISTEN=1 NODE_ADMIN=2 NODE_DIR="$WORK" "$GATEWAY_BIN" config push -c "$DOCUMENT" \
		--config-source "$SOURCE" --wait --timeout 5s >"$WORK/push.out" 2>&1
}

main() {
	ensure_k6
	ensure_tools curl:curl etcd:etcd-server
	if [[ ${SKIP_BUILD:-0} != 1 ]]; then
		build_release || die "cargo build failed"
	fi
	render_conf "$LOADTEST_DIR/conf/fleet.yaml" "$TEMPLATE"
	reserve_port 'PORT[etcd]'
	reserve_port 'PORT[etcd_peer]'
	local etcd="http://127.0.0.1:${PORT[etcd]}" peer="http://127.0.0.1:${PORT[etcd_peer]}"
	SOURCE="etcd://127.0.0.1:${PORT[etcd]}/loadtest"

	start_bg etcd - TERM "$WORK/etcd.log" etcd --name fleet --data-dir "$WORK/etcd" \
		--listen-client-urls "$etcd" --advertise-client-urls "$etcd" \
		--listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
		--initial-cluster "fleet=$peer"
	wait_http "$etcd/health" "$STARTED_PID" 10 || die "etcd did not start"
	start_bg upstream - INT "$WORK/upstream.log" "$UPSTREAM_BIN" --listen "127.0.0.1:${PORT[upstream]}" \
		--name fleet --threads 1
	wait_http "http://127.0.0.1:${PORT[upstream]}/healthz" "$STARTED_PID" 10 || die "upstream did not start"
	push 0 || die "first push failed: $(cat "$WORK/push.out")"

	local nodes=() i
	for i in 1 2 3; do
		reserve_port "PORT[node$i]"
		reserve_port "PORT[node${i}_admin]"
		mkdir -p "$WORK/node$i"
		printf 'config_source:\n  node_id: node-%s\n  cache_file: %s/node%s/cache.yaml\n' "$i" "$WORK" "$i" \
			>"$WORK/node$i/bootstrap.yaml"
		NODE_LISTEN="${PORT[node$i]}" NODE_ADMIN="${PORT[node${i}_admin]}" NODE_DIR="$WORK/node$i" \
			start_bg "node-$i" - INT "$WORK/node$i/portcullis.log" "$GATEWAY_BIN" run \
			--config-source "$SOURCE" -c "$WORK/node$i/bootstrap.yaml"
		wait_http "http://127.0.0.1:${PORT[node${i}_admin]}/readyz" "$STARTED_PID" 30 ||
			die "node-$i did not become ready: $(tail -n 20 "$WORK/node$i/portcullis.log")"
		nodes+=("http://127.0.0.1:${PORT[node$i]}")
	done

	mkdir -p "$RESULTS_DIR"
	local stamp summary
	stamp="$(date +%Y%m%d-%H%M%S)"
	summary="$RESULTS_DIR/fleet-$stamp.json"
	log "k6: $RATE req/s over 3 nodes for $DURATION, a push every ${PUSH_EVERY}s"
	NODES="$(
		IFS=,
		echo "${nodes[*]}"
	)" RATE="$RATE" DURATION="$DURATION" \
		k6 run --quiet --summary-export "$summary" "$LOADTEST_DIR/fleet.js" &
	local k6_pid=$!

	local generation=0 refused=0
	while kill -0 "$k6_pid" 2>/dev/null; do
		sleep "$PUSH_EVERY"
		kill -0 "$k6_pid" 2>/dev/null || break
		generation=$((generation + 1))
		if push "$generation"; then
			log "push $generation: $(head -n 1 "$WORK/push.out"), applied by every node"
		else
			refused=$((refused + 1))
			log "push $generation failed: $(cat "$WORK/push.out")"
		fi
	done
	local rc=0
	wait "$k6_pid" || rc=$?
	log "$generation pushes, $refused failed; k6 summary in $summary"
	if command -v python3 >/dev/null; then
		python3 - "$summary" <<'PY' >&2
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
failed = m.get("http_req_failed{scenario:traffic}", m["http_req_failed"])
print(f"requests: {m['http_reqs']['count']}  failed rate: {failed.get('value', failed.get('rate'))}  "
      f"p99: {m['http_req_duration'].get('p(99)', 'n/a')} ms")
PY
	fi
	((refused == 0)) || rc=1
	return "$rc"
}

main "$@"
