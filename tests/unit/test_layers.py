"""The plan of the house as a test: no import cycle anywhere in src/, and the layers of
docs/ARCHITECTURE.md hold (who may import whom).

Imports are read with `ast` from the source (no module is imported), at any depth: an import
inside a function is a dependency too, only later. Imports under `if TYPE_CHECKING:` are
left out: they never run; so are imports of a module's own package (Python has run it
before the module starts). A failure names the importing file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

PROTOCOL = {
    "forklift.http1",
    "forklift.uwsgi",
    "forklift.framing",
    "forklift.abnf",
    "forklift.proxy_protocol",
}
GATEWAY = {"forklift.wsgi", "forklift.proxy"}
SINK = {"forklift.sink"}
PROCESS = {"forklift.worker", "forklift.master", "forklift.connection", "forklift.pool"}
APP_LOADING = {"forklift.appload", "forklift.wsgi"}  # import the app, or call it

# (what the rule protects, importers, modules they must not import)
CONTRACTS = [
    (
        "protocol code is sans-IO: it knows no worker, gateway or socket",
        PROTOCOL,
        PROCESS | GATEWAY | SINK | {"forklift.control_server", "forklift.server"},
    ),
    ("the gateway knows no protocol and no socket", GATEWAY, PROTOCOL - {"forklift.abnf"} | SINK),
    ("the sink moves bytes; framing is the protocol's", SINK, PROTOCOL | GATEWAY | PROCESS),
    ("the grammar is a leaf", {"forklift.abnf"}, "forklift.*"),
    ("memos are a leaf", {"forklift.memo"}, "forklift.*"),
    (
        "the master forks, reaps and reloads; it never loads or calls the app",
        {"forklift.master"},
        APP_LOADING | PROTOCOL,
    ),
    ("gameprogress is served by forklift, never imports it", "gameprogress.*", "forklift.*"),
    ("deploy knows no HTTP internals", "forklift.deploy.*", PROTOCOL | GATEWAY | SINK | PROCESS),
]


# --- reading the imports --------------------------------------------------------------------
def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node, except what sits under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def imports_of(path: Path, name: str, modules: set) -> list:
    """[(imported module, line)] for the imports of our own modules in `path`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                if node.module:
                    base.append(node.module)
                base = ".".join(base)
            else:
                base = node.module or ""
            # `from . import x` imports the module x when there is one, else a name of base.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # `import a.b.c` runs a, a.b and a.b.c: the nearest module of ours is the edge.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # A module's own packages are imported before it runs, whatever it imports: an
            # edge to one (`from . import __version__`) orders nothing and is no cycle.
            if target and target != name and not name.startswith(target + "."):
                found.append((target, node.lineno))
    return found


def import_graph(root: Path) -> dict:
    """{module: [(imported module, file, line)]} for every module under `root`."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        rel = path.relative_to(root.parent) if root.parent in path.parents else path
        graph[name] = [(t, f"{rel}:{line}") for t, line in imports_of(path, name, set(files))]
    return graph


# --- the checks -----------------------------------------------------------------------------
def find_cycle(graph: dict) -> list | None:
    """One import cycle as [(module, imported, where)...], or None."""
    state = {}  # module -> 1 while on the path, 2 when done
    path = []

    def visit(module):
        state[module] = 1
        for target, where in graph.get(module, ()):
            path.append((module, target, where))
            if state.get(target) == 1:
                start = next(i for i, edge in enumerate(path) if edge[0] == target)
                return path[start:]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
            path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def _matches(module: str, pattern) -> bool:
    if isinstance(pattern, str):
        prefix = pattern[:-2]
        return module == prefix or module.startswith(prefix + ".")
    return module in pattern


def broken_contracts(graph: dict, contracts=CONTRACTS) -> list:
    """One line per import that breaks a contract: the rule, the file and line, the edge."""
    problems = []
    for rule, importers, forbidden in contracts:
        for module in sorted(graph):
            if not _matches(module, importers):
                continue
            for target, where in graph[module]:
                if _matches(target, forbidden) and not _matches(target, importers):
                    problems.append(f"{where}: {module} imports {target} ({rule})")
    return problems


def describe_cycle(cycle: list) -> str:
    return (
        "import cycle: "
        + " -> ".join(f"{module} ({where})" for module, _, where in cycle)
        + f" -> {cycle[0][0]}"
    )


# --- the tests ------------------------------------------------------------------------------
def test_src_has_no_import_cycle():
    cycle = find_cycle(import_graph(SRC))
    assert cycle is None, describe_cycle(cycle)


def test_src_keeps_its_layers():
    problems = broken_contracts(import_graph(SRC))
    assert not problems, "layer contracts broken:\n" + "\n".join(problems)


def test_every_contract_names_modules_that_exist():
    # A renamed module would silently make its contract vacuous.
    modules = set(import_graph(SRC))
    for rule, importers, forbidden in CONTRACTS:
        for side in (importers, forbidden):
            if isinstance(side, str):
                assert any(_matches(m, side) for m in modules), (rule, side)
            else:
                assert side <= modules, (rule, side - modules)


def _tree(tmp_path: Path, files: dict) -> Path:
    root = tmp_path / "src"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_late_import_is_found_and_named(tmp_path):
    root = _tree(
        tmp_path,
        {
            "forklift/__init__.py": "",
            "forklift/cli.py": "def main():\n    from .deploy.cli import run\n",
            "forklift/deploy/__init__.py": "",
            "forklift/deploy/cli.py": "from ..cli import main\n",
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle is not None
    message = describe_cycle(cycle)
    assert "forklift.cli (src/forklift/cli.py:2)" in message
    assert "forklift.deploy.cli (src/forklift/deploy/cli.py:1)" in message


def test_type_checking_imports_are_no_cycle(tmp_path):
    root = _tree(
        tmp_path,
        {
            "gp/__init__.py": "",
            "gp/a.py": "from .b import B\n",
            "gp/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from .a import A\n",
        },
    )
    assert find_cycle(import_graph(root)) is None


def test_a_forbidden_import_is_named_with_its_file_and_line(tmp_path):
    root = _tree(
        tmp_path,
        {
            "forklift/__init__.py": "",
            "forklift/http1.py": "import os\n\nfrom . import worker\n",
            "forklift/worker.py": "from . import http1\n",
            "gameprogress/__init__.py": "",
            "gameprogress/app.py": "import forklift.worker\n",
        },
    )
    graph = import_graph(root)
    problems = broken_contracts(
        graph,
        [
            ("protocol is sans-IO", {"forklift.http1"}, {"forklift.worker"}),
            ("gameprogress never imports forklift", "gameprogress.*", "forklift.*"),
        ],
    )
    assert problems == [
        "src/forklift/http1.py:3: forklift.http1 imports forklift.worker (protocol is sans-IO)",
        "src/gameprogress/app.py:1: gameprogress.app imports forklift.worker"
        " (gameprogress never imports forklift)",
    ]
