#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm with componentize-py (CPython compiled to WASI),
# installed from PyPI into a venv under ~/.cache/wasmsocket/toolchains when
# missing (toolchains.sh).
set -euo pipefail
cd "$(dirname "$0")"
source ./toolchains.sh
ensure_pip componentize-py "$COMPONENTIZE_PY_VERSION"
mkdir -p out
"$PY/bin/componentize-py" -d wit -w websocket-plugin componentize app -o out/{{name}}.wasm >/dev/null
echo "built out/{{name}}.wasm"
