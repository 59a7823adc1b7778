#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm: clang + wasi-libc (apt), bindings from
# `wit-bindgen c`, then `wasm-tools component new` with the WASI preview1
# adapter (wasi-libc's stdio imports preview1). toolchains.sh installs what is
# missing under ~/.cache/wasmsocket/toolchains; wit-bindgen is built with
# cargo once (5 to 10 minutes).
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchains.sh
ensure_apt clang lld wasi-libc libclang-rt-dev-wasm32
ensure_wasm_tools
ensure_wit_bindgen
ensure_adapter
scratch_dir
quietly "$WIT_BINDGEN" c wit --world websocket-plugin --out-dir "$SCRATCH"
# A reactor: no main; the host calls the exports.
clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wall -Wextra -Werror -I"$SCRATCH" \
  plugin.c "$SCRATCH/websocket_plugin.c" "$SCRATCH/websocket_plugin_component_type.o" -o "$SCRATCH/core.wasm"
mkdir -p out
"$WASM_TOOLS" component new "$SCRATCH/core.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o out/{{name}}.wasm
echo "built out/{{name}}.wasm"
