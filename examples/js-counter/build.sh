#!/usr/bin/env bash
# Builds this example into ${1:-./out}/js-counter.wasm with componentize-js
# (StarlingMonkey, a SpiderMonkey build for WASI) from npm.
set -euo pipefail
EXAMPLE=js-counter
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"

npm_ci_here "$HERE"

# componentize-js resolves imports by their full versioned name
# ("wasmsocket:plugin/state@0.2.1"). Build with the version of the WIT in
# wit/, so a 0.2.x bump of the WIT does not need an edit here: every 0.2.x
# host serves what a 0.2.x plugin imports.
version="$(sed -n 's/^package wasmsocket:plugin@\([0-9.]*\);/\1/p' "$WIT_DIR"/*.wit | head -1)"
scratch_dir
sed "s#\(\"wasmsocket:plugin/[a-z-]*\)@[0-9.]*\"#\1@$version\"#" "$HERE/counter.js" >"$SCRATCH/counter.js"

# -d http -d fetch-event: no wasi:http imports (this plugin makes no requests).
"$HERE/node_modules/.bin/componentize-js" "$SCRATCH/counter.js" --wit "$WIT_DIR" -n "$WORLD" \
  -d http -d fetch-event -o "$OUT/js-counter.wasm" >/dev/null
say "built $OUT/js-counter.wasm"
