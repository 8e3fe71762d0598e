#!/usr/bin/env bash
# Memory per idle keep-alive connection (docs/performance-attribution.md): for each row and
# allocator variant, the proxy's RSS before and after CONNECTIONS connections that each sent
# one request and then sit idle (RSS is load-independent: this can run on a busy machine).
#
#   loadtest/idle-connections.sh
#   ROWS="bare plain" VARIANTS="mimalloc glibc" CONNECTIONS=1000 loadtest/idle-connections.sh
#
# Variants (see variant_env): the allocator, mimalloc (the default build) or glibc (the build
# with --features system-allocator, kept in target/release/system-allocator/, built when
# missing), with options such as +purge0 or +l4read0. Each row is measured twice: requests
# sent one after the other (one upstream connection serves them all) and all at once (the
# upstream pool opens one connection per request and keeps what it may).
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNECTIONS="${CONNECTIONS:-1000}"
ROWS="${ROWS:-bare plain}"
VARIANTS="${VARIANTS:-mimalloc mimalloc+purge0 mimalloc+l4read0 glibc glibc+l4read0}"
RELEASE_DIR="$(dirname "$GATEWAY_BIN")"
SYSALLOC_DIR="$RELEASE_DIR/system-allocator"

begin_run idle
ulimit -n "$(ulimit -Hn)"

build_system_allocator() {
	[[ -x $SYSALLOC_DIR/portcullis && -x $SYSALLOC_DIR/bare_proxy ]] && return 0
	log "building the system-allocator variant into $SYSALLOC_DIR"
	(cd "$REPO_DIR" && cargo build --release --features system-allocator --bin portcullis --example bare_proxy)
	mkdir -p "$SYSALLOC_DIR"
	cp "$RELEASE_DIR/portcullis" "$RELEASE_DIR/examples/bare_proxy" "$SYSALLOC_DIR/"
	# Back to the default build for the other variants and scripts.
	(cd "$REPO_DIR" && cargo build --release --bin portcullis --example bare_proxy)
}

# A variant is an allocator (mimalloc, or glibc: the build with --features system-allocator)
# and options joined by '+': purge0 (MIMALLOC_PURGE_DELAY=0), nothp (MIMALLOC_ALLOW_THP=0),
# arena1 (MALLOC_ARENA_MAX=1), l4readN (bare only: --l4-read-buffer N, e.g. l4read0).
variant_env() {
	local option
	for option in $(tr '+' ' ' <<<"${1#*+}"); do
		case "$option" in
		purge0) echo "MIMALLOC_PURGE_DELAY=0" ;;
		nothp) echo "MIMALLOC_ALLOW_THP=0" ;;
		arena1) echo "MALLOC_ARENA_MAX=1" ;;
		esac
	done
}

variant_args() {
	local option
	for option in $(tr '+' ' ' <<<"${1#*+}"); do
		[[ $option == l4read* ]] && echo "--l4-read-buffer ${option#l4read}"
	done
	return 0
}

variant_bin() {
	local variant="$1" name="$2"
	if [[ $variant == glibc* ]]; then
		echo "$SYSALLOC_DIR/$name"
	elif [[ $name == bare_proxy ]]; then
		echo "$RELEASE_DIR/examples/bare_proxy"
	else
		echo "$RELEASE_DIR/portcullis"
	fi
}

measure() {
	local row="$1" variant="$2" mode="$3" port pid url env_vars extra
	read -ra env_vars <<<"$(variant_env "$variant" | tr '\n' ' ')"
	read -ra extra <<<"$(variant_args "$variant" | tr '\n' ' ')"
	if [[ $row != bare && ${#extra[@]} -gt 0 ]]; then
		echo "### $row, $variant: n/a (the option is the bare proxy's)"
		return 0
	fi
	if [[ $row == bare ]]; then
		reserve_port 'PORT[bare]'
		port=${PORT[bare]}
		start_bg "$row" - INT "$WORK/$row.log" env "${env_vars[@]}" \
			"$(variant_bin "$variant" bare_proxy)" --listen "127.0.0.1:$port" --upstream "127.0.0.1:${PORT[upstream]}" "${extra[@]}"
	else
		render_conf "$LOADTEST_DIR/conf/$row.yaml" "$WORK/$row.yaml"
		port=${PORT[listen]}
		start_bg "$row" - INT "$WORK/$row.log" env "${env_vars[@]}" \
			"$(variant_bin "$variant" portcullis)" -c "$WORK/$row.yaml"
	fi
	pid=$STARTED_PID
	url="http://127.0.0.1:$port/"
	wait_http "$url" "$pid" 30 || die "$row did not start"
	# `env` execs the binary, so the pid is the proxy's.
	local flag=()
	[[ $mode == concurrent ]] && flag=(--concurrent)
	echo "### $row, $variant, $mode"
	python3 "$LOADTEST_DIR/idle_connections.py" --pid "$pid" --url "$url" \
		--connections "$CONNECTIONS" "${flag[@]}"
	stop_bg "$pid"
}

main() {
	[[ " $VARIANTS " != *" glibc"* ]] || build_system_allocator
	reserve_port 'PORT[upstream]'
	start_bg upstream - INT "$WORK/upstream.log" \
		"$UPSTREAM_BIN" --listen "127.0.0.1:${PORT[upstream]}" --name bench --threads 1 --body-size 64
	wait_http "http://127.0.0.1:${PORT[upstream]}/healthz" "$STARTED_PID" 10 || die "upstream did not start"
	mkdir -p "$RESULTS_DIR"
	local report row variant mode
	report="$RESULTS_DIR/idle-connections-$(date +%Y%m%d-%H%M%S).txt"
	for row in $ROWS; do
		for variant in $VARIANTS; do
			for mode in sequential concurrent; do
				measure "$row" "$variant" "$mode" >>"$report"
			done
		done
	done
	cat "$report"
	log "written to $report"
}

main "$@"
