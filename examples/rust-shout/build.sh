#!/usr/bin/env bash
# Builds this example into ${1:-./out}/rust-shout.wasm.
set -euo pipefail
EXAMPLE=rust-shout
source "$(dirname "$0")/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"
build_rust_example shout rust-shout "$OUT"
say "built $OUT/rust-shout.wasm"
