#!/usr/bin/env python3
# A copy of the project's shared tool (shared/tools/modgraph.py), run by tests/run.sh.
"""Module dependency graph of a Rust crate, from its `use` paths and inline `crate::` paths.

Usage: modgraph.py [SRC_DIR=src] [--depth N] [--dot]
Prints every cycle among modules (grouped at --depth path segments, default 1: the top-level
modules `crate::a` -> `crate::b`), each edge with one file:line where it is taken, and exits 1
when there is a cycle. `--dot` prints the graph in Graphviz form instead.
Test code (`#[cfg(test)]` modules, files named tests*.rs or *_tests.rs, test_support*) and
binaries under src/bin are left out. It reads text, not the compiler's view: a macro-made
path is not seen, so check a reported edge at the line it names."""
import os, re, sys
from collections import defaultdict

args = [a for a in sys.argv[1:]]
dot = "--dot" in args
depth = 1
if "--depth" in args:
    depth = int(args[args.index("--depth") + 1]); del args[args.index("--depth"):args.index("--depth") + 2]
args = [a for a in args if a != "--dot"]
src = args[0] if args else "src"

def module_of(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"): rel = rel[:-1]
    return rel

def is_test_file(path):
    b = os.path.basename(path)
    return b.startswith("tests") or b.endswith("_tests.rs") or b.startswith("test_support")

files = {}
for root, _, names in os.walk(src):
    if os.path.relpath(root, src).split(os.sep)[0] == "bin": continue
    for n in names:
        if n.endswith(".rs") and not is_test_file(os.path.join(root, n)):
            p = os.path.join(root, n); files[tuple(module_of(p))] = p
mods = set(files)

def strip_tests(text):
    # Drop `#[cfg(test)] mod x { ... }` blocks (brace matching) so test-only imports don't count.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i: continue
        out.append(text[i:m.start()]); j, d = m.end(), 1
        while j < len(text) and d:
            d += {"{": 1, "}": -1}.get(text[j], 0); j += 1
        out.append("\n" * text[m.start():j].count("\n")); i = j
    out.append(text[i:]); return "".join(out)

def expand(tree):
    # "a::{b, c::{d, e}}" -> ["a::b", "a::c::d", "a::c::e"]
    tree = tree.replace(" ", "").replace("\n", "")
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m: return [tree]
    head, body, parts, d, cur = m.group(1), m.group(2), [], 0, ""
    for ch in body:
        if ch == "," and d == 0: parts.append(cur); cur = ""; continue
        d += (ch == "{") - (ch == "}"); cur += ch
    parts.append(cur)
    return [head + x for p in parts if p for x in expand(p)]

def resolve(me, path):
    segs = [s for s in path.split("::") if s and s != "self"]
    if not segs: return None
    if segs[0] == "crate": base, segs = [], segs[1:]
    elif segs[0] == "super":
        base = list(me) if files[tuple(me)].endswith(("mod.rs", "lib.rs")) else list(me[:-1])
        while segs and segs[0] == "super": base = base[:-1]; segs = segs[1:]
    else: return None
    best = None
    for k in range(len(segs) + 1):
        cand = tuple(base + segs[:k])
        if cand in mods: best = cand
    return best

edges = defaultdict(list)
for me, path in files.items():
    text = strip_tests(open(path, encoding="utf-8", errors="replace").read())
    text = re.sub(r"//[^\n]*", "", text)
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super)[^;]*);", text, re.S):
        for p in expand(m.group(1)): found.append((p.split(" as ")[0], text.count("\n", 0, m.start()) + 1))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        found.append((m.group(1), text.count("\n", 0, m.start()) + 1))
    for p, line in found:
        tgt = resolve(list(me), p)
        if tgt is None or tgt == me: continue
        a, b = me[:depth], tgt[:depth]
        if a == b or not a or not b: continue
        if a[:len(b)] == b or b[:len(a)] == a: continue  # parent/child of one another: one room
        edges[(a, b)].append(f"{os.path.relpath(path)}:{line}")

name = lambda t: "::".join(t)
graph = defaultdict(set)
for a, b in edges: graph[a].add(b)
if dot:
    print("digraph modules {")
    for (a, b), where in sorted(edges.items()): print(f'  "{name(a)}" -> "{name(b)}"; // {where[0]}')
    print("}"); sys.exit(0)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in index: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
nodes = set(graph) | {b for bs in graph.values() for b in bs}
for v in sorted(nodes):
    if v not in index: visit(v)
print(f"{len(nodes)} modules at depth {depth}, {len(edges)} edges, {len(sccs)} cycle(s)")
for comp in sccs:
    print(f"cycle of {len(comp)}: {', '.join(name(c) for c in comp)}")
    for a in comp:
        for b in sorted(graph[a]):
            if b in comp: print(f"  {name(a)} -> {name(b)}  ({edges[(a, b)][0]}{', +%d more' % (len(edges[(a, b)]) - 1) if len(edges[(a, b)]) > 1 else ''})")
sys.exit(1 if sccs else 0)
