#!/usr/bin/env bash
# Compare Portcullis with nginx and HAProxy on loopback: same upstream, same load generator.
#
#   loadtest/compare.sh                      # all rows, 10 s each
#   DURATION=30s CONNECTIONS=100 loadtest/compare.sh
#   ROWS="direct nginx portcullis-plain" SKIP_BUILD=1 loadtest/compare.sh
#   loadtest/compare.sh --quick              # CI: 3 s rows with the debug build; checks that the
#                                            # script works end to end, not the speed
#
# Besides wrk's maximum throughput, each row gets a k6 run at a constant arrival rate
# (K6_RATE requests/s for K6_DURATION; K6_RATE=0 skips it) for latency at a fixed load, and
# the table is also drawn as an SVG chart (loadtest/chart.py) next to the markdown report.
#
# Every proxy runs on CPU 0; wrk and the upstream (`--threads 1`) share CPU 1. Each row gets a
# short warm-up, then a measured `wrk -t1 -cCONNECTIONS -dDURATION --latency` run. CPU µs/req is
# the proxy's utime+stime delta over the measured run (all its processes) divided by requests;
# peak RSS is the sum of VmHWM over the proxy's processes (nginx: master + worker).
# For the "direct" row those two columns describe the upstream itself.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK=0
if [[ ${1:-} == --quick ]]; then
	QUICK=1
	DURATION="${DURATION:-3s}"
	WARMUP="${WARMUP:-1s}"
	K6_DURATION="${K6_DURATION:-3s}"
	use_profile debug
	ROWS="${ROWS:-direct nginx caddy portcullis-plain portcullis-edge grpc-direct portcullis-grpc}"
	RSS_CONNECTIONS="${RSS_CONNECTIONS:-200}"
	RSS_DURATION="${RSS_DURATION:-2s}"
fi
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
K6_RATE="${K6_RATE:-2000}"
K6_DURATION="${K6_DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-50}"
# After its measured run each HTTP/1.1 row gets RSS_CONNECTIONS concurrent keep-alive
# connections for RSS_DURATION; the table's last RSS column is the proxy's peak RSS then
# (the issue's "peak RSS at 1,000 connections"). RSS_CONNECTIONS=0 skips it.
RSS_CONNECTIONS="${RSS_CONNECTIONS:-1000}"
RSS_DURATION="${RSS_DURATION:-5s}"
PINGAP_BIN="${PINGAP_BIN:-$(command -v pingap || echo /opt/pingap/bin/pingap)}"
PROXY_CPU=0
LOAD_CPU=1
BARE_BIN="$(dirname "$GATEWAY_BIN")/examples/bare_proxy"
FIXTURE_BIN="$(dirname "$GATEWAY_BIN")/examples/auth_fixture"
EDGE_PATH=/api/v1/items/42
GRPC_PATH=/bench.Echo/Unary
GRPC_BIN="$(dirname "$GATEWAY_BIN")/examples/grpc_upstream"

