#!/usr/bin/env bash
# Compare Portcullis with nginx and HAProxy on loopback: same upstream, same load generator.
#
#   loadtest/compare.sh                      # all rows, 10 s each
#   DURATION=30s CONNECTIONS=100 loadtest/compare.sh
#   ROWS="direct nginx portcullis-plain" SKIP_BUILD=1 loadtest/compare.sh
#
# Every proxy runs on CPU 0; wrk and the upstream (`--threads 1`) share CPU 1. Each row gets a
# short warm-up, then a measured `wrk -t1 -cCONNECTIONS -dDURATION --latency` run. CPU µs/req is
# the proxy's utime+stime delta over the measured run (all its processes) divided by requests;
# peak RSS is the sum of VmHWM over the proxy's processes (nginx: master + worker).
# For the "direct" row those two columns describe the upstream itself.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
CONNECTIONS="${CONNECTIONS:-50}"
ROWS="${ROWS:-direct nginx haproxy portcullis-plain portcullis-edge portcullis-ratelimit-local portcullis-ratelimit-redis}"
PROXY_CPU=0
LOAD_CPU=1

NGINX_ADDR=127.0.0.1:28081
HAPROXY_ADDR=127.0.0.1:28082
PLAIN_CONF="$LOADTEST_DIR/conf/plain.yaml"
EDGE_CONF="$LOADTEST_DIR/conf/edge.yaml"
RL_LOCAL_CONF="$LOADTEST_DIR/conf/ratelimit-local.yaml"
RL_REDIS_CONF="$LOADTEST_DIR/conf/ratelimit-redis.yaml"
# The redis-server of the "(redis)" row, started by this script (never the system one).
REDIS_PORT=28379
# The gateway configs name the upstream; every row uses that one.
UPSTREAM_ADDR="$(conf_first_address "$PLAIN_CONF" upstreams)"
EDGE_PATH=/api/v1/items/42
EDGE_ACCESS_LOG=/tmp/portcullis-bench-edge-access.log

WORK="$(mktemp -d /tmp/portcullis-compare.XXXXXX)"
CLK_TCK="$(getconf CLK_TCK)"
GATEWAY_OK=1
TABLE_ROWS=()
NOTES=()

