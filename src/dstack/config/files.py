"""Finding the `.dstack/` folder and loading its YAML files with line numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode

from dstack.errors import ConfigError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class LineDict(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its keys were written.

    ``line`` is the 1-based line of the mapping's first key (for a list item: the ``- name:``
    line); ``key_lines`` the line of each key; ``raw_text`` the source text of each plain
    scalar value (so ``lr: 0.00002`` can be shown as the user wrote it).
    """

    line: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines: dict[Any, int] = {}
        self.raw_text: dict[Any, str] = {}

    def key_line(self, key: Any) -> int:
        """Line of ``key``, or of the mapping itself when the key is absent."""
        return self.key_lines.get(key, self.line)

    def copy_lines(self, other: LineDict) -> LineDict:
        """Take over ``other``'s line information (used when a mapping is rebuilt)."""
        self.line = other.line
        self.key_lines = dict(other.key_lines)
        self.raw_text = dict(other.raw_text)
        return self


class _LineLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe loader whose mappings are `LineDict`s."""


def _construct_mapping(loader: yaml.SafeLoader, node: MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    mapping = LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError as exc:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key (a list or mapping used as a key)",
                key_node.start_mark,
            ) from exc
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, ScalarNode):
            mapping.raw_text[key] = value_node.value
    return mapping


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


WORKFLOWS_FILE = ".dstack/workflows.yaml"
WORKFLOWS_DIR = ".dstack/workflows"


def workflow_files(root: Path) -> list[Path]:
    """The workflow files of the `.dstack/` folder in `root`: `workflows.yaml`, then
    `workflows/*.y(a)ml` by name."""
    files = [root / WORKFLOWS_FILE] if (root / WORKFLOWS_FILE).is_file() else []
    folder = root / WORKFLOWS_DIR
    if folder.is_dir():
        found = [*folder.glob("*.yaml"), *folder.glob("*.yml")]
        files += sorted(p for p in found if p.is_file())
    return files


def find_dstack_root(start: Path) -> Path:
    """Return the nearest folder at or above ``start`` that holds a `.dstack/` directory.

    The walk stops at the git root (the first folder holding `.git`), or at `/` outside git.
    Raises `ConfigError` when no such folder exists.
    """
    current = start.resolve()
    for folder in (current, *current.parents):
        if (folder / ".dstack").is_dir():
            return folder
        if (folder / ".git").exists():
            break
    raise ConfigError(
        f"no .dstack/ folder in {current} or above it",
        hint="create .dstack/workflows.yaml at the root of your repository, e.g. "
        "`workflows: [{name: hello, provider: bash, commands: [echo hello]}]` "
        '(README.md, "Workflows")',
    )


def load_yaml(path: Path, shown_as: str) -> Any:
    """Load one YAML file; mappings come back as `LineDict`.

    ``shown_as`` is how errors name the file (relative to the repository root). An empty file
    gives ``None``. Unreadable files and YAML syntax errors raise `ConfigError`.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown_as}: cannot read the file: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(shown_as, exc) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{shown_as}: invalid YAML: {exc}", hint="check indentation and quoting"
        ) from exc
    except RecursionError as exc:
        raise ConfigError(f"{shown_as}: the YAML is nested too deeply") from exc
    _check_acyclic(data, shown_as)
    return data


def _syntax_error(shown_as: str, exc: yaml.MarkedYAMLError) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    where = f"{shown_as}:{mark.line + 1}:{mark.column + 1}" if mark else shown_as
    problem = exc.problem or exc.context or "invalid YAML"
    return ConfigError(
        f"{where}: invalid YAML: {problem}",
        hint="check the indentation, a space after each ':', and quote values "
        "that start with [, {, *, & or contain ': '",
    )


def _check_acyclic(data: Any, shown_as: str) -> None:
    """Reject self-referencing aliases (`&a [*a]`): nothing downstream expects cycles."""
    done: set[int] = set()
    on_path: set[int] = set()

    def visit(value: Any) -> None:
        if not isinstance(value, dict | list) or id(value) in done:
            return
        if id(value) in on_path:
            raise ConfigError(f"{shown_as}: a YAML alias refers to itself")
        on_path.add(id(value))
        for child in value.values() if isinstance(value, dict) else value:
            visit(child)
        on_path.discard(id(value))
        done.add(id(value))

    try:
        visit(data)
    except RecursionError as exc:
        raise ConfigError(f"{shown_as}: the YAML is nested too deeply") from exc
