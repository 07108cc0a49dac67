"""The shape limits of the redesign issue, reported: modules over 450 lines, functions over
60 lines, and family names written as string literals outside their own model file.

    python benchmarks/code_shape.py [--max-module 450] [--max-function 60]

Reads the sources of ``gencompare/`` with ``ast`` (nothing is imported). A function's
length is its ``def`` through its last line, decorators and docstring included; a
family name is a string constant equal to a family's ``family = "..."`` declaration
(gencompare/models/*.py) found in any other module. Prints one line per finding and a
summary, and exits 1 when there is any, so CI can take it up once the limits hold.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gencompare"


def _families(files: list[Path]) -> dict[str, Path]:
    """``{"gan": gencompare/models/gan.py, ...}`` from each class's ``family = "..."``."""
    out = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "family" for t in node.targets) \
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str) and node.value.value:
                out.setdefault(node.value.value, path)
    return out


def findings(max_module: int, max_function: int) -> list[str]:
    files = sorted(PACKAGE.rglob("*.py"))
    families = _families([p for p in files if p.parent.name == "models"])
    found = []
    for path in files:
        rel = path.relative_to(PACKAGE.parent)
        text = path.read_text()
        lines = text.count("\n")
        if lines > max_module:
            found.append(f"{rel}: module of {lines} lines (limit {max_module})")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - start + 1
                if length > max_function:
                    found.append(f"{rel}:{node.lineno}: function {node.name} of {length} lines (limit {max_function})")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in families \
                    and families[node.value] != path:
                found.append(f"{rel}:{node.lineno}: family name {node.value!r} outside {families[node.value].name}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-module", type=int, default=450)
    ap.add_argument("--max-function", type=int, default=60)
    a = ap.parse_args()
    found = findings(a.max_module, a.max_function)
    print("\n".join(found))
    kinds = {k: sum(k in f for f in found) for k in ("module of", "function", "family name")}
    print(f"{len(found)} findings: {kinds['module of']} modules, {kinds['function']} functions, "
          f"{kinds['family name']} family-name literals")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
