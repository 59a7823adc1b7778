#!/usr/bin/env bash
# Builds this example into ${1:-./out}/python-words.wasm with componentize-py
# (CPython compiled to WASI, plus the app and the stdlib modules it imports).
set -euo pipefail
EXAMPLE=python-words
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"

ensure_pip componentize-py "$COMPONENTIZE_PY_VERSION"
# componentize-py generates the `wit_world` bindings package itself; run
# `componentize-py -d ../../wit -w websocket-plugin bindings .` once if your
# editor wants to see it (it is git-ignored).
(cd "$HERE" && "$PY/bin/componentize-py" -d "$WIT_DIR" -w "$WORLD" componentize app -o "$OUT/python-words.wasm" >/dev/null)
say "built $OUT/python-words.wasm"
