#!/usr/bin/env python3
"""Checks that the host's modules depend downwards only.

Each top-level module of host/src belongs to a layer (LAYERS, bottom
first). A module may name its own layer and the layers below it; naming a
higher one is an upward tie. The ties that exist today are listed in
KNOWN_UPWARD, each a responsibility in the wrong place that the layering
work moves down: the check fails on any upward tie not listed, and on any
listed one that is gone (so the list only shrinks). Test modules
(`#[cfg(test)] mod tests`) are not counted.

    scripts/check-layers.py          # check
    scripts/check-layers.py --graph  # print every module's dependencies
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host", "src")

# Bottom first.
LAYERS = [
    ("settings and metrics", ["config", "metrics", "passthrough", "fd_limit", "static_files", "pending"]),
    ("io", ["inbound", "socket", "http_timeouts", "http2_idle", "tls"]),
    ("hub", ["hub"]),
    ("plugin runtime", ["plugin", "console"]),
    ("cluster", ["backplane"]),
    ("session", ["handler", "writer", "state"]),
    ("transports", ["connection", "handshake", "fallback", "listener"]),
    ("application", ["server", "api", "reload", "check", "scaffold"]),
]

# module -> module ties that go up a layer today.
KNOWN_UPWARD = {
    ("metrics", "console"),
    ("metrics", "inbound"),
    ("metrics", "plugin"),
    ("hub", "backplane"),
    ("hub", "fallback"),
    ("hub", "plugin"),
    ("backplane", "fallback"),
}

USE = re.compile(r"\bcrate::([a-z_0-9]+)")


def dependencies():
    deps = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            module = os.path.relpath(path, ROOT).split(os.sep)[0].removesuffix(".rs")
            if module in ("main", "lib"):
                continue
            with open(path, encoding="utf-8") as f:
                text = f.read()
            cut = text.find("#[cfg(test)]\nmod tests")
            if cut >= 0:
                text = text[:cut]
            found = {m for m in USE.findall(text) if m != module}
            deps.setdefault(module, set()).update(found)
    return deps


def main():
    layer_of = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
    deps = dependencies()
    if "--graph" in sys.argv:
        for module in sorted(deps, key=lambda m: (layer_of.get(m, -1), m)):
            print(f"{LAYERS[layer_of[module]][0] if module in layer_of else '?'}: {module} -> {sorted(deps[module])}")
    problems = []
    for module in sorted(deps):
        if module not in layer_of:
            problems.append(f"{module}: in no layer; add it to LAYERS in {__file__}")
    upward = {
        (m, d) for m, ds in deps.items() for d in ds if m in layer_of and d in layer_of and layer_of[d] > layer_of[m]
    }
    for m, d in sorted(upward - KNOWN_UPWARD):
        problems.append(
            f"{m} ({LAYERS[layer_of[m]][0]}) names {d} ({LAYERS[layer_of[d]][0]}), a layer above it: "
            "define a trait in the lower layer that the higher one implements, or move the code"
        )
    for m, d in sorted(KNOWN_UPWARD - upward):
        problems.append(f"{m} no longer names {d}: take ({m!r}, {d!r}) out of KNOWN_UPWARD")
    for problem in problems:
        print(f"layers: {problem}", file=sys.stderr)
    print(f"layers: {len(upward)} upward ties left ({len(KNOWN_UPWARD)} known), {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
