#!/usr/bin/env bash
# Builds this example into ${1:-./out}/js-fetch.wasm with componentize-js
# (StarlingMonkey, a SpiderMonkey build for WASI) from npm, for the world of
# wit/world.wit: the plugin world plus wasi:http/outgoing-handler.
set -euo pipefail
EXAMPLE=js-fetch
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../toolchains.sh"
OUT="$(out_dir "${1:-./out}")"

npm_ci_here "$HERE"

# The WASI 0.2 packages (wasi:http and what it uses), as jco ships them; jco
# comes with componentize-js, its version pinned by package-lock.json.
WASI_VERSION=0.2.12
wasi_wit="$HERE/node_modules/@bytecodealliance/jco/lib/wit/builtin/$WASI_VERSION"
[ -f "$wasi_wit/wasi-http/package.wit" ] || {
  say "no wasi:http@$WASI_VERSION WIT in $wasi_wit (did a jco update move it?)"
  exit 1
}

# componentize-js resolves imports by their full versioned name
# ("wasmsocket:plugin/log@0.2.1"). Build with the version of the WIT in
# wit/, so a 0.2.x bump of the WIT does not need an edit here.
version="$(sed -n 's/^package wasmsocket:plugin@\([0-9.]*\);/\1/p' "$WIT_DIR"/*.wit | head -1)"
scratch_dir
wit="$SCRATCH/wit"
mkdir -p "$wit/deps/wasmsocket-plugin"
sed "s#wasmsocket:plugin/websocket-plugin@[0-9.]*;#wasmsocket:plugin/websocket-plugin@$version;#" \
  "$HERE/wit/world.wit" >"$wit/world.wit"
cp "$WIT_DIR/plugin.wit" "$wit/deps/wasmsocket-plugin/"
cp -r "$WIT_DIR"/deps/* "$wasi_wit"/* "$wit/deps/"
sed "s#\(\"wasmsocket:plugin/[a-z-]*\)@[0-9.]*\"#\1@$version\"#" "$HERE/fetch.js" >"$SCRATCH/fetch.js"

# -d http: no `fetch` (this plugin imports wasi:http itself); -d fetch-event:
# no incoming-handler export.
"$HERE/node_modules/.bin/componentize-js" "$SCRATCH/fetch.js" --wit "$wit" -n js-fetch \
  -d http -d fetch-event -o "$OUT/js-fetch.wasm" >/dev/null
say "built $OUT/js-fetch.wasm"
