#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm: clang + wasi-libc (apt), bindings from
# `wit-bindgen c`, then `wasm-tools component new` with the WASI preview1
# adapter (build_c_component in toolchains.sh, which installs what is
# missing under ~/.cache/wasmsocket/toolchains; wit-bindgen is built with
# cargo once, 5 to 10 minutes).
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchains.sh
mkdir -p out
build_c_component wit out/{{name}}.wasm plugin.c
echo "built out/{{name}}.wasm"