cleanup() {
	stop_all
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() {
	NOTES+=("$*")
	log "NOTE: $*"
}

prepare() {
	ensure_tools wrk:wrk nginx:nginx-light\|nginx haproxy:haproxy curl:curl taskset:util-linux
	[[ $(nproc) -ge 2 ]] || note "only $(nproc) CPU: the CPU 0 / CPU 1 split is meaningless"
	if [[ ${SKIP_BUILD:-0} != 1 ]] && ! build_release; then
		[[ -x $UPSTREAM_BIN ]] || die "build failed and there is no upstream binary"
		GATEWAY_OK=0
		note "cargo build failed: Portcullis rows skipped (upstream binary may be stale)"
	fi
	[[ -x $UPSTREAM_BIN ]] || die "missing $UPSTREAM_BIN (build with cargo build --release --example upstream)"
	local addr
	for addr in "$NGINX_ADDR" "$HAPROXY_ADDR" "$UPSTREAM_ADDR" \
		"$(conf_first_address "$PLAIN_CONF" listeners)" "$(conf_first_address "$EDGE_CONF" listeners)"; do
		if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
			die "something already listens on $addr"
		fi
	done
}

# --- /proc accounting ------------------------------------------------------------------------

# The process and its direct children (nginx workers).
proc_tree() {
	echo "$1"
	pgrep -P "$1" || true
}

cpu_ticks() {
	local pid total=0 t
	for pid in $(proc_tree "$1"); do
		# Fields after "pid (comm) ": utime and stime are the 12th and 13th.
		t="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')" || t=0
		total=$((total + ${t:-0}))
	done
	echo "$total"
}

peak_rss_kib() {
	local pid total=0 k
	for pid in $(proc_tree "$1"); do
		k="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null)" || k=0
		total=$((total + ${k:-0}))
	done
	echo "$total"
}

# --- servers ----------------------------------------------------------------------------------

start_upstream() {
	start_bg upstream "$LOAD_CPU" INT "$WORK/upstream.log" \
		"$UPSTREAM_BIN" --listen "$UPSTREAM_ADDR" --name bench --threads 1 --body-size 64
	UPSTREAM_PID=$STARTED_PID
	wait_http "http://$UPSTREAM_ADDR/healthz" "$UPSTREAM_PID" 10 || die "upstream did not start"
}

start_nginx() {
	local dir="$WORK/nginx" user_line=""
	mkdir -p "$dir"
	# As root, nginx would switch its worker to "nobody"; keep it the current user.
	[[ $EUID -eq 0 ]] && user_line="user $(id -un) $(id -gn);"
	cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream app {
        server $UPSTREAM_ADDR;
        keepalive 64;
    }
    server {
        listen $NGINX_ADDR;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
	start_bg nginx "$PROXY_CPU" TERM "$dir/stdout.log" \
		nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf"
	PROXY_PID=$STARTED_PID
	wait_http "http://$NGINX_ADDR/" "$PROXY_PID" 10
}

start_haproxy() {
	local dir="$WORK/haproxy"
	mkdir -p "$dir"
	cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    # Each connection needs two fds; stay well under the usual 20k-64k nofile limits.
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    http-reuse always

frontend bench
    bind $HAPROXY_ADDR
    default_backend app

backend app
    server app1 $UPSTREAM_ADDR
EOF
	start_bg haproxy "$PROXY_CPU" TERM "$dir/haproxy.log" haproxy -db -f "$dir/haproxy.cfg"
	PROXY_PID=$STARTED_PID
	wait_http "http://$HAPROXY_ADDR/" "$PROXY_PID" 10
}

# start_redis — a redis-server of the run's own (no persistence) on $REDIS_PORT, on the
# load CPU like the upstream: it is a dependency of the gateway, not the gateway.
start_redis() {
	command -v redis-server >/dev/null || return 1
	start_bg redis "$LOAD_CPU" TERM "$WORK/redis.log" \
		redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

start_portcullis() {
	local conf="$1" name="$2"
	((GATEWAY_OK)) || return 1
	local admin
	admin="$(conf_first_address "$conf" admin)"
	# SIGINT: Pingora's fast shutdown (SIGTERM would wait for the grace period).
	start_bg "$name" "$PROXY_CPU" INT "$WORK/$name.log" "$GATEWAY_BIN" -c "$conf"
	PROXY_PID=$STARTED_PID
	wait_http "http://$admin/readyz" "$PROXY_PID" 30
}

# --- measurement ------------------------------------------------------------------------------

# to_ms VALUE_WITH_UNIT (wrk prints 372.00us, 1.20ms, 2.01s)
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000
		printf "%.3f", n
	}'
}

# check_proxy NAME URL — one request must come back 200 with the upstream's 64-byte body.
check_proxy() {
	local name="$1" url="$2" out
	out="$(curl -s -o "$WORK/check.body" -w '%{http_code} %{size_download}' --max-time 2 "$url")" || true
	if [[ $out != "200 64" ]]; then
		note "$name: sanity request to $url gave '$out' (want '200 64')"
		return 1
	fi
}

# measure NAME URL PID — warm-up, measured wrk run, one table row.
measure() {
	local name="$1" url="$2" pid="$3" out="$WORK/wrk-$1.txt"
	check_proxy "$name" "$url" || true
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "$url" >/dev/null
	local t0 t1
	t0="$(cpu_ticks "$pid")"
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$url" >"$out"
	t1="$(cpu_ticks "$pid")"
	kill -0 "$pid" 2>/dev/null || note "$name: process exited during the run"

	local rps requests p50 p99 errors non2xx rss_kib
	rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
	requests="$(awk '/requests in/ {print $1}' "$out")"
	p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
	p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
	non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")"
	errors="$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$out")"
	rss_kib="$(peak_rss_kib "$pid")"
	local cpu_us
	cpu_us="$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v n="${requests:-0}" \
		'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "n/a" }')"
	local errcol="${non2xx:-0} / ${errors:-0}"
	[[ $errcol == "0 / 0" ]] || note "$name: non-2xx / socket errors = $errcol"
	TABLE_ROWS+=("$name|$rps|$p50|$p99|$cpu_us|$(awk -v k="$rss_kib" 'BEGIN {printf "%.1f", k / 1024}')|$errcol")
	log "$name: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, ${cpu_us} µs CPU/req"
}

skip_row() {
	TABLE_ROWS+=("$1|n/a|n/a|n/a|n/a|n/a|${2//|//}")
	note "$1: $2"
}

