"""Dependencies run one way: no module of sandbox/, audit/ or pysandbox_common/ takes part in an
import cycle, counting imports inside functions too (a lazy import still ties two modules
together: each needs the other to work, and a change in one can break the other at run time).
Imports are read with `ast`, never executed."""
import ast
import os

ROOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PACKAGES = ("sandbox", "audit", "pysandbox_common")


def _modules():
    """{dotted module name: path} for every .py file of the packages."""
    out = {}
    for package in PACKAGES:
        for directory, _dirs, files in os.walk(os.path.join(ROOT_DIR, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    rel = os.path.relpath(path, ROOT_DIR)[:-3].split(os.sep)
                    if rel[-1] == "__init__":
                        rel = rel[:-1]
                    out[".".join(rel)] = path
    return out


def _imports(module, path, known):
    """The modules of `known` that `module` imports anywhere in its file (a `from pkg import
    name` counts as importing pkg.name when that is a module, else pkg)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                # `import a.b.c` imports a, a.b and a.b.c
                for i in range(1, len(parts) + 1):
                    found.add(".".join(parts[:i]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1] if node.level > 1 else here
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            found.add(base)
            for alias in node.names:
                found.add(base + "." + alias.name)
    return {name for name in found if name in known and name != module}


def _graph():
    known = _modules()
    return {module: _imports(module, path, known) for module, path in known.items()}


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_edges(graph):
    """A package importing its own __init__ from a submodule is the normal shape (the package is
    loaded first); it is not counted as a cycle. Everything else is."""
    return {m: {d for d in deps if not (m.startswith(d + ".") and d in PACKAGES + ("sandbox.profile",
                                                                                 "audit.checks"))}
            for m, deps in graph.items()}


def test_the_graph_is_read_from_every_module():
    graph = _graph()
    assert "sandbox.cgroup" in graph and "audit.cli" in graph and "pysandbox_common.registry" in graph
    # a function-level import is seen: cgroup.create imports cgroup_v1 inside the function
    assert "sandbox.cgroup_v1" in graph["sandbox.cgroup"]
    assert "sandbox.cgroup_fs" in graph["sandbox.cgroup_v1"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_takes_part_in_an_import_cycle():
    cycles = _cycles(_package_edges(_graph()))
    assert cycles == [], "import cycles: %s" % "; ".join(" <-> ".join(c) for c in cycles)


def test_sandbox_and_audit_never_import_each_other_except_the_cli_dispatch():
    graph = _graph()
    crossing = sorted((m, d) for m, deps in graph.items() for d in deps
                      if m.split(".")[0] != d.split(".")[0] and "pysandbox_common" not in (m.split(".")[0], d.split(".")[0]))
    assert crossing == [("sandbox.cli", "audit"), ("sandbox.cli", "audit.checks"), ("sandbox.cli", "audit.cli")], crossing
