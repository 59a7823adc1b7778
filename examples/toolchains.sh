# Shared helpers for the examples' build.sh scripts. Source it; do not run it.
# The toolchain installers and their pinned versions live in
# templates/toolchains.sh, shared with the projects `wasmsocket new` writes;
# this file adds what only the examples need: the repository's WIT, the
# output directory, the Rust workspace build.

EXAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$EXAMPLES_DIR/.." && pwd)"
WIT_DIR="$REPO_ROOT/wit"
WORLD=websocket-plugin
source "$REPO_ROOT/templates/toolchains.sh"

# The output directory: $1 of build.sh (default ./out), made absolute.
out_dir() {
  local dir="${1:-./out}"
  mkdir -p "$dir"
  (cd "$dir" && pwd)
}

# build_rust_example PACKAGE NAME OUT: builds a member of the plugins/
# workspace for wasm32-wasip2 (which emits a component directly) and copies
# it to OUT/NAME.wasm.
build_rust_example() {
  local package=$1 name=$2 out=$3
  command -v cargo >/dev/null || { say "cargo not found: install Rust with rustup"; return 1; }
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    say "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2
  fi
  local target_dir="${WASMSOCKET_GUESTS_TARGET_DIR:-$HOME/.cache/wasmsocket/guests}"
  (cd "$REPO_ROOT/plugins" &&
    cargo build --quiet --release --locked --target wasm32-wasip2 --target-dir "$target_dir" -p "$package")
  cp "$target_dir/wasm32-wasip2/release/${package//-/_}.wasm" "$out/$name.wasm"
}

# npm_ci_here DIR: the example's own npm packages (componentize-js, pinned
# by its package-lock.json), installed again only when the lock changed.
npm_ci_here() {
  local dir=$1
  command -v npm >/dev/null || ensure_apt nodejs npm
  if [ ! -x "$dir/node_modules/.bin/componentize-js" ] ||
    ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.installed-lock.json"; then
    say "npm ci (componentize-js)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.installed-lock.json"
  fi
}
