#!/usr/bin/env bash
# Builds this example into ${1:-./out}/rust-ticker.wasm.
set -euo pipefail
EXAMPLE=rust-ticker
source "$(dirname "$0")/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"
build_rust_example ticker rust-ticker "$OUT"
say "built $OUT/rust-ticker.wasm"
