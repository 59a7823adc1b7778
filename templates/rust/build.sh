#!/usr/bin/env bash
# Builds ./out/{{name}}.wasm, adding the wasm32-wasip2 target when missing.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
# ./target, or CARGO_TARGET_DIR when set (as cargo itself does).
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --target wasm32-wasip2 --target-dir "$target"
mkdir -p out
cp "$target/wasm32-wasip2/release/{{crate}}.wasm" out/{{name}}.wasm
echo "built out/{{name}}.wasm"