# The rows: name, what serves it, its config template (conf/*.yaml, for portcullis), the
# measured path, and what else it needs:
#   token       every request carries a bearer token from examples/auth_fixture, which
#               writes the JWKS the config names ({dir}/NAME-jwks.json for conf/NAME.yaml)
#   redis       a redis-server of the run's own on the config's {redis} port
#   access-log  the config's access log ({dir}/NAME-access.log) must have lines after the run
#   gzip        every request carries Accept-Encoding: gzip (the answer must be gzip)
# /doc.json is the example upstream's 16 KiB JSON document (compressible); / its 64-byte text.
# The varnish rows cache every answer for 1 h; varnish-gzip also sets beresp.do_gzip (Varnish
# compresses on insert, as Portcullis does on a route with cache and compression).
#   h2load      measured with h2load (nghttp2-client) over HTTP/2 instead of wrk over HTTP/1.1:
#               -c CONNECTIONS clients, 10 streams each, no k6 run; h2load reports no
#               percentiles, so p50/p99 show its mean and max
# caddy: Caddy (Debian caddy) reverse_proxy with GOMAXPROCS=1. pingap: the closest peer, another
# Pingora gateway, one thread; a hand-run row (`cargo install pingap --locked` needs
# protobuf-compiler), skipped with a note when PINGAP_BIN (default: pingap on PATH, then
# /opt/pingap/bin/pingap) is absent.
#   grpc        gRPC-shaped unary calls (POST, content-type application/grpc, te: trailers,
#               one framed 64-byte message) to examples/grpc_upstream, which runs for the row
# A row whose name ends in -tls is measured over HTTPS (nginx and portcullis with the same
# certificate). Every port is chosen free at run time. By default ROWS is every row, in order.
ROW_TABLE="
direct                      upstream    -                     /
nginx                       nginx       -                     /
haproxy                     haproxy     -                     /
caddy                       caddy       -                     /
pingap                      pingap      -                     /
pingora-bare                bare        -                     /
portcullis-plain            portcullis  plain.yaml            /
portcullis-tracing-down     portcullis  tracing-down.yaml     /
portcullis-traffic          portcullis  traffic.yaml          /
portcullis-edge             portcullis  edge.yaml             $EDGE_PATH  access-log
portcullis-auth             portcullis  auth.yaml             $EDGE_PATH  token
portcullis-ratelimit-local  portcullis  ratelimit-local.yaml  /
portcullis-ratelimit-redis  portcullis  ratelimit-redis.yaml  /           redis
portcullis-full             portcullis  full.yaml             $EDGE_PATH  token
portcullis-cache            portcullis  cache.yaml            /
portcullis-cache-json       portcullis  cache-gzip.yaml       /doc.json
portcullis-cache-gzip       portcullis  cache-gzip.yaml       /doc.json   gzip
varnish                     varnish     -                     /
varnish-gzip                varnish     -                     /doc.json   gzip
nginx-tls                   nginx       -                     /
portcullis-tls              portcullis  tls.yaml              /
nginx-h2-tls                nginx       -                     /           h2load
portcullis-h2-tls           portcullis  h2.yaml               /           h2load
grpc-direct                 grpc        -                     $GRPC_PATH  h2load,grpc
portcullis-grpc             portcullis  grpc.yaml             $GRPC_PATH  h2load,grpc
"
ROWS="${ROWS:-$(awk 'NF { printf "%s ", $1 }' <<<"$ROW_TABLE")}"

begin_run compare
# wrk's RSS_CONNECTIONS sockets, and a proxy's two per connection.
ulimit -n "$(ulimit -Hn)"
CERT_DIR="$WORK/certs"
CLK_TCK="$(getconf CLK_TCK)"
GATEWAY_OK=1
TABLE_ROWS=()
NOTES=()
# Extra request header of the row being measured (the auth rows' bearer token).
REQUEST_HEADER=""

note() {
	NOTES+=("$*")
	log "NOTE: $*"
}

# row_spec ROW — prints the row's server, config, path and needs; fails for an unknown row.
row_spec() {
	awk -v row="$1" '$1 == row { print $2, $3, $4, $5; found = 1 } END { exit !found }' <<<"$ROW_TABLE"
}

prepare() {
	local row
	for row in $ROWS; do
		row_spec "$row" >/dev/null || die "unknown row '$row'"
	done
	ensure_tools wrk:wrk nginx:nginx-light\|nginx haproxy:haproxy curl:curl taskset:util-linux
	((K6_RATE == 0)) || ensure_k6
	[[ " $ROWS " == *" caddy "* ]] && ensure_tools caddy:caddy
	[[ $(nproc) -ge 2 ]] || note "only $(nproc) CPU: the CPU 0 / CPU 1 split is meaningless"
	if [[ ${SKIP_BUILD:-0} != 1 ]] && ! build_release; then
		[[ -x $UPSTREAM_BIN ]] || die "build failed and there is no upstream binary"
		GATEWAY_OK=0
		note "cargo build failed: Portcullis rows skipped (upstream binary may be stale)"
	fi
	[[ -x $UPSTREAM_BIN ]] || die "missing $UPSTREAM_BIN (build with cargo build --release --example upstream)"
	((K6_RATE == 0)) || [[ -f $LOADTEST_DIR/fixed-rate.js ]] || die "missing loadtest/fixed-rate.js"
	if [[ " $ROWS " == *h2* || " $ROWS " == *grpc* ]]; then
		ensure_tools h2load:nghttp2-client
		# One gRPC message: uncompressed flag, 4-byte length (59), 59 bytes.
		{ printf '\x00\x00\x00\x00\x3b'; head -c 59 /dev/zero | tr '\0' 'm'; } >"$WORK/grpc-message.bin"
	fi
	if [[ " $ROWS " == *-tls* ]]; then
		ensure_tools openssl:openssl
		"$REPO_DIR/conf/make-test-certs.sh" "$CERT_DIR" edge localhost >/dev/null ||
			die "could not make the TLS test certificates"
	fi
	# The one upstream of every row (the gateway configs name it {upstream}).
	reserve_port 'PORT[upstream]'
}

# --- /proc accounting ------------------------------------------------------------------------

# The process and its direct children (nginx workers).
proc_tree() {
	echo "$1"
	pgrep -P "$1" || true
}

