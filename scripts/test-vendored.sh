#!/usr/bin/env bash
# Runs a vendored Pingora crate's own tests: `scripts/test-vendored.sh pingora-core --lib
# protocols::http::v1`. Cargo makes a path dependency inside the workspace a member of it,
# and a crate with dev-dependencies can only be tested as a member, which would put its
# dev-dependencies in our Cargo.lock and its code under our clippy; so the crate is copied
# out of the tree and tested as its own workspace (its own lock file, resolved on the first
# run), built into target/vendor-tests.
set -euo pipefail
cd "$(dirname "$0")/.."
crate=${1:?usage: scripts/test-vendored.sh CRATE [cargo test arguments]}
shift
[ -f "vendor/$crate/Cargo.toml" ] || { echo "no vendor/$crate" >&2; exit 1; }
copy="${TMPDIR:-/tmp}/portcullis-vendor-tests/$crate"
mkdir -p "$copy"
# by content, and without the sources' times: a file changed since the last run is newer than
# that build, so cargo rebuilds it
rsync -rlp --checksum --delete --exclude Cargo.lock --exclude target "vendor/$crate/" "$copy/"
export CARGO_TARGET_DIR="$PWD/target/vendor-tests"
cd "$copy"
exec cargo test "$@"
