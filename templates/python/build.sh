#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm with componentize-py (CPython compiled to WASI),
# installed from PyPI into a venv under ~/.cache/wasmsocket/toolchains when
# missing (the same one wasmsocket's examples use).
set -euo pipefail
cd "$(dirname "$0")"
COMPONENTIZE_PY_VERSION={{componentize_py_version}}
PY="${WASMSOCKET_TOOLCHAINS:-$HOME/.cache/wasmsocket/toolchains}/py"
[ -x "$PY/bin/python" ] || python3 -m venv "$PY"
have="$("$PY/bin/python" -m pip show componentize-py 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ "$have" != "$COMPONENTIZE_PY_VERSION" ]; then
  "$PY/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
mkdir -p out
"$PY/bin/componentize-py" -d wit -w websocket-plugin componentize app -o out/{{name}}.wasm >/dev/null
echo "built out/{{name}}.wasm"
