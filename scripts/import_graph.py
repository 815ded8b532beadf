"""Prints the import graph between the dgym crate's files (experiments/src) and any
cycle in it: `python3 scripts/import_graph.py`. The crate is meant to have none."""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments", "src")


def module_path(f):
    p = f[:-3]
    if p.endswith("/mod"):
        p = p[:-4]
    return p.replace("/", "::")


def main():
    files = []
    for root, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".rs"):
                files.append(os.path.relpath(os.path.join(root, name), ROOT))
    modules = {module_path(f): f for f in files}
    edges = {}
    for f in files:
        text = re.sub(r"//.*", "", open(os.path.join(ROOT, f)).read())
        deps = set()
        for m in re.findall(r"crate::([a-z_:]+)", text):
            parts = m.split("::")
            for k in range(len(parts), 0, -1):
                if "::".join(parts[:k]) in modules:
                    deps.add(modules["::".join(parts[:k])])
                    break
        parent = module_path(f).rsplit("::", 1)[0] if "::" in module_path(f) else ""
        for m in re.findall(r"super::([a-z_]+)", text):
            candidate = f"{parent}::{m}" if parent else m
            if candidate in modules:
                deps.add(modules[candidate])
        deps.discard(f)
        edges[f] = deps
    for f in sorted(edges):
        print(f, "->", ", ".join(sorted(edges[f])) or "-")
    cycles, state = [], {}

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for f in sorted(edges):
        if not state.get(f):
            visit(f, [])
    print("cycles:", cycles or "none")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
