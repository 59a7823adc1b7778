#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm with componentize-js (SpiderMonkey compiled to
# WASI), installed from npm under ~/.cache/wasmsocket/toolchains when missing.
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchains.sh
ensure_componentize_js
mkdir -p out
# -d http -d fetch-event: no wasi:http imports. Drop `-d http` to use `fetch`;
# the host then denies every request unless its allowed_outbound_hosts allows it.
"$COMPONENTIZE_JS" app.js --wit wit -n websocket-plugin -d http -d fetch-event -o out/{{name}}.wasm >/dev/null
echo "built out/{{name}}.wasm"
