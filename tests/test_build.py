"""BUILD covers every module, tool and test (Bazel can't fetch its rules here, so we check), and the
library's parts import each other without a cycle, module by module and subpackage by subpackage."""

import ast
import glob
import os
import sys

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_build  # noqa: E402

PATTERNS = ("proxyless_tf/**/*.py", "mobile/**/*.py", "tools/*.py", "tests/**/*.py", "research/**/*.py")


def _targets():
    """Evaluate BUILD's Starlark subset with recording stand-ins for the rules."""
    targets = []

    def rule(kind):
        def record(**kw):
            targets.append((kind, kw))
        return record

    env = {k: rule(k) for k in ("py_library", "py_test", "py_binary")}
    env.update(load=lambda *a: None, package=lambda **kw: None, glob=lambda *a, **kw: [])
    exec(compile(open(os.path.join(ROOT, "BUILD")).read(), "BUILD", "exec"), env)
    return targets


def _cycle(graph):
    """One cycle of a {node: set(nodes)} graph as a list, or None (depth-first, three colours)."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def _module_graph():
    """{module: modules of the library it imports}, lazy imports inside functions included."""
    mods = {}
    for path in glob.glob(os.path.join(ROOT, "proxyless_tf", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        mods[rel.removesuffix(".__init__")] = path
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("proxyless_tf"):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    deps.add(full if full in mods else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def test_every_python_file_is_in_a_target():
    covered = {s for _, kw in _targets() for s in kw.get("srcs", [])}
    files = {os.path.relpath(p, ROOT) for pat in PATTERNS
             for p in glob.glob(os.path.join(ROOT, pat), recursive=True) if "__pycache__" not in p}
    missing = sorted(files - covered)
    assert not missing, f"not in BUILD (run python tools/gen_build.py): {missing}"
    stale = sorted(covered - files)
    assert not stale, f"BUILD names files that do not exist: {stale}"


def test_every_test_file_has_a_py_test():
    tests = {kw["srcs"][0] for kind, kw in _targets() if kind == "py_test"}
    files = {os.path.relpath(p, ROOT) for d in ("tests", "research/tests")
             for p in glob.glob(os.path.join(ROOT, d, "test_*.py"))}
    assert tests == files


def test_build_is_what_gen_build_writes():
    assert open(os.path.join(ROOT, "BUILD")).read() == gen_build.render(), "run python tools/gen_build.py"


def test_subpackages_depend_on_each_other_without_a_cycle():
    _, graph = gen_build.library_graph()
    graph = {k: v - {"proxyless_tf"} for k, v in graph.items() if k != "proxyless_tf"}  # the facade imports all
    assert _cycle(graph) is None, _cycle(graph)
    assert "research" not in set().union(*(graph[k] for k in graph if k != "research"))


def test_library_modules_import_each_other_without_a_cycle():
    graph = _module_graph()
    graph.pop("proxyless_tf")  # the facade's lazy __getattr__ imports the public names on demand
    for deps in graph.values():
        deps.discard("proxyless_tf")
    assert len(graph) > 40
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
