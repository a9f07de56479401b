"""Keep operator/pmkeys small-grained: no module over 400 lines, no function over 60 lines,
no function with a radon cyclomatic-complexity grade worse than C (issue 11's acceptance).

``make lint`` runs it; it prints the figures (largest module, longest function, worst grade,
maintainability grades) as key=value lines and every violation, and exits 1 on any.

    python hack/check-structure.py [ROOT]     # ROOT defaults to operator/pmkeys
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from radon.complexity import cc_rank, cc_visit
from radon.metrics import mi_rank, mi_visit

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
WORST_GRADE = "C"


def functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function, nested ones too."""
    found: list[tuple[str, int, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                found.append((name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1))
                walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return found


def main(root: Path) -> int:
    problems: list[str] = []
    sizes: list[tuple[int, str]] = []
    lengths: list[tuple[int, str]] = []
    grades: list[tuple[int, str, str]] = []
    maintainability: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        rel = str(path.relative_to(root.parent))
        lines = len(source.splitlines())
        sizes.append((lines, rel))
        if lines > MAX_MODULE_LINES:
            problems.append(f"{rel}: {lines} lines (max {MAX_MODULE_LINES})")
        for name, line, length in functions(ast.parse(source)):
            lengths.append((length, f"{rel}:{line} {name}"))
            if length > MAX_FUNCTION_LINES:
                problems.append(f"{rel}:{line} {name}: {length} lines (max {MAX_FUNCTION_LINES})")
        for block in cc_visit(source):
            grade = cc_rank(block.complexity)
            grades.append((block.complexity, grade, f"{rel}:{block.lineno} {block.fullname}"))
            if grade > WORST_GRADE:
                problems.append(f"{rel}:{block.lineno} {block.fullname}: complexity {block.complexity} ({grade})")
        maintainability.setdefault(mi_rank(mi_visit(source, multi=True)), []).append(rel)
    sizes.sort(reverse=True)
    lengths.sort(reverse=True)
    grades.sort(reverse=True)
    print(f"modules={len(sizes)} functions={len(lengths)}")
    print(f"largest_module_lines={sizes[0][0]} largest_module={sizes[0][1]}")
    print(f"longest_function_lines={lengths[0][0]} longest_function={lengths[0][1]!r}")
    print(f"worst_complexity={grades[0][0]} worst_grade={grades[0][1]} worst_function={grades[0][2]!r}")
    print(f"functions_over_{MAX_FUNCTION_LINES}_lines={sum(1 for n, _ in lengths if n > MAX_FUNCTION_LINES)}")
    print("maintainability=" + ",".join(f"{g}:{len(m)}" for g, m in sorted(maintainability.items())))
    for grade, modules in sorted(maintainability.items()):
        if grade != "A":
            print(f"maintainability_{grade}={','.join(modules)}")
    for problem in problems:
        print(f"violation: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("operator/pmkeys")))
