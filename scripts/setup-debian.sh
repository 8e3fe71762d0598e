#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Portcullis: cmake and the
# OpenSSL headers for Pingora, and the tools the tests and load tests drive (promtool from
# prometheus checks the alert rules, headless chromium the admin status page). Idempotent.
set -euo pipefail

packages=(cmake pkg-config libssl-dev build-essential curl openssl redis-server prometheus chromium haproxy
  python3 python3-pip)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust from your distribution or rustup first" >&2
  exit 1
fi

# httplint (REDbot's HTTP linter) checks the gateway's answers in tests/http_semantics.rs.
if ! python3 -c "import httplint" >/dev/null 2>&1; then
  python3 -m pip install --quiet httplint 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages httplint
fi
