#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Portcullis: cmake and the
# OpenSSL headers for Pingora, and the tools the tests and load tests drive (promtool from
# prometheus checks the alert rules, headless chromium the admin status page), and the
# Rust toolchain of rust-toolchain.toml (with rustup) when cargo is missing or older.
# Idempotent.
set -euo pipefail

packages=(cmake pkg-config libssl-dev build-essential curl openssl redis-server prometheus chromium haproxy
  python3 python3-pip dnsmasq-base)
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

# Rust: the toolchain rust-toolchain.toml names. The distribution's Rust is older than
# the lockfile needs, so a missing or older cargo is replaced by rustup's.
cd "$(dirname "$0")/.."
toolchain=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
export PATH="$HOME/.cargo/bin:$PATH"
cargo_version() { cargo --version 2>/dev/null | awk '{print $2}'; }
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
if command -v rustup >/dev/null 2>&1; then
  if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy
  fi
elif ! command -v cargo >/dev/null 2>&1 || ! at_least "$(cargo_version)" "$toolchain"; then
  echo "installing Rust $toolchain with rustup (found: cargo $(cargo_version || true))" >&2
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --no-modify-path --profile minimal --default-toolchain "$toolchain" \
      --component rustfmt,clippy
  echo "Rust is in ~/.cargo/bin: add it to PATH (. \"\$HOME/.cargo/env\")" >&2
fi
if ! at_least "$(cargo_version)" "$toolchain"; then
  echo "cargo $(cargo_version) is older than Rust $toolchain (rust-toolchain.toml)" >&2
  exit 1
fi

# httplint (REDbot's HTTP linter) checks the gateway's answers in tests/http_semantics.rs.
if ! python3 -c "import httplint" >/dev/null 2>&1; then
  python3 -m pip install --quiet httplint 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages httplint
fi
