#!/usr/bin/env bash
# Builds this example into ${1:-./out}/c-stats.wasm: clang + wasi-libc from
# Debian, bindings from `wit-bindgen c`, then `wasm-tools component new` with
# the WASI preview1 adapter (build_c_component, templates/toolchains.sh).
set -euo pipefail
EXAMPLE=c-stats
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"

# Small: optimized for size, names stripped.
build_c_component "$WIT_DIR" "$OUT/c-stats.wasm" "$HERE/stats.c" -Os -Wl,--strip-all
say "built $OUT/c-stats.wasm"
