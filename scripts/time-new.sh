#!/usr/bin/env bash
# Times what a new plugin author does, per template: `wasmsocket new LANG x`,
# `./build.sh`, `wasmsocket --plugins out`, then a WebSocket client sends
# "hello" and waits for the reply. Prints one row per language, in seconds.
#
#   scripts/time-new.sh [--cold] [LANG...]      (default: every template)
#
# Cached: the toolchains, npm, pip, Go and cargo caches as they are on this
# machine. --cold: each language gets empty ones of its own under $COLD_ROOT
# (default a new temporary directory): WASMSOCKET_TOOLCHAINS, npm's and
# pip's caches, GOCACHE and CARGO_HOME (so crates are downloaded again).
# apt packages and rustup's wasm32-wasip2 target stay as installed. Either way
# the host gets an empty compile cache, as a new plugin's content would.
# Run from a built tree: WASMSOCKET_BIN defaults to the release binary.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${WASMSOCKET_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/wasmsocket}"
[ -x "$bin" ] || { echo "no $bin: cargo build --release first, or set WASMSOCKET_BIN" >&2; exit 1; }

cold=false
if [ "${1:-}" = --cold ]; then
  cold=true
  shift
fi
if (($#)); then langs=("$@"); else mapfile -t langs < <("$bin" new --list | awk '{print $1}'); fi
work="$(mktemp -d "${TMPDIR:-/tmp}/time-new.XXXXXX")"
cold_root="${COLD_ROOT:-$work/cold}"
host_pid=""
trap '[ -n "$host_pid" ] && kill "$host_pid" 2>/dev/null; rm -rf "$work"' EXIT

# Sends "hello" to ws://$1/ws/$2 and prints the reply: a minimal RFC 6455
# client, so the script needs nothing beyond python3.
reply() {
  python3 - "$@" <<'EOF'
import base64, os, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=120)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(f"GET /ws/{sys.argv[2]} HTTP/1.1\r\nHost: {sys.argv[1]}\r\nUpgrade: websocket\r\n"
          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 101"), head
mask, payload = os.urandom(4), b"hello"
s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
def read(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data
op, n = read(2)
n &= 0x7F
if n == 126:
    n = int.from_bytes(read(2), "big")
assert op & 0x0F == 1, f"not a text frame: opcode {op & 0x0F}, {read(n)!r}"
print(read(n).decode())
EOF
}

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

printf '%s, %s toolchains, load average before: %s\n' "$(date -u '+%F %H:%M UTC')" \
  "$($cold && echo cold || echo cached)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %8s %8s %12s %8s  %s\n' lang new build serve+reply total reply
for lang in "${langs[@]}"; do
  dir="$work/$lang" && mkdir -p "$dir"
  if $cold; then
    c="$cold_root/$lang" && mkdir -p "$c"
    export WASMSOCKET_TOOLCHAINS="$c/toolchains" npm_config_cache="$c/npm" PIP_CACHE_DIR="$c/pip" \
      GOCACHE="$c/go-build" CARGO_HOME="$c/cargo-home"
  fi
  t0=$(now)
  (cd "$dir" && "$bin" new "$lang" x >/dev/null)
  t1=$(now)
  # A new author's project builds in its own target/, not this tree's.
  (cd "$dir/x" && unset CARGO_TARGET_DIR && ./build.sh) >"$dir/build.log" 2>&1 || { echo "$lang: build failed" >&2; cat "$dir/build.log" >&2; exit 1; }
  t2=$(now)
  # The host listens once it has compiled the plugins.
  "$bin" --plugins "$dir/x/out" --listen 127.0.0.1:0 --cache-dir "$dir/compiled" --deadline 2s \
    >"$dir/host.out" 2>"$dir/host.log" &
  host_pid=$!
  until addr="$(sed -n 's#.*listening on http://\([0-9.:]*\).*#\1#p' "$dir/host.out" | head -1)" && [ -n "$addr" ]; do
    kill -0 "$host_pid" 2>/dev/null || { echo "$lang: the host exited" >&2; cat "$dir/host.log" >&2; exit 1; }
    sleep 0.05
  done
  t3=$(now)
  answer="$(reply "$addr" x)"
  t4=$(now)
  kill "$host_pid" && wait "$host_pid" 2>/dev/null || true
  host_pid=""
  [ "$answer" = "x #1: hello" ] || { echo "$lang: unexpected reply $answer" >&2; exit 1; }
  printf '%-8s %8s %8s %12s %8s  %s\n' "$lang" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" \
    "$(secs "$t2" "$t4")" "$(secs "$t0" "$t4")" "$answer"
done
printf 'load average after: %s (%s cores)\n' "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)"
