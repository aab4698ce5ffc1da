"""The layers of DESIGN.md ("Layers"), checked on the source: every import of every module —
at module level, inside functions, under `TYPE_CHECKING` — points down.

"Dependencies point down: cli → api → (HTTP) → server → services → db/storage/backends;
runner → api-for-runners, storage; everything may use models, errors. config and providers
are pure and importable without a server."

`ALLOWED` spells that out per unit (a package, a top-level module or a part of the server):
what a unit's modules may import besides their own unit and `COMMON`. A module that fits no
unit fails `test_every_module_has_a_unit`: a new folder or module is placed here first.
`EXCEPTIONS` lists the few imports that cross the rule today, each with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import dstack

SRC = Path(dstack.__file__).parent

# What every unit may use (except the foundation itself, below): the package's version, the
# errors, the models, and dependency-free helpers (threads, pid locks).
COMMON = ("dstack", "dstack.errors", "dstack.models", "dstack.background", "dstack.pidlock")

# The server's foundation: what its services, scheduler and HTTP edge all stand on.
SERVER_BASE = (
    "dstack.server.context",
    "dstack.server.db",
    "dstack.server.errors",
    "dstack.server.principals",
    "dstack.server.settings",
    "dstack.server.tokens",
)
# The programs read the settings and the home's layout; the libraries get them passed in.
SETTINGS = ("dstack.settings", "dstack.paths")

ALLOWED: dict[str, tuple[str, ...]] = {
    # --- the foundation: imports nothing above it ------------------------------------------
    "dstack": (),
    "dstack.errors": (),
    "dstack.models": ("dstack.errors",),
    "dstack.background": (),
    "dstack.pidlock": (),
    "dstack.paths": (),
    "dstack.settings": ("dstack.paths",),
    # --- pure libraries: importable without a server, a runner or a CLI -----------------
    "dstack.config": (),
    "dstack.providers": ("dstack.config",),
    "dstack.repo": (),
    "dstack.storage": (),  # local, S3, memory: bytes in, bytes out
    "dstack.tunnel": (),  # the protocol only (wire, pipe, relay, hub, client)
    "dstack.backends": ("dstack.storage",),
    # --- the one HTTP transport to a server, and the clients on it ------------------------
    # (its blob stores, `api.blobs` and `api.presigned`, implement `storage.base.BlobStore`)
    "dstack.api": ("dstack.config", "dstack.providers", "dstack.repo", "dstack.storage"),
    # --- the server, top to bottom ------------------------------------------------------
    "dstack.server": (),
    "dstack.server.app": ("dstack.server", "dstack.storage", "dstack.backends", "dstack.ui"),
    # the web UI: pages on the services, as the routers are (the app mounts it)
    "dstack.ui": ("dstack.server.auth", "dstack.server.services", *SERVER_BASE, "dstack.storage"),
    "dstack.server.local_main": ("dstack.server", *SETTINGS),  # the local server's process
    "dstack.server.local": ("dstack.server.settings", *SETTINGS),  # starts it, in the CLI
    # supervises the local runner (hands it its token in `settings.RUNNER_TOKEN`)
    "dstack.server.local_runner": ("dstack.server.settings", "dstack.settings"),
    "dstack.server.listen": (),
    "dstack.server.middleware": ("dstack.server.auth", *SERVER_BASE),
    "dstack.server.routers": (
        "dstack.server.auth",
        "dstack.server.services",
        *SERVER_BASE,
        "dstack.tunnel",
    ),
    "dstack.server.auth": ("dstack.server.services", *SERVER_BASE),
    "dstack.server.scheduler": ("dstack.server.services", *SERVER_BASE, "dstack.backends"),
    "dstack.server.services": (
        *SERVER_BASE,
        "dstack.storage",
        "dstack.backends",
        "dstack.repo",
        "dstack.tunnel",
    ),
    "dstack.server.context": (
        "dstack.backends",
        "dstack.server.principals",
        "dstack.server.settings",
        "dstack.storage",
        "dstack.tunnel",
    ),
    "dstack.server.storage": ("dstack.server.settings", "dstack.storage"),
    "dstack.server.db": (),
    "dstack.server.migrations": ("dstack.server.db",),
    "dstack.server.errors": (),
    "dstack.server.principals": (),
    "dstack.server.settings": ("dstack.paths",),
    "dstack.server.tokens": (),
    # --- the runner: the runners' API client, storage, its tunnel agent ------------------
    "dstack.runner": (
        "dstack.api.runner",
        "dstack.storage",
        "dstack.tunnel",
        "dstack.config",
        "dstack.providers",
        "dstack.repo",
        *SETTINGS,
    ),
    # --- the CLI: reaches a server only through api/ --------------------------------------
    "dstack.cli": (
        "dstack.api",
        "dstack.tunnel",
        "dstack.config",
        "dstack.providers",
        "dstack.repo",
        *SETTINGS,
    ),
    "dstack.__main__": ("dstack.cli",),
}

# Units that hold only their own module, not everything whose name starts with theirs (in
# `ALLOWED`'s lists, `dstack` too means the package's own module, its version).
EXACT_UNITS = {"dstack", "dstack.server"}
# The foundation does not get `COMMON`: what it may use is all in its own line.
FOUNDATION = {"dstack", "dstack.errors", "dstack.models", "dstack.background"}

# importer module → (what else it may import, why)
EXCEPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "dstack.cli.server": (
        (
            "dstack.server.app",
            "dstack.server.settings",
            "dstack.server.listen",
            "dstack.server.db.engine",
            "dstack.storage.s3",
            "dstack.server.local",
        ),
        "`dstack server` runs the server in its own process: it builds the server's settings "
        "(checking --database and --storage before anything starts) and serves its app; "
        "`dstack server status | stop` read and stop the embedded local server",
    ),
    "dstack.cli.context": (
        ("dstack.server.local",),
        "the embedded local server (DESIGN.md, 'Local'): the CLI starts it on demand",
    ),
    "dstack.server.local_runner": (
        ("dstack.runner.credential", "dstack.runner.lock"),
        "the local server supervises its runner's process and work dir: it waits on the "
        "runner's lock and points the runner's stored credential at its new URL, in the "
        "runner's own formats",
    ),
}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int

    def __str__(self) -> str:
        path = _modules()[self.importer].relative_to(SRC.parent)
        return f"{path}:{self.line}: {self.importer} imports {self.target}"


@cache
def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _module_of(name: str) -> str:
    """The module `name` lives in (`dstack.x.y.Name` → `dstack.x.y`)."""
    while name not in _modules():
        name = name.rpartition(".")[0]
    return name


def _imported_names(module: str, tree: ast.AST) -> Iterator[tuple[str, int]]:
    is_package = _modules()[module].name == "__init__.py"
    for node in ast.walk(tree):  # every level: module, functions, TYPE_CHECKING blocks
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                yield (f"{base}.{alias.name}", node.lineno)


@cache
def _imports() -> tuple[Import, ...]:
    found: dict[tuple[str, str, int], Import] = {}
    for module, path in _modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, line in _imported_names(module, tree):
            if name == "dstack" or name.startswith("dstack."):
                target = _module_of(name)
                if target != module:
                    found[module, target, line] = Import(module, target, line)
    return tuple(found.values())


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _within(module: str, prefix: str) -> bool:
    """Whether `module` is one `ALLOWED` lets import with `prefix`."""
    return module == prefix if prefix == "dstack" else _under(module, prefix)


def unit_of(module: str) -> str | None:
    """The unit of `ALLOWED` that `module` belongs to: the longest that holds it."""
    units = [
        unit
        for unit in ALLOWED
        if (module == unit if unit in EXACT_UNITS else _under(module, unit))
    ]
    return max(units, key=len) if units else None


def _allowed(imp: Import) -> bool:
    unit = unit_of(imp.importer)
    assert unit is not None
    if unit_of(imp.target) == unit:
        return True
    allowed = ALLOWED[unit] + (() if unit in FOUNDATION else COMMON)
    allowed += EXCEPTIONS.get(imp.importer, ((), ""))[0]
    return any(_within(imp.target, prefix) for prefix in allowed)


def test_every_module_has_a_unit() -> None:
    unplaced = [module for module in _modules() if unit_of(module) is None]
    assert not unplaced, f"place these modules in ALLOWED (tests/test_layers.py): {unplaced}"


def test_imports_point_down() -> None:
    upward = [str(imp) for imp in _imports() if not _allowed(imp)]
    assert not upward, "imports against the layers (DESIGN.md):\n" + "\n".join(upward)


def test_every_exception_is_still_needed() -> None:
    """An exception no import uses any more is dropped from the list."""
    for importer, (targets, _why) in EXCEPTIONS.items():
        for prefix in targets:
            uses = [i for i in _imports() if i.importer == importer and _within(i.target, prefix)]
            assert uses, f"{importer} no longer imports {prefix}: drop it from EXCEPTIONS"


# The rules the issue spelled out, checked on their own so that widening `ALLOWED` cannot
# quietly undo them: (importer unit, what it must never import).
NEVER = [
    ("dstack.errors", ("dstack",)),
    ("dstack.models", ("dstack.config", "dstack.providers", "dstack.repo", "dstack.storage")),
    ("dstack.models", ("dstack.server", "dstack.runner", "dstack.cli", "dstack.api")),
    ("dstack.tunnel", ("dstack.server", "dstack.runner", "dstack.cli", "dstack.api")),
    ("dstack.api", ("dstack.server", "dstack.runner", "dstack.cli", "dstack.tunnel")),
    ("dstack.storage", ("dstack.api", "dstack.server", "dstack.runner", "dstack.cli")),
    ("dstack.config", ("dstack.server", "dstack.runner", "dstack.cli", "dstack.api")),
    ("dstack.providers", ("dstack.server", "dstack.runner", "dstack.cli", "dstack.api")),
    ("dstack.server.services", ("dstack.server.scheduler", "dstack.server.routers")),
    ("dstack.server.services", ("dstack.server.app", "dstack.server.auth")),
    ("dstack.runner", ("dstack.server", "dstack.cli")),
]


@pytest.mark.parametrize(("unit", "forbidden"), NEVER)
def test_never(unit: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        str(imp)
        for imp in _imports()
        if _under(imp.importer, unit) and any(_under(imp.target, p) for p in forbidden)
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    """No module reaches itself through imports (function-level ones included: an import
    hidden in a function still makes the two modules one)."""
    edges: dict[str, set[str]] = {}
    for imp in _imports():
        edges.setdefault(imp.importer, set()).add(imp.target)
    cycles = [cycle for cycle in _cycles(edges) if len(cycle) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" ⇄ ".join(c) for c in cycles)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
                    found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _lazy_imports_without_reason(path: Path) -> Iterator[int]:
    """Lines of `path` importing inside a function with no comment saying why (issue #15: a
    function-level import only where it saves measured start-up time, and says so).

    A comment counts on the import's own line or on the line above the run of imports it
    starts (blank lines between the imports of one run are fine)."""
    text = path.read_text()
    lines = text.splitlines()
    imports = []
    for function in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    imports.append(node)
    import_lines = {
        line for node in imports for line in range(node.lineno, (node.end_lineno or 0) + 1)
    }
    for node in imports:
        if "#" in lines[node.lineno - 1]:
            continue
        above = node.lineno - 1
        while above >= 1 and (above in import_lines or not lines[above - 1].strip()):
            above -= 1
        if above < 1 or not lines[above - 1].lstrip().startswith("#"):
            yield node.lineno


def test_function_level_imports_say_why() -> None:
    bare = [
        f"{path.relative_to(SRC.parent)}:{line}"
        for path in _modules().values()
        for line in _lazy_imports_without_reason(path)
    ]
    assert not bare, (
        "imports inside a function without a comment saying what they save (move them to the "
        "top of the module, or say e.g. `# boto3: ~80 ms the CLI does not need`):\n"
        + "\n".join(bare)
    )
