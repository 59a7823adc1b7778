#!/usr/bin/env bash
# Runs every test of the project: the host's Rust tests (real host processes,
# real WebSocket clients) and, when present, the browser tests in real
# headless Chromium. Installs what they need from the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

log "toolchain: the wasm32-wasip2 target builds the plugins"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

log "redis-server (and redis-cli, its dependency): the scale-out tests start their own, alone and as a 6-node cluster, on free loopback ports"
need_apt redis-server

log "host tests (cargo test --release)"
cargo test --release --workspace --locked

log "connection churn soak (about a minute): the host's memory stays flat and its connections return to 0"
cargo test --release --locked --test all -- --ignored churn::

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"

log "example plugins in every language, and the projects of wasmsocket new (each built by its own build.sh): build from source, then test through the host"
examples_out="$target_dir/examples-out"
./scripts/build-examples.sh "$examples_out"
WASMSOCKET_EXAMPLES_DIR="$examples_out" cargo test --release --locked --test all -- --ignored examples:: new::

if [ -f tests/browser/package.json ]; then
  # openssl makes the certificate of the https:// page test (tls.test.js).
  need_apt chromium openssl
  log "browser tests (headless Chromium)"
  export WASMSOCKET_BIN="$target_dir/release/wasmsocket"
  export WASMSOCKET_ECHO_WASM="$target_dir/guests/wasm32-wasip2/release/echo.wasm"
  export WASMSOCKET_TESTBED_WASM="$target_dir/guests/wasm32-wasip2/release/testbed.wasm"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && npm test)
fi
