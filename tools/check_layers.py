#!/usr/bin/env python3
"""Check that the core crate's and the tool's modules import only downward, and list import
cycles.

    python3 tools/check_layers.py [--strict]

Reads every `src/**/*.rs` and `cli/src/**/*.rs` file's `crate::` paths outside comments and unit-test modules (in `use` lines, grouped
`use crate::{...}` included, and inline paths), maps each file to its top-level module, and
compares with the crate's layers in CRATES below (lowest first; a module may import its own layer and any lower one).
Also builds the file-level graph (`super::` resolved) and reports its cycles. Prints every
violation; exits 1 on any with `--strict`, else 0 (the known ones are listed in the output).
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

# Lowest first. The crate root (`lib`, the CLI's `main`: re-exports, the prelude, the argument
# parser) may import anything.
CRATES = {
    "core": (
        Path(__file__).resolve().parent.parent / "src",
        "lib",
        [
            "error", "mode", "schedule", "param", "solver", "config", "tensor", "model", "plan",
            "sampler", "spec", "calibrate", "oracle", "conformance", "lib",
        ],
    ),
    "cli": (
        Path(__file__).resolve().parent.parent / "cli" / "src",
        "main",
        [
            "error", "files", "arrays", "images", "metrics", "classical", "shipped", "loading",
            "grid_file", "spec", "sampling", "serve", "commands", "main",
        ],
    ),
}
ROOT, ROOT_FILE, LAYERS = CRATES["core"]
RANK = {m: i for i, m in enumerate(LAYERS)}


def module_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".rs")


def file_key(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts) or ROOT_FILE


def code_lines(text: str):
    """The lines outside comments (line comments and doc comments; block comments are rare)."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        yield line.split("//")[0] if "\"" not in line else line


def expand_use(body: str):
    """Paths of a `use` body, braces expanded: `a::{b, c::d}` -> a::b, a::c::d."""
    body = body.strip().rstrip(";")
    m = re.match(r"^(.*?)\{(.*)\}$", body, re.S)
    if not m:
        return [body]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out = []
    for item in items:
        item = item.strip()
        if item:
            out.extend(expand_use(prefix + item))
    return out


def imports(path: Path):
    """The crate-relative paths `path` uses (`crate::a::b` -> ["a", "b"]), `super::` resolved."""
    text = path.read_text()
    # Unit tests may use any layer (they are at the file's end by convention).
    cut = re.search(r"^#\[cfg\(test\)\][^\n]*\n(#\[[^\n]*\n)*mod tests", text, re.M)
    if cut:
        text = text[: cut.start()]
    text = "\n".join(code_lines(text))
    here = [] if path.name == ROOT_FILE + ".rs" else file_key(path).split("::")
    found = []
    for m in re.finditer(r"\buse\s+((?:crate|super)::[^;]*);", text, re.S):
        found.extend(p for p in expand_use(re.sub(r"\s+", "", m.group(1))) if not p.endswith("::"))
    found.extend(re.findall(r"(?<![\w:])((?:crate|super)::[A-Za-z_][\w:]*)", text))
    paths = []
    for p in found:
        parts = p.split("::")
        if parts[0] == "crate":
            paths.append(parts[1:])
        else:
            base = list(here)
            while parts and parts[0] == "super":
                parts.pop(0)
                base = base[:-1]
            paths.append(base + parts)
    return [p for p in paths if p and p[0] and p[-1]]


def root_aliases():
    """Names the crate root re-exports (`pub use sampler::{MrSampler, ...}`) -> their module."""
    text = "\n".join(code_lines((ROOT / (ROOT_FILE + ".rs")).read_text()))
    aliases = {}
    for m in re.finditer(r"\bpub use\s+([^;]*);", text, re.S):
        for p in expand_use(re.sub(r"\s+", "", m.group(1))):
            parts = p.split("::")
            if parts[0] in RANK:
                aliases[parts[-1]] = parts[0]
    return aliases


def main() -> int:
    """Checks every crate; exits 1 on any violation with `--strict`."""
    global ROOT, ROOT_FILE, LAYERS, RANK
    failed = 0
    for name, (root, root_file, layers) in CRATES.items():
        ROOT, ROOT_FILE, LAYERS = root, root_file, layers
        RANK = {m: i for i, m in enumerate(LAYERS)}
        print(f"{name} ({root.relative_to(root.parent.parent) if name == 'cli' else 'src'}):")
        failed |= check_crate()
    return failed


def check_crate() -> int:
    strict = "--strict" in sys.argv
    aliases = root_aliases()
    files = sorted(ROOT.rglob("*.rs"))
    keys = {file_key(f) for f in files}
    violations = []
    for f in files:
        if module_of(f) not in RANK and module_of(f) != ROOT_FILE:
            violations.append(f"{f.relative_to(ROOT.parent)}: module {module_of(f)} has no layer "
                              f"(add it to CRATES in tools/check_layers.py)")
    graph = defaultdict(set)
    for f in files:
        mod = module_of(f)
        me = file_key(f)
        for p in imports(f):
            if p[0] in aliases and p[0] not in RANK:
                p = [aliases[p[0]]] + p
            target = p[0]
            if target in RANK and mod in RANK and RANK[target] > RANK[mod]:
                violations.append(f"{f.relative_to(ROOT.parent)}: {mod} imports {'::'.join(p)} "
                                  f"(layer {target} is above {mod})")
            # File-level edge: the longest prefix that is a file.
            for n in range(len(p), 0, -1):
                k = "::".join(p[:n])
                if k in keys and k != me:
                    # A child importing through its parent module (a re-export) is no cycle.
                    if not me.startswith(k + "::") and k != ROOT_FILE:
                        graph[me].add(k)
                    break
    # Cycles: strongly connected components of more than one file (Tarjan).
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(keys):
        if v not in index:
            visit(v)
    cycles = sccs
    for v in violations:
        print("upward import:", v)
    for c in cycles:
        print("import cycle:", " <-> ".join(c))
    print(f"{len(violations)} upward imports, {len(cycles)} cycles across {len(files)} files")
    return 1 if strict and (violations or cycles) else 0


if __name__ == "__main__":
    sys.exit(main())