run_row() {
	local row="$1"
	case "$row" in
	direct)
		measure direct "http://$UPSTREAM_ADDR/" "$UPSTREAM_PID"
		return
		;;
	nginx) start_nginx || {
		skip_row nginx "failed to start: $(tail -n 2 "$WORK/nginx/error.log" | tr '\n' ' ')"
		return
	} ;;
	haproxy) start_haproxy || {
		skip_row haproxy "failed to start: $(tail -n 2 "$WORK/haproxy/haproxy.log" | tr '\n' ' ')"
		return
	} ;;
	portcullis-plain) start_portcullis "$PLAIN_CONF" "$row" || {
		skip_row "$row" "gateway not built or failed to start: $(tail -n 3 "$WORK/$row.log" 2>/dev/null | tr '\n' ' ')"
		return
	} ;;
	portcullis-ratelimit-local) start_portcullis "$RL_LOCAL_CONF" "$row" || {
		skip_row "$row" "gateway not built or failed to start: $(tail -n 3 "$WORK/$row.log" 2>/dev/null | tr '\n' ' ')"
		return
	} ;;
	portcullis-ratelimit-redis)
		start_redis || {
			skip_row "$row" "redis-server did not start (scripts/setup-debian.sh installs it)"
			return
		}
		start_portcullis "$RL_REDIS_CONF" "$row" || {
			skip_row "$row" "gateway not built or failed to start: $(tail -n 3 "$WORK/$row.log" 2>/dev/null | tr '\n' ' ')"
			return
		}
		;;
	portcullis-edge)
		: >"$EDGE_ACCESS_LOG"
		start_portcullis "$EDGE_CONF" "$row" || {
			skip_row "$row" "gateway not built or failed to start: $(tail -n 3 "$WORK/$row.log" 2>/dev/null | tr '\n' ' ')"
			return
		}
		;;
	*) die "unknown row '$row'" ;;
	esac

	local url
	case "$row" in
	nginx) url="http://$NGINX_ADDR/" ;;
	haproxy) url="http://$HAPROXY_ADDR/" ;;
	portcullis-plain) url="http://$(conf_first_address "$PLAIN_CONF" listeners)/" ;;
	portcullis-edge) url="http://$(conf_first_address "$EDGE_CONF" listeners)$EDGE_PATH" ;;
	portcullis-ratelimit-local) url="http://$(conf_first_address "$RL_LOCAL_CONF" listeners)/" ;;
	portcullis-ratelimit-redis) url="http://$(conf_first_address "$RL_REDIS_CONF" listeners)/" ;;
	esac
	measure "$row" "$url" "$PROXY_PID"
	if [[ $row == portcullis-edge ]]; then
		local lines
		lines="$(wc -l <"$EDGE_ACCESS_LOG" 2>/dev/null || echo 0)"
		log "$row: access log has $lines lines"
		((lines > 0)) || note "$row: access log $EDGE_ACCESS_LOG is empty"
		rm -f "$EDGE_ACCESS_LOG"
	fi
	stop_bg "$PROXY_PID"
}

render_table() {
	local nginx_rps="" row name rps ratio
	for row in "${TABLE_ROWS[@]}"; do
		[[ ${row%%|*} == nginx ]] && nginx_rps="$(cut -d'|' -f2 <<<"$row")"
	done
	echo "| name | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | vs nginx | non-2xx / socket errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	for row in "${TABLE_ROWS[@]}"; do
		IFS='|' read -r name rps p50 p99 cpu rss errs <<<"$row"
		ratio="$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "n/a" }')"
		echo "| $name | $rps | $p50 | $p99 | $cpu | $rss | $ratio | $errs |"
	done
}

render_report() {
	local cpu_model
	cpu_model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
	echo "# Portcullis vs nginx vs HAProxy — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo
	echo "- wrk -t1 -c$CONNECTIONS -d$DURATION --latency (after a $WARMUP warm-up), keep-alive, GET, 64-byte upstream body"
	echo "- proxies on CPU $PROXY_CPU; wrk and the upstream (examples/upstream, --threads 1) on CPU $LOAD_CPU"
	echo "- host: $(nproc) CPU ${cpu_model:-?}, kernel $(uname -r)"
	echo "- $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(haproxy -v 2>/dev/null | head -n1 | awk '{print "HAProxy " $3}'), portcullis $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo "(no commit)")"
	echo "- direct: CPU and RSS columns are the upstream's own; edge row: $EDGE_PATH with routing, metrics, JSON access log to a file"
	echo
	render_table
	if ((${#NOTES[@]})); then
		echo
		echo "Notes:"
		local n
		for n in "${NOTES[@]}"; do echo "- $n"; done
	fi
}

main() {
	prepare
	mkdir -p "$RESULTS_DIR"
	start_upstream
	local row
	for row in $ROWS; do
		run_row "$row"
	done
	local report
	report="$RESULTS_DIR/compare-$(date +%Y%m%d-%H%M%S).md"
	render_report | tee "$report"
	log "written to $report"
}

main "$@"
