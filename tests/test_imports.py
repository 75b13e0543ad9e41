"""The product's modules import each other without cycles, except a service and its own tasks module
(services dispatch tasks, tasks call services). Walks the source with ast: nothing is imported."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_PRODUCT = {"tests", "bench"}


def product_modules() -> dict[str, Path]:
    """Dotted name -> file of every module in the top-level packages, migrations left out."""
    modules = {}
    for package in sorted(p.parent for p in ROOT.glob("*/__init__.py")):
        if package.name in NOT_PRODUCT:
            continue
        for path in package.rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(name: str, path: Path):
    """Every dotted name an import statement anywhere in the module (function bodies too) may refer to."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = node.module if node.level == 0 else ".".join(x for x in (base, node.module) if x)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    modules = product_modules()
    return {
        name: {other for other in imported_names(name, path) if other in modules and other != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def service_and_its_tasks(component: list[str]) -> bool:
    if len(component) != 2:
        return False
    (package_a, _, a), (package_b, _, b) = (name.rpartition(".") for name in component)
    return package_a == package_b and "tasks" in (a, b)


def test_the_walk_finds_imports_and_cycles():
    graph = import_graph()
    assert "training.jobs.run" in graph["training.jobs.tasks"]  # from training.jobs.run import job_run
    assert "training.tasks" in graph["training.services"]  # an import inside a function counts too
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert service_and_its_tasks(["x.services", "x.tasks"]) and not service_and_its_tasks(["x.jobs", "y.tasks"])


def test_no_import_cycles_but_a_service_and_its_own_tasks():
    bad = [" <-> ".join(c) for c in cycles(import_graph()) if not service_and_its_tasks(c)]
    assert not bad, "import cycles: " + "; ".join(bad)
