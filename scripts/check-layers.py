#!/usr/bin/env python3
"""Checks that the host's modules depend one way.

Each top-level module of host/src belongs to a layer (LAYERS, bottom
first). A module may name its own layer and the layers below it; naming a
higher one is an upward tie, and fails the check: where a lower layer must
call up, it defines a trait that the higher one implements (as the hub's
`Cluster` port, which the backplane implements). Modules must not form a
cycle either, not even within a layer; nor may the files of a module
directory (its `mod.rs`, the façade that declares them, aside). Test
modules (`#[cfg(test)] mod tests`) and comments are not counted.

    scripts/check-layers.py          # check
    scripts/check-layers.py --graph  # print every module's dependencies
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "host", "src")

# Bottom first.
LAYERS = [
    ("settings and metrics", ["config", "metrics", "passthrough", "fd_limit", "heap_trim", "static_files", "pending"]),
    ("io", ["inbound", "socket", "http_timeouts", "http2_idle", "tls", "listener", "reply"]),
    ("hub", ["hub"]),
    ("plugin runtime", ["plugin", "console"]),
    ("cluster", ["backplane"]),
    ("session", ["dispatch", "deadlines", "writer", "room_ticks", "resume", "handover", "checkpoint"]),
    ("transports", ["connection", "handshake", "takeover", "fallback", "state"]),
    ("application", ["server", "api", "reload", "check", "scaffold"]),
]

CRATE = re.compile(r"\bcrate::([a-z_0-9]+)")


def code_of(path):
    """The file's code: without its test module and comments (doc links
    are not dependencies)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))


def dependencies():
    """Top-level module -> the top-level modules it names; and, for each
    module directory, file -> the sibling files it names."""
    deps, inner = {}, {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, ROOT).split(os.sep)
            module = parts[0].removesuffix(".rs")
            if module in ("main", "lib"):
                continue
            code = code_of(path)
            deps.setdefault(module, set()).update(m for m in CRATE.findall(code) if m != module)
            if len(parts) == 2 and name != "mod.rs":
                siblings = {f.removesuffix(".rs") for f in os.listdir(folder) if f.endswith(".rs")} - {"mod"}
                me = name.removesuffix(".rs")
                named = set(re.findall(r"\bsuper::([a-z_0-9]+)", code))
                named |= set(re.findall(rf"\bcrate::{module}::([a-z_0-9]+)", code))
                inner.setdefault(module, {})[me] = (named & siblings) - {me}
    return deps, inner


def cycles(graph):
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main():
    layer_of = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}
    deps, inner = dependencies()
    if "--graph" in sys.argv:
        for module in sorted(deps, key=lambda m: (layer_of.get(m, -1), m)):
            print(f"{LAYERS[layer_of[module]][0] if module in layer_of else '?'}: {module} -> {sorted(deps[module])}")
            for file, named in sorted(inner.get(module, {}).items()):
                print(f"    {module}/{file} -> {sorted(named)}")
    problems = []
    for module in sorted(deps):
        if module not in layer_of:
            problems.append(f"{module}: in no layer; add it to LAYERS in {__file__}")
    for m, ds in sorted(deps.items()):
        for d in sorted(ds):
            if m in layer_of and d in layer_of and layer_of[d] > layer_of[m]:
                problems.append(
                    f"{m} ({LAYERS[layer_of[m]][0]}) names {d} ({LAYERS[layer_of[d]][0]}), a layer above it: "
                    "define a trait in the lower layer that the higher one implements, or move the code"
                )
    for component in cycles(deps):
        problems.append(f"modules in a cycle: {', '.join(component)}")
    for module, files in sorted(inner.items()):
        for component in cycles(files):
            problems.append(f"files of {module}/ in a cycle: {', '.join(component)}")
    for problem in problems:
        print(f"layers: {problem}", file=sys.stderr)
    print(f"layers: {len(deps)} modules in {len(LAYERS)} layers, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
