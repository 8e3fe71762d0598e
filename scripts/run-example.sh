#!/usr/bin/env bash
# Builds Portcullis and the example upstream, starts two example upstream servers on
# 127.0.0.1:9001 and :9002, and runs the gateway in the foreground on conf/portcullis.yaml.
# Try: curl localhost:8080/api/echo   (Ctrl-C stops everything)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-debian.sh
cargo build --release --bin portcullis --example upstream

target/release/examples/upstream --listen 127.0.0.1:9001 --name example-a &
upstream_a=$!
target/release/examples/upstream --listen 127.0.0.1:9002 --name example-b &
upstream_b=$!
trap 'kill $upstream_a $upstream_b 2>/dev/null || true' EXIT

target/release/portcullis -c conf/portcullis.yaml
