#!/usr/bin/env bash
# Builds every example plugin (examples/*/build.sh) into OUTDIR (default
# ./out/examples), installing missing guest toolchains from the package
# registries on the way. Then: wasmsocket --plugins OUTDIR
#
#   scripts/build-examples.sh [OUTDIR] [EXAMPLE...]
#
# Toolchains are cached under ~/.cache/wasmsocket/toolchains (see
# templates/toolchains.sh). A cold machine spends most of its first run in
# `cargo install wit-bindgen-cli` (C and Go); later runs take about a minute.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/out/examples}"
shift || true
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if (($#)); then
  examples=("$@")
else
  examples=()
  for script in "$root"/examples/*/build.sh; do
    examples+=("$(basename "$(dirname "$script")")")
  done
fi

failed=()
for name in "${examples[@]}"; do
  printf '==> %s\n' "$name"
  start=$SECONDS
  if bash "$root/examples/$name/build.sh" "$out"; then
    printf '    %s: %ss\n' "$name" "$((SECONDS - start))"
  else
    failed+=("$name")
  fi
done

ls -l "$out"/*.wasm
if ((${#failed[@]})); then
  printf 'FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
printf 'built %d examples into %s; serve them with: wasmsocket --plugins %s\n' "${#examples[@]}" "$out" "$out"
