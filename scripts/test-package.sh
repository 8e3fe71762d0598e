#!/usr/bin/env bash
# Builds the Debian package (`cargo deb`), installs it on this machine with apt (as root,
# as CI runs), checks what it installed — the binary, the packaged configuration with
# `portcullis check`, the systemd unit with `systemd-analyze verify`, the conffile, the
# system user, a gateway started from that configuration as that user — and purges it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

fail() { echo "test-package: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root: it installs the package"
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd
fi

cargo deb
version=$(cargo metadata --no-deps --format-version 1 |
  sed -n 's/.*"name":"portcullis","version":"\([^"]*\)".*/\1/p')
deb=$(ls -t target/debian/portcullis_"$version"*_amd64.deb | head -n1)
echo "test-package: $deb"

# What is in it.
contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/portcullis ./etc/portcullis/portcullis.yaml \
  ./usr/lib/systemd/system/portcullis.service ./usr/share/doc/portcullis/README.md \
  ./usr/share/doc/portcullis/docs/configuration.md \
  ./usr/share/portcullis/grafana/portcullis.json \
  ./usr/share/portcullis/prometheus/portcullis-rules.yml; do
  grep -q " $path\$" <<<"$contents" || fail "$path is not in $deb"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/portcullis/portcullis.yaml ||
  fail "/etc/portcullis/portcullis.yaml is not a conffile"

# Installed for real, removed again whatever happens.
trap 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq portcullis >/dev/null 2>&1 || true' EXIT
install_deb() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb"; }
install_deb || { apt-get update -qq && install_deb; }

/usr/bin/portcullis version
/usr/bin/portcullis check -c /etc/portcullis/portcullis.yaml
getent passwd portcullis >/dev/null || fail "no portcullis system user"
[ "$(stat -c %G /etc/portcullis/portcullis.yaml)" = portcullis ] ||
  fail "the portcullis group cannot read the configuration"
systemd-analyze verify /usr/lib/systemd/system/portcullis.service
unit=$(systemctl cat portcullis.service 2>/dev/null || cat /usr/lib/systemd/system/portcullis.service)
for line in PIDFile=/run/portcullis/portcullis.pid User=portcullis \
  AmbientCapabilities=CAP_NET_BIND_SERVICE 'ExecReload=/bin/kill -HUP $MAINPID' LimitNOFILE=; do
  grep -qF "$line" <<<"$unit" || fail "the unit lacks $line"
done
grep -q 'pid_file: /run/portcullis/portcullis.pid' /etc/portcullis/portcullis.yaml ||
  fail "the configuration's pid file is not the unit's PIDFile"

# The packaged configuration serves, as the unit runs it (its user, /run/portcullis),
# on ports of its own so that nothing else on this machine is in the way.
run=/run/portcullis
install -d -o portcullis -g portcullis "$run"
port() { echo $((20000 + RANDOM % 10000)); }
listen=$(port) admin=$(port)
sed -e "s/0.0.0.0:8080/127.0.0.1:$listen/" -e "s/127.0.0.1:9901/127.0.0.1:$admin/" \
  /etc/portcullis/portcullis.yaml >"$run/test.yaml"
chown portcullis "$run/test.yaml"
setpriv --reuid=portcullis --regid=portcullis --init-groups \
  /usr/bin/portcullis -c "$run/test.yaml" >/dev/null 2>"$run/test.log" &
gateway=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
[ "$(curl -fsS "http://127.0.0.1:$listen/ping")" = pong ] || { cat "$run/test.log"; fail "no pong"; }
[ "$(cat "$run/portcullis.pid")" = "$gateway" ] || fail "the pid file does not name the gateway"
kill -TERM "$gateway"
wait "$gateway" || fail "the gateway did not exit cleanly"
[ ! -e "$run/portcullis.pid" ] || fail "the pid file outlived the gateway"
grep -q "listening on 127.0.0.1:$listen" "$run/test.log" || { cat "$run/test.log"; fail "no start-up line"; }
rm -f "$run/test.yaml" "$run/test.log"

DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq portcullis
[ ! -e /usr/bin/portcullis ] || fail "purge left /usr/bin/portcullis"
trap - EXIT
echo "test-package: 1 passed, 0 failed"