# proc_sum PID FILE AWK — the sum of what AWK prints for /proc/P/FILE over PID and its children.
proc_sum() {
	local pid total=0 n
	for pid in $(proc_tree "$1"); do
		n="$(awk "$3" "/proc/$pid/$2" 2>/dev/null)" || n=0
		total=$((total + ${n:-0}))
	done
	echo "$total"
}

# utime + stime: the 12th and 13th fields after "pid (comm) ".
cpu_ticks() { proc_sum "$1" stat '{ sub(/^.*\) /, ""); print $12 + $13 }'; }

peak_rss_kib() { proc_sum "$1" status '/^VmHWM:/ { print $2 }'; }

# peak_rss_mib PID — peak_rss_kib in MiB, one decimal, as the table shows it.
peak_rss_mib() { awk -v k="$(peak_rss_kib "$1")" 'BEGIN {printf "%.1f", k / 1024}'; }

# wrk_socket_errors FILE — connect, read, write and timeout errors of a wrk report.
wrk_socket_errors() { awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$1"; }

# --- servers ----------------------------------------------------------------------------------
# start_SERVER ROW CONF — starts what serves a row, its output in $WORK/ROW.log, and sets
# PROXY_PID and PROXY_PORT; fails when it does not come up.

start_upstream_process() {
	start_bg upstream "$LOAD_CPU" INT "$WORK/upstream.log" \
		"$UPSTREAM_BIN" --listen "127.0.0.1:${PORT[upstream]}" --name bench --threads 1 --body-size 64
	UPSTREAM_PID=$STARTED_PID
	wait_http "http://127.0.0.1:${PORT[upstream]}/healthz" "$UPSTREAM_PID" 10 || die "upstream did not start"
}

# The "direct" row measures the upstream itself, which runs for the whole comparison.
start_upstream() {
	PROXY_PID=$UPSTREAM_PID
	PROXY_PORT=${PORT[upstream]}
}

start_nginx() {
	local row="$1" dir="$WORK/$1" user_line=""
	reserve_port PROXY_PORT
	local listen="listen 127.0.0.1:$PROXY_PORT;" http2=""
	[[ $row == *-h2-tls ]] && http2=" http2"
	if [[ $row == *-tls ]]; then
		listen="listen 127.0.0.1:$PROXY_PORT ssl$http2;
        ssl_certificate $CERT_DIR/edge.pem;
        ssl_certificate_key $CERT_DIR/edge.key;
        ssl_protocols TLSv1.2 TLSv1.3;"
	fi
	mkdir -p "$dir"
	# As root, nginx would switch its worker to "nobody"; keep it the current user.
	[[ $EUID -eq 0 ]] && user_line="user $(id -un) $(id -gn);"
	cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream app {
        server 127.0.0.1:${PORT[upstream]};
        keepalive 64;
    }
    server {
        $listen
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
	start_bg "$row" "$PROXY_CPU" TERM "$WORK/$row.log" nginx -p "$dir" -e stderr -c "$dir/nginx.conf"
	PROXY_PID=$STARTED_PID
	wait_http "$(row_url "$row" /)" "$PROXY_PID" 10
}

start_haproxy() {
	local row="$1" dir="$WORK/$1"
	reserve_port PROXY_PORT
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
    bind 127.0.0.1:$PROXY_PORT
    default_backend app

backend app
    server app1 127.0.0.1:${PORT[upstream]}
EOF
	start_bg "$row" "$PROXY_CPU" TERM "$WORK/$row.log" haproxy -db -f "$dir/haproxy.cfg"
	PROXY_PID=$STARTED_PID
	wait_http "$(row_url "$row" /)" "$PROXY_PID" 10
}

# Caddy (Debian caddy): reverse_proxy on one OS thread for Go code (GOMAXPROCS=1), no admin
# endpoint, no automatic HTTPS, no access log (Caddy logs none unless asked).
start_caddy() {
	local row="$1" dir="$WORK/$1"
	command -v caddy >/dev/null || return 1
	reserve_port PROXY_PORT
	mkdir -p "$dir"
	cat >"$dir/Caddyfile" <<EOF
{
    admin off
    auto_https off
}
http://127.0.0.1:$PROXY_PORT {
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:${PORT[upstream]}
}
EOF
	# Caddy keeps state under XDG_DATA_HOME/XDG_CONFIG_HOME: keep it in the run's directory.
	start_bg "$row" "$PROXY_CPU" TERM "$WORK/$row.log" env GOMAXPROCS=1 \
		XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" \
		caddy run --adapter caddyfile --config "$dir/Caddyfile"
	PROXY_PID=$STARTED_PID
	wait_http "$(row_url "$row" /)" "$PROXY_PID" 20
}

# pingap: one server, one location, one upstream, one thread, logs at error level.
start_pingap() {
	local row="$1" dir="$WORK/$1"
	[[ -x $PINGAP_BIN ]] || return 1
	reserve_port PROXY_PORT
	mkdir -p "$dir"
	cat >"$dir/pingap.toml" <<EOF
[basic]
name = "bench"
threads = 1
log_level = "ERROR"
pid_file = "$dir/pingap.pid"
upgrade_sock = "$dir/pingap_upgrade.sock"

[upstreams.app]
addrs = ["127.0.0.1:${PORT[upstream]}"]

[locations.all]
upstream = "app"
path = "/"

[servers.bench]
addr = "127.0.0.1:$PROXY_PORT"
locations = ["all"]
EOF
	start_bg "$row" "$PROXY_CPU" INT "$WORK/$row.log" "$PINGAP_BIN" -c "$dir/pingap.toml"
	PROXY_PID=$STARTED_PID
	wait_http "$(row_url "$row" /)" "$PROXY_PID" 20
}

# start_grpc_upstream — examples/grpc_upstream on PORT[grpc_upstream] (once), on the load CPU.
start_grpc_upstream() {
	[[ -n ${GRPC_PID:-} ]] && kill -0 "$GRPC_PID" 2>/dev/null && return 0
	[[ -x $GRPC_BIN ]] || return 1
	[[ -n ${PORT[grpc_upstream]:-} ]] || reserve_port 'PORT[grpc_upstream]'
	start_bg grpc-upstream "$LOAD_CPU" TERM "$WORK/grpc-upstream.log" "$GRPC_BIN" --listen "127.0.0.1:${PORT[grpc_upstream]}"
	GRPC_PID=$STARTED_PID
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/${PORT[grpc_upstream]}") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# The "grpc-direct" row measures the gRPC upstream itself.
start_grpc() {
	start_grpc_upstream || return 1
	PROXY_PID=$GRPC_PID
	PROXY_PORT=${PORT[grpc_upstream]}
}

# Pingora with no logic at all: the ceiling of any Pingora-based gateway.
start_bare() {
	local row="$1"
	[[ -x $BARE_BIN ]] || return 1
	reserve_port PROXY_PORT
	start_bg "$row" "$PROXY_CPU" INT "$WORK/$row.log" \
		"$BARE_BIN" --listen "127.0.0.1:$PROXY_PORT" --upstream "127.0.0.1:${PORT[upstream]}"
	PROXY_PID=$STARTED_PID
	wait_http "$(row_url "$row" /)" "$PROXY_PID" 10
}

start_portcullis() {
	local row="$1" conf="$2"
	PROXY_PORT=${PORT[listen]}
	# SIGINT: Pingora's fast shutdown (SIGTERM would wait for the grace period).
	start_bg "$row" "$PROXY_CPU" INT "$WORK/$row.log" "$GATEWAY_BIN" -c "$conf"
	PROXY_PID=$STARTED_PID
	wait_http "http://127.0.0.1:${PORT[admin]}/readyz" "$PROXY_PID" 30
}

# Varnish (Debian varnish) caching every answer for an hour, one worker pool, in memory;
# the -gzip row compresses on insert (beresp.do_gzip) and serves gzip hits as stored.
start_varnish() {
	local row="$1" dir="$WORK/$1" gzip=""
	command -v varnishd >/dev/null || return 1
	reserve_port PROXY_PORT
	mkdir -p "$dir"
	[[ $row == *-gzip ]] && gzip="set beresp.do_gzip = true;"
	cat >"$dir/bench.vcl" <<EOF
vcl 4.1;
backend app { .host = "127.0.0.1"; .port = "${PORT[upstream]}"; }
sub vcl_backend_response {
    set beresp.ttl = 1h;
    $gzip
}
EOF
	local jail=()
	# As root, varnishd would switch to its own users; keep the current one.
	[[ $EUID -eq 0 ]] && jail=(-j none)
	start_bg "$row" "$PROXY_CPU" TERM "$WORK/$row.log" varnishd -F "${jail[@]}" -n "$dir/state" \
		-a "127.0.0.1:$PROXY_PORT" -f "$dir/bench.vcl" -s malloc,256m -p thread_pools=1
	PROXY_PID=$STARTED_PID
	wait_http "$(row_url "$row" /)" "$PROXY_PID" 20
}

# start_redis — a redis-server of the run's own (no persistence) on PORT[redis], on the
# load CPU like the upstream: it is a dependency of the gateway, not the gateway.
start_redis() {
	command -v redis-server >/dev/null || return 1
	start_bg redis "$LOAD_CPU" TERM "$WORK/redis.log" \
		redis-server --port "${PORT[redis]}" --bind 127.0.0.1 --save '' --appendonly no
	local i
	for ((i = 0; i < 100; i++)); do
		(exec 3<>"/dev/tcp/127.0.0.1/${PORT[redis]}") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# row_url ROW PATH — where a row is measured, once its server runs.
row_url() {
	if [[ $1 == *-tls ]]; then
		echo "https://localhost:$PROXY_PORT$2"
	else
		echo "http://127.0.0.1:$PROXY_PORT$2"
	fi
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

# check_proxy NAME URL — one request must come back 200 with the upstream's body: 64 bytes,
# or the 16 KiB document at /doc.json; gzip-encoded when the row asks for gzip.
check_proxy() {
	local name="$1" url="$2" out size want=64 encoding=""
	local header=()
	[[ -n $REQUEST_HEADER ]] && header=(-H "$REQUEST_HEADER")
	[[ $url == */doc.json ]] && want=16384
	out="$(curl -sk "${header[@]}" -D "$WORK/check.head" -o "$WORK/check.body" -w '%{http_code}' --max-time 2 "$url")" || true
	encoding="$(awk -F': *' 'tolower($1) == "content-encoding" { gsub(/\r/, "", $2); print $2 }' "$WORK/check.head")"
	if [[ $REQUEST_HEADER == Accept-Encoding:*gzip* ]]; then
		size="$(gzip -dc "$WORK/check.body" 2>/dev/null | wc -c)"
		[[ $encoding == gzip ]] || out+=" (Content-Encoding '$encoding', want gzip)"
	else
		size="$(wc -c <"$WORK/check.body")"
	fi
	if [[ "$out $size" != "200 $want" ]]; then
		note "$name: sanity request to $url gave '$out $size' (want '200 $want')"
		return 1
	fi
}

# measure NAME URL PID — warm-up, measured wrk run, one table row.
measure() {
	local name="$1" url="$2" pid="$3" out="$WORK/wrk-$1.txt"
	check_proxy "$name" "$url" || true
	local header=()
	[[ -n $REQUEST_HEADER ]] && header=(-H "$REQUEST_HEADER")
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "${header[@]}" "$url" >/dev/null
	local t0 t1
	t0="$(cpu_ticks "$pid")"
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${header[@]}" "$url" >"$out"
	t1="$(cpu_ticks "$pid")"
	kill -0 "$pid" 2>/dev/null || note "$name: process exited during the run"

	local rps requests p50 p99 errors non2xx rss_mib
	rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
	requests="$(awk '/requests in/ {print $1}' "$out")"
	p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
	p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
	non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")"
	errors="$(wrk_socket_errors "$out")"
	rss_mib="$(peak_rss_mib "$pid")"
	local cpu_us
	cpu_us="$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v n="${requests:-0}" \
		'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "n/a" }')"
	local errcol="${non2xx:-0} / ${errors:-0}"
	[[ $errcol == "0 / 0" ]] || note "$name: non-2xx / socket errors = $errcol"
	local k6_p50=n/a k6_p99=n/a
	if ((K6_RATE > 0)); then
		read -r k6_p50 k6_p99 < <(k6_latency "$name" "$url")
	fi
	local many_rss=n/a
	((RSS_CONNECTIONS > 0)) && many_rss="$(rss_at_many_connections "$name" "$url" "$pid")"
	TABLE_ROWS+=("$name|$rps|$p50|$p99|$cpu_us|$rss_mib|$many_rss|$k6_p50|$k6_p99|$errcol")
	log "$name: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, ${cpu_us} µs CPU/req; at $K6_RATE req/s p50 $k6_p50 ms, p99 $k6_p99 ms"
}

# rss_at_many_connections NAME URL PID — the proxy's peak RSS (MiB) after RSS_CONNECTIONS
# keep-alive connections sent it requests for RSS_DURATION.
rss_at_many_connections() {
	local name="$1" url="$2" pid="$3" out="$WORK/wrk-$1-rss.txt"
	local header=()
	[[ -n $REQUEST_HEADER ]] && header=(-H "$REQUEST_HEADER")
	taskset -c "$LOAD_CPU" wrk -t1 -c"$RSS_CONNECTIONS" -d"$RSS_DURATION" "${header[@]}" "$url" >"$out" 2>&1 ||
		note "$name: wrk with $RSS_CONNECTIONS connections failed"
	local errors
	errors="$(wrk_socket_errors "$out")"
	((${errors:-0} == 0)) || note "$name: $errors socket errors with $RSS_CONNECTIONS connections"
	peak_rss_mib "$pid"
}

# measure_h2load NAME URL PID NEEDS — warm-up and a measured h2load run over HTTP/2 (gRPC
# headers and message for rows that need grpc), one table row. h2load has no percentiles:
# the p50 and p99 columns show its mean and max request time.
measure_h2load() {
	local name="$1" url="$2" pid="$3" needs="$4" out="$WORK/h2load-$1.txt"
	local args=(-t1 -c"$CONNECTIONS" -m10)
	if [[ $needs == *grpc* ]]; then
		args+=(-d "$WORK/grpc-message.bin" -H 'content-type: application/grpc' -H 'te: trailers')
	fi
	local t0 t1
	taskset -c "$LOAD_CPU" h2load "${args[@]}" -D "${WARMUP%s}" "$url" >/dev/null 2>&1 || true
	t0="$(cpu_ticks "$pid")"
	if ! taskset -c "$LOAD_CPU" h2load "${args[@]}" -D "${DURATION%s}" "$url" >"$out" 2>&1; then
		note "$name: h2load failed: $(tail -n 2 "$out" | tr '\n' ' ')"
	fi
	t1="$(cpu_ticks "$pid")"
	kill -0 "$pid" 2>/dev/null || note "$name: process exited during the run"
	local rps requests succeeded mean max rss_mib cpu_us
	rps="$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$out")"
	read -r requests succeeded < <(awk '/^requests:/ { print $2, $8 }' "$out")
	mean="$(to_ms "$(awk '/^time for request:/ { print $6 }' "$out")")"
	max="$(to_ms "$(awk '/^time for request:/ { print $5 }' "$out")")"
	rss_mib="$(peak_rss_mib "$pid")"
	cpu_us="$(awk -v d="$((t1 - t0))" -v hz="$CLK_TCK" -v n="${succeeded:-0}" \
		'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "n/a" }')"
	local failed=$((${requests:-0} - ${succeeded:-0}))
	((failed == 0 && ${succeeded:-0} > 0)) || note "$name: $failed of ${requests:-0} h2load requests failed"
	TABLE_ROWS+=("$name|${rps:-n/a}|$mean|$max|$cpu_us|$rss_mib|n/a|n/a|n/a|$failed / 0")
	log "$name (h2load): ${rps:-n/a} req/s, mean ${mean} ms, max ${max} ms, ${cpu_us} µs CPU/req"
}

# k6_latency NAME URL — p50 and p99 (ms) at a constant K6_RATE requests/s.
k6_latency() {
	local name="$1" url="$2" summary="$WORK/k6-$1.json"
	if ! taskset -c "$LOAD_CPU" env URL="$url" HEADER="$REQUEST_HEADER" RATE="$K6_RATE" DURATION="$K6_DURATION" \
		k6 run --quiet --summary-export "$summary" "$LOADTEST_DIR/fixed-rate.js" >"$WORK/k6-$name.log" 2>&1; then
		note "$name: k6 at $K6_RATE req/s failed its thresholds (see the row's latency)"
	fi
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["metrics"]["http_req_duration"]
print("%.3f %.3f" % (d["med"], d["p(99)"]))' "$summary" 2>/dev/null || echo "n/a n/a"
}

skip_row() {
	TABLE_ROWS+=("$1|n/a|n/a|n/a|n/a|n/a|n/a|n/a|n/a|${2//|//}")
	note "$1: $2"
}

# --- rows -------------------------------------------------------------------------------------

# start_row ROW SERVER CONF NEEDS — starts what the row needs, then its server; when that
# fails, says why in SKIP_REASON.
start_row() {
	local row="$1" server="$2" conf="$3" needs="$4" rendered="$WORK/$1.yaml"
	if [[ $server == portcullis || $server == bare ]] && ((!GATEWAY_OK)); then
		SKIP_REASON="not built"
		return 1
	fi
	if [[ $server == varnish ]] && ! command -v varnishd >/dev/null; then
		SKIP_REASON="varnishd is not installed (Debian varnish)"
		return 1
	fi
	if [[ $server == caddy ]] && ! command -v caddy >/dev/null; then
		SKIP_REASON="caddy is not installed (Debian caddy)"
		return 1
	fi
	if [[ $server == pingap && ! -x $PINGAP_BIN ]]; then
		SKIP_REASON="no pingap binary at $PINGAP_BIN (hand-run row: cargo install pingap --locked; set PINGAP_BIN)"
		return 1
	fi
	[[ $conf == - ]] || render_conf "$LOADTEST_DIR/conf/$conf" "$rendered"
	if [[ $needs == *redis* ]] && ! start_redis; then
		SKIP_REASON="redis-server did not start (scripts/setup-debian.sh installs it)"
		return 1
	fi
	[[ $needs == *gzip* ]] && REQUEST_HEADER="Accept-Encoding: gzip"
	if [[ $needs == *grpc* ]] && ! start_grpc_upstream; then
		SKIP_REASON="examples/grpc_upstream did not start (cargo build --example grpc_upstream)"
		return 1
	fi
	if [[ $needs == *token* ]]; then
		local token
		if ! token="$("$FIXTURE_BIN" "$WORK/${conf%.yaml}-jwks.json")"; then
			SKIP_REASON="examples/auth_fixture failed (build it with cargo build --release --example auth_fixture)"
			return 1
		fi
		REQUEST_HEADER="Authorization: Bearer $token"
	fi
	if ! "start_$server" "$row" "$rendered"; then
		SKIP_REASON="failed to start: $(tail -n 3 "$WORK/$row.log" 2>/dev/null | tr '\n' ' ')"
		return 1
	fi
}

run_row() {
	local row="$1" server conf path needs
	read -r server conf path needs < <(row_spec "$row")
	if ! start_row "$row" "$server" "$conf" "$needs"; then
		REQUEST_HEADER=""
		skip_row "$row" "$SKIP_REASON"
		return
	fi
	if [[ $needs == *h2load* ]]; then
		measure_h2load "$row" "$(row_url "$row" "$path")" "$PROXY_PID" "$needs"
	else
		measure "$row" "$(row_url "$row" "$path")" "$PROXY_PID"
	fi
	REQUEST_HEADER=""
	if [[ $needs == *access-log* ]]; then
		local lines access_log="$WORK/${conf%.yaml}-access.log"
		lines="$(wc -l <"$access_log" 2>/dev/null || echo 0)"
		log "$row: access log has $lines lines"
		((lines > 0)) || note "$row: access log $access_log is empty"
	fi
	[[ $server == upstream ]] || stop_bg "$PROXY_PID"
	[[ $server == grpc ]] && GRPC_PID=""
	return 0
}

render_table() {
	# Ratios are against nginx, and for the TLS rows against nginx-tls.
	local row name rps p50 p99 cpu rss many_rss k6p50 k6p99 errs ratio cpu_ratio ref
	declare -A ref_rps ref_cpu
	for row in "${TABLE_ROWS[@]}"; do
		IFS='|' read -r name rps p50 p99 cpu _ <<<"$row"
		if [[ $name == nginx || $name == nginx-tls || $name == nginx-h2-tls || $name == grpc-direct ]]; then
			ref_rps[$name]="$rps"
			ref_cpu[$name]="$cpu"
		fi
	done
	echo "| name | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | peak RSS MiB @${RSS_CONNECTIONS} conns | k6 p50 ms @${K6_RATE}/s | k6 p99 ms @${K6_RATE}/s | req/s vs nginx | CPU/req vs nginx | non-2xx / socket errors |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for row in "${TABLE_ROWS[@]}"; do
		IFS='|' read -r name rps p50 p99 cpu rss many_rss k6p50 k6p99 errs <<<"$row"
		ref=nginx
		[[ $name == *-tls ]] && ref=nginx-tls
		[[ $name == *-h2-tls ]] && ref=nginx-h2-tls
		[[ $name == *grpc* ]] && ref=grpc-direct
		ratio="$(awk -v a="$rps" -v b="${ref_rps[$ref]:-}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "n/a" }')"
		cpu_ratio="$(awk -v a="$cpu" -v b="${ref_cpu[$ref]:-}" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "n/a" }')"
		echo "| $name | $rps | $p50 | $p99 | $cpu | $rss | $many_rss | $k6p50 | $k6p99 | $ratio | $cpu_ratio | $errs |"
	done
}

# render_targets — issue #18's targets as ratios of this run's rows (rows not run: n/a).
render_targets() {
	declare -A rps cpu many
	local row name r p50 p99 c rss m _
	for row in "${TABLE_ROWS[@]}"; do
		IFS='|' read -r name r p50 p99 c rss m _ <<<"$row"
		rps[$name]="$r"
		cpu[$name]="$c"
		many[$name]="$m"
	done
	# target LABEL VALUE GOAL — one line; VALUE is a ratio or n/a.
	ratio() {
		awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'
	}
	target() {
		local verdict="n/a"
		[[ $2 != n/a ]] && verdict="$(awk -v v="$2" -v goal="$3" -v op="$4" 'BEGIN {
			met = (op == ">=") ? (v + 0 >= goal + 0) : (v + 0 <= goal + 0)
			print (met ? "met" : "missed") }')"
		echo "| $1 | $2 | $4 $3 | $verdict |"
	}
	echo
	echo "Targets (issue #18), ratios within this run:"
	echo
	echo "| target | value | goal | |"
	echo "|---|---:|---:|---|"
	target "plain req/s ÷ pingap req/s" "$(ratio "${rps[portcullis-plain]:-}" "${rps[pingap]:-}")" 1.1 ">="
	target "plain CPU/req ÷ pingap CPU/req" "$(ratio "${cpu[portcullis-plain]:-}" "${cpu[pingap]:-}")" 1.0 "<="
	target "plain req/s ÷ nginx req/s (stretch)" "$(ratio "${rps[portcullis-plain]:-}" "${rps[nginx]:-}")" 0.8 ">="
	target "full req/s ÷ plain req/s" "$(ratio "${rps[portcullis-full]:-}" "${rps[portcullis-plain]:-}")" 0.9 ">="
	target "plain req/s ÷ pingora-bare req/s" "$(ratio "${rps[portcullis-plain]:-}" "${rps[pingora-bare]:-}")" 0.95 ">="
	target "plain CPU/req ÷ pingora-bare CPU/req" "$(ratio "${cpu[portcullis-plain]:-}" "${cpu[pingora-bare]:-}")" 1.05 "<="
	target "plain peak RSS MiB @$RSS_CONNECTIONS conns" "${many[portcullis-plain]:-n/a}" 40 "<="
	target "cache hit req/s ÷ varnish (identity, /)" "$(ratio "${rps[portcullis-cache]:-}" "${rps[varnish]:-}")" 1.2 ">="
	target "cache hit req/s ÷ plain" "$(ratio "${rps[portcullis-cache]:-}" "${rps[portcullis-plain]:-}")" 2.0 ">="
	target "gzip hit req/s ÷ varnish-gzip" "$(ratio "${rps[portcullis-cache-gzip]:-}" "${rps[varnish-gzip]:-}")" 1.2 ">="
	target "gzip hit req/s ÷ identity hit (/doc.json)" "$(ratio "${rps[portcullis-cache-gzip]:-}" "${rps[portcullis-cache-json]:-}")" 0.9 ">="
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
	echo "- direct: CPU and RSS columns are the upstream's own; edge row: $EDGE_PATH with routing, metrics, JSON access log to a file; cache row: the plain route with its edge cache on, every measured request a hit (target: ≥ 2× portcullis-plain); tls rows: HTTP/1.1 keep-alive over TLS with the same certificate; pingora-bare: Pingora with no logic (examples/bare_proxy), the ceiling for a Pingora-based gateway"
	command -v caddy >/dev/null && echo "- caddy $(caddy version 2>/dev/null | awk '{print $1}') (GOMAXPROCS=1)"
	[[ -x $PINGAP_BIN ]] && echo "- $("$PINGAP_BIN" --version 2>/dev/null | head -n1) (threads = 1)"
	echo "- peak RSS @N conns: after the row's measured run, wrk -c$RSS_CONNECTIONS -d$RSS_DURATION on the same URL; VmHWM of the proxy's processes"
	echo "- auth row: the edge row's route with key_auth + jwt (RS256 JWKS file); requests carry one bearer token and no API key"
	echo "- compressed cache rows (/doc.json, the upstream's 16 KiB JSON): portcullis-cache-json an identity hit, portcullis-cache-gzip a gzip hit (Accept-Encoding: gzip; compressed once on insert), varnish / varnish-gzip the same with Varnish (beresp.do_gzip on the -gzip row); targets: gzip hit ≥ 0.9× identity hit, cache hit ≥ 1.2× Varnish"
	echo
	render_table
	render_targets
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
	start_upstream_process
	local row
	for row in $ROWS; do
		run_row "$row"
	done
	local report
	report="$RESULTS_DIR/compare-$(date +%Y%m%d-%H%M%S).md"
	render_report | tee "$report"
	if python3 "$LOADTEST_DIR/chart.py" "$report" >"${report%.md}.svg"; then
		log "written to $report and ${report%.md}.svg"
	else
		note "chart not drawn"
	fi
	if ((QUICK)); then
		# The quick run checks that every row produced numbers, not what they are.
		local row
		for row in "${TABLE_ROWS[@]}"; do
			[[ $(cut -d'|' -f2 <<<"$row") != n/a ]] || die "row ${row%%|*} produced no numbers"
			[[ ${row##*|} == "0 / 0" ]] || die "row ${row%%|*} had errors: ${row##*|}"
		done
		log "quick run: every row measured"
	fi
}

main "$@"
