#!/usr/bin/env bash
# Installs Portcullis without a Debian package (on Debian: `cargo deb`, see
# docs/operations.md): builds the release binary and installs it as $PREFIX/bin/portcullis
# (default /usr/local), the configuration as /etc/portcullis/portcullis.yaml unless one is
# there, and, as root, the systemd unit and a `portcullis` system user. DESTDIR stages the
# files elsewhere (for a package build); then no user is created.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}

cargo build --release --locked --bin portcullis
install -D -m 0755 target/release/portcullis "$DESTDIR$PREFIX/bin/portcullis"
config="$DESTDIR/etc/portcullis/portcullis.yaml"
if [ -e "$config" ]; then
  echo "kept $config"
else
  install -D -m 0640 conf/debian/portcullis.yaml "$config"
fi
unit="$DESTDIR/etc/systemd/system/portcullis.service"
install -d "$(dirname "$unit")"
sed "s|/usr/bin/portcullis|$PREFIX/bin/portcullis|g" conf/portcullis.service >"$unit"
chmod 0644 "$unit"

if [ -z "$DESTDIR" ] && [ "$(id -u)" -eq 0 ]; then
  getent passwd portcullis >/dev/null ||
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin portcullis
  chgrp portcullis "$config"
  command -v systemctl >/dev/null 2>&1 && systemctl daemon-reload || true
  echo "installed: edit $config, then: systemctl enable --now portcullis"
else
  echo "installed under ${DESTDIR:-$PREFIX}: as root, create the portcullis user (see conf/portcullis.service)"
fi
