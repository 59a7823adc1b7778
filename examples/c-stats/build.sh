#!/usr/bin/env bash
# Builds this example into ${1:-./out}/c-stats.wasm: clang + wasi-libc from
# Debian, bindings from `wit-bindgen c`, then `wasm-tools component new` with
# the WASI preview1 adapter (wasi-libc's stdio imports preview1).
set -euo pipefail
EXAMPLE=c-stats
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"

ensure_apt clang lld wasi-libc libclang-rt-dev-wasm32
ensure_wasm_tools
ensure_wit_bindgen
ensure_adapter
scratch_dir

# Bindings for the world, from the repository's WIT, into a scratch dir.
quietly "$WIT_BINDGEN" c "$WIT_DIR" --world "$WORLD" --out-dir "$SCRATCH"
# A reactor: no main; the host calls the exports.
clang --target=wasm32-wasi -Os -mexec-model=reactor -Wall -Wextra -Werror \
  -I"$SCRATCH" "$HERE/stats.c" "$SCRATCH/websocket_plugin.c" "$SCRATCH/websocket_plugin_component_type.o" \
  -Wl,--strip-all -o "$SCRATCH/core.wasm"
"$WASM_TOOLS" component new "$SCRATCH/core.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$OUT/c-stats.wasm"
say "built $OUT/c-stats.wasm"
