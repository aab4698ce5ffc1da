"""`.dstack/providers.yaml`: the repository's own providers, `{name, image, commands[, artifacts]}`.

The forms the real repositories wrote (and two close ones):

    providers:                     providers:               providers:
      - name: hello                  name: hello              hello:
        image: python:3.9            image: python:3.9          image: python:3.9
        commands: [python3 main.py]                             commands: [python3 main.py]
        artifacts: [output]

An empty file, or `providers:` with nothing under it, defines none. A provider without an
`image` runs in the default image (as `provider: bash` does). Any other shape, or an unknown
key, is a `ConfigError` naming the file, the line and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dstack.config.files import LineDict, load_yaml
from dstack.config.location import Where, did_you_mean, show
from dstack.models.paths import PathError, check_declared
from dstack.models.workflow import ArtifactSpec, RepoProviderSpec, SourceLocation

PROVIDERS_FILE = ".dstack/providers.yaml"
_KEYS = ("name", "image", "commands", "artifacts")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_EXAMPLE = "providers: [{name: hello, image: python:3.9, commands: [python3 main.py]}]"


def read_repo_providers(path: Path, shown: str = PROVIDERS_FILE) -> dict[str, RepoProviderSpec]:
    """The providers of `path` by name (none when the file does not exist)."""
    if not path.is_file():
        return {}
    data = load_yaml(path, shown)
    where = Where(shown, getattr(data, "line", None))
    if data is None:
        return {}
    if isinstance(data, LineDict):
        for key in data:
            if key != "providers":
                raise where.at(data.key_line(key)).error(
                    f"unknown top-level key '{key}'",
                    hint=did_you_mean(str(key), ["providers"]) or "the file holds 'providers:'",
                )
        items = data.get("providers")
        where = where.at(data.key_line("providers"))
    else:
        items = data
    return _items(items, where)


def _items(items: Any, where: Where) -> dict[str, RepoProviderSpec]:
    if items is None:
        return {}
    if isinstance(items, LineDict) and "name" not in items:
        # `providers: {hello: {image: ..., commands: ...}}`: the names are the keys
        pairs = [(name, value, where.at(items.key_line(name))) for name, value in items.items()]
    elif isinstance(items, LineDict):
        pairs = [(None, items, where)]
    elif isinstance(items, list):
        pairs = [(None, item, where.at(getattr(item, "line", where.line))) for item in items]
    else:
        raise where.error(
            f"'providers' must be a list of providers, got {show(items)}", hint=_EXAMPLE
        )
    found: dict[str, RepoProviderSpec] = {}
    for name, item, here in pairs:
        spec = _provider(name, item, here)
        if spec.name in found:
            raise here.error(
                f"provider '{spec.name}' is defined twice (first at {found[spec.name].source})",
                hint="rename or remove one of them",
            )
        found[spec.name] = spec
    return found


def _provider(name: Any, item: Any, where: Where) -> RepoProviderSpec:
    if not isinstance(item, LineDict):
        raise where.error(
            f"a provider must be a mapping {{name, image, commands}}, got {show(item)}",
            hint=_EXAMPLE,
        )
    where = where.at(item.line)
    for key in item:
        if key not in _KEYS:
            raise where.at(item.key_line(key)).error(
                f"unknown key '{key}' in a provider",
                hint=did_you_mean(str(key), list(_KEYS)) or f"known keys: {', '.join(_KEYS)}",
            )
    if name is not None and "name" in item:
        raise where.at(item.key_line("name")).error(f"provider '{name}' has a second 'name'")
    name = item.get("name", name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise where.at(item.key_line("name")).error(
            f"invalid provider 'name' {show(name)}",
            hint="letters, digits, '.', '_' and '-', e.g. `name: download-data`",
        )
    image = item.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise where.at(item.key_line("image")).error(
            f"invalid 'image' of provider '{name}': expected an image name, got {show(image)}",
            hint="e.g. `image: python:3.9`",
        )
    return RepoProviderSpec(
        name=name,
        image=image.strip() if image else None,
        commands=_commands(item.get("commands"), where.at(item.key_line("commands")), name),
        artifacts=_artifacts(item.get("artifacts"), where.at(item.key_line("artifacts")), name),
        source=SourceLocation(file=where.file, line=where.line),
    )


def _commands(value: Any, where: Where, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(c, str | int | float) for c in value):
        return [str(c) for c in value]
    raise where.error(f"invalid 'commands' of provider '{name}': expected a list of commands")


def _artifacts(value: Any, where: Where, name: str) -> list[ArtifactSpec]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    result: list[ArtifactSpec] = []
    for item in items:
        path = item.get("path") if isinstance(item, dict) else item
        mount = bool(item.get("mount", False)) if isinstance(item, dict) else False
        if not isinstance(path, str):
            raise where.error(
                f"invalid 'artifacts' item of provider '{name}': {show(item)}",
                hint="a list of paths, e.g. `artifacts: [output]`",
            )
        try:
            result.append(ArtifactSpec(path=check_declared(path), mount=mount))
        except PathError as exc:
            raise where.error(f"invalid 'artifacts' item of provider '{name}': {exc}") from None
    return result
