"""Reading a repository's `.dstack/` folder into a `RepoConfig` (raw, not yet resolved)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dstack.config.files import LineDict, load_yaml, workflow_files
from dstack.config.location import Where, did_you_mean
from dstack.config.prepare import LEGACY_HINT
from dstack.config.repo_providers import PROVIDERS_FILE, read_repo_providers
from dstack.config.variables import Variable, variable_from_yaml
from dstack.models.workflow import RepoProviderSpec

VARIABLES_FILE = ".dstack/variables.yaml"
_LEGACY_TOP = ("steps", "configs")


@dataclass(frozen=True)
class WorkflowEntry:
    """One workflow as written: its raw mapping and where it was defined."""

    name: str
    raw: LineDict
    where: Where

    @property
    def help(self) -> str | None:
        value = self.raw.get("help")
        return value if isinstance(value, str) else None

    @property
    def provider(self) -> str:
        """The provider as written (best effort, for listings); `docker` for image-only."""
        value = self.raw.get("provider")
        if isinstance(value, str) and value.strip():
            return value.split()[0].split("@")[0]
        return "docker" if self.raw.get("image") else "-"


@dataclass
class RepoConfig:
    """All workflows, variables and providers (`.dstack/providers.yaml`) of one `.dstack/`."""

    root: Path
    workflows: dict[str, WorkflowEntry] = field(default_factory=dict)
    variables: dict[str, dict[str, Variable]] = field(default_factory=dict)
    custom_providers: dict[str, RepoProviderSpec] = field(default_factory=dict)

    def workflow_names(self) -> list[str]:
        """Names in file order (`.dstack/workflows.yaml` first, then `workflows/*` sorted)."""
        return list(self.workflows)

    def entries(self) -> Iterator[WorkflowEntry]:
        return iter(self.workflows.values())

    def help(self, name: str) -> str | None:
        return self.workflows[name].help

    def provider(self, name: str) -> str:
        return self.workflows[name].provider

    def declared_variables(self, name: str) -> dict[str, Variable]:
        """The `global` section, then the workflow's own section (it wins)."""
        return {**self.variables.get("global", {}), **self.variables.get(name, {})}

    def variable_defaults(self, name: str) -> dict[str, str]:
        """Variables of a workflow with their default text, for `dstack run WF --help`."""
        return {key: var.text for key, var in self.declared_variables(name).items()}


def load_config(root: Path) -> RepoConfig:
    """Read `.dstack/workflows.yaml`, `.dstack/workflows/*.y(a)ml`, `variables.yaml` and
    `providers.yaml`.

    ``root`` is the folder holding `.dstack/`. Raises `ConfigError` (with ``file:line``) on
    bad YAML, unknown top-level keys, legacy formats and a workflow name defined twice.
    """
    config = RepoConfig(root=root)
    for path in workflow_files(root):
        shown = path.relative_to(root).as_posix()
        for entry in _read_workflows(path, shown):
            _add(config, entry)
    variables = root / VARIABLES_FILE
    if variables.is_file():
        config.variables = _read_variables(variables, VARIABLES_FILE)
    config.custom_providers = read_repo_providers(root / PROVIDERS_FILE)
    return config


def _add(config: RepoConfig, entry: WorkflowEntry) -> None:
    first = config.workflows.get(entry.name)
    if first is not None:
        raise entry.where.error(
            f"workflow '{entry.name}' is defined twice (first at {first.where.source})",
            hint="rename or remove one of them",
        )
    config.workflows[entry.name] = entry


def _read_workflows(path: Path, shown: str) -> list[WorkflowEntry]:
    data = load_yaml(path, shown)
    if data is None:
        return []
    where = Where(shown, getattr(data, "line", None))
    if not isinstance(data, LineDict):
        raise where.error("expected a mapping with a 'workflows:' list")
    _check_top_level(data, "workflows", where)
    items = data.get("workflows")
    if items is None:
        return []
    if isinstance(items, LineDict):
        items = [items]  # `workflows:` written as one mapping, the `- ` left out
    if not isinstance(items, list):
        raise where.at(data.key_line("workflows")).error("'workflows' must be a list")
    return [_entry(item, where.at(data.key_line("workflows"))) for item in items]


def _check_top_level(data: LineDict, expected: str, where: Where) -> None:
    for key in data:
        here = where.at(data.key_line(key))
        if key in _LEGACY_TOP:
            raise here.error(f"unsupported legacy format (2021): '{key}:'", hint=LEGACY_HINT)
        if key != expected:
            raise here.error(
                f"unknown top-level key '{key}'",
                hint=did_you_mean(str(key), [expected]) or f"the file holds only '{expected}:'",
            )


def _entry(item: Any, where: Where) -> WorkflowEntry:
    if not isinstance(item, LineDict):
        raise where.error(f"a workflow must be a mapping with a name, got {item!r:.40}")
    here = where.at(item.line)
    name = item.get("name")
    if name is None and "id" in item:
        raise here.error("unsupported legacy format (2021): key 'id'", hint=LEGACY_HINT)
    if not isinstance(name, str) or not name.strip():
        raise here.error("a workflow needs a 'name' (a string)")
    return WorkflowEntry(name=name, raw=item, where=Where(where.file, item.line, name))


def _read_variables(path: Path, shown: str) -> dict[str, dict[str, Variable]]:
    data = load_yaml(path, shown)
    if data is None:
        return {}
    where = Where(shown, getattr(data, "line", None))
    if not isinstance(data, LineDict):
        raise where.error("expected a mapping with a 'variables:' section")
    _check_top_level(data, "variables", where)
    sections = data.get("variables")
    if sections is None:
        return {}
    if not isinstance(sections, LineDict):
        raise where.at(data.key_line("variables")).error("'variables' must be a mapping")
    return {
        str(name): _section(section, where.at(sections.key_line(name)), str(name))
        for name, section in sections.items()
    }


def _section(section: Any, where: Where, name: str) -> dict[str, Variable]:
    if section is None:
        return {}
    if not isinstance(section, LineDict):
        raise where.error(f"variables of '{name}' must be a mapping of name: value")
    result: dict[str, Variable] = {}
    for key, value in section.items():
        if isinstance(value, dict | list) or not isinstance(value, str | int | float | None):
            raise where.at(section.key_line(key)).error(
                f"variable '{key}' must be a number or a string, got {value!r:.40}"
            )
        result[str(key)] = variable_from_yaml(value, section.raw_text.get(key))
    return result
