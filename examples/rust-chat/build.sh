#!/usr/bin/env bash
# Builds this example into ${1:-./out}/rust-chat.wasm.
set -euo pipefail
EXAMPLE=rust-chat
source "$(dirname "$0")/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"
build_rust_example chat rust-chat "$OUT"
say "built $OUT/rust-chat.wasm"
