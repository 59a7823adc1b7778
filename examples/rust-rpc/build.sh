#!/usr/bin/env bash
# Builds this example into ${1:-./out}/rust-rpc.wasm.
set -euo pipefail
EXAMPLE=rust-rpc
source "$(dirname "$0")/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"
build_rust_example rust-rpc rust-rpc "$OUT"
say "built $OUT/rust-rpc.wasm"
