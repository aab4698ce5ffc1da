"""Shape fixes done on the raw mapping before it is typed: legacy formats, wrappers, moved keys.

Everything here works on `LineDict`s so errors can still point at the line of a key.
"""

from __future__ import annotations

import re

from dstack.config.files import LineDict
from dstack.config.location import Where, did_you_mean
from dstack.config.schema import RawResources, RawWorkflow, field_names

LEGACY_HINT = (
    "the 2021 format (steps/configs, id/params/dependencies, depends-on as a mapping) is not "
    "supported: give each workflow a name, provider/image and commands, and list "
    "depends-on as workflow names"
)
_LEGACY_KEYS = ("id", "params", "dependencies")
_GPU_KEY = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)/gpu$")
_CUSTOM_PROVIDER_HINT = (
    "providers from other repositories are not supported: use a built-in provider "
    "(bash, python, docker, ...) and put the custom steps in its commands"
)


def prepare_workflow(raw: LineDict, where: Where, *, open_keys: bool = False) -> LineDict:
    """Return a copy of ``raw`` in the shape `RawWorkflow` expects, or raise `ConfigError`.

    ``open_keys``: keys `RawWorkflow` does not know are kept (the workflow's provider is one
    of `.dstack/providers.yaml`, whose commands read them), not refused."""
    check_legacy_item(raw, where)
    data = _unwrap_template(raw, where)
    _check_provider(data, where)
    _move_workflow_level_resources(data)
    if isinstance(data.get("resources"), LineDict):
        data["resources"] = _prepare_resources(data["resources"], where)
    if isinstance(data.get("deps"), dict):
        data["deps"] = [data["deps"]]  # a single mapping where a list was meant
    if not open_keys:
        _check_keys(data, field_names(RawWorkflow), where, "")
    return data


def check_legacy_item(raw: LineDict, where: Where) -> None:
    """The 2021 workflow items (``id``, ``params``, ``dependencies``, mapping depends-on)."""
    for key in _LEGACY_KEYS:
        if key in raw:
            raise where.at(raw.key_line(key)).error(
                f"unsupported legacy format (2021): key '{key}'", hint=LEGACY_HINT
            )
    if isinstance(raw.get("depends-on"), dict):
        raise where.at(raw.key_line("depends-on")).error(
            "unsupported legacy format (2021): 'depends-on' is a mapping", hint=LEGACY_HINT
        )
    depends_on = raw.get("depends-on")
    for item in depends_on if isinstance(depends_on, list) else []:
        if isinstance(item, dict) and len(item) == 1:
            workflow, tag = next(iter(item.items()))
            raise where.at(raw.key_line("depends-on")).error(
                f"'depends-on' item is a mapping {{{workflow}: {tag}}}",
                hint=f"write it as '{workflow}:{tag}' (quoted or without a space)",
            )


def _unwrap_template(raw: LineDict, where: Where) -> LineDict:
    """The 2022-02 `template:` wrapper around image/commands/artifacts/resources."""
    data = LineDict(raw).copy_lines(raw)
    template = data.pop("template", None)
    if template is None:
        return data
    if not isinstance(template, LineDict):
        raise where.at(raw.key_line("template")).error("'template' must be a mapping")
    for key, value in template.items():
        if key in data:
            raise where.at(template.key_line(key)).error(
                f"'{key}' is given both in 'template' and in the workflow"
            )
        data[key] = value
        data.key_lines[key] = template.key_line(key)
    return data


def _check_provider(data: LineDict, where: Where) -> None:
    provider = data.get("provider")
    if isinstance(provider, dict):
        raise where.at(data.key_line("provider")).error(
            "custom providers from another repository are not supported",
            hint=_CUSTOM_PROVIDER_HINT,
        )


def _move_workflow_level_resources(data: LineDict) -> None:
    """`gpu:` (2022-03) and `nodes:` (torchrun, 2022-06) written next to `resources`."""
    for key in ("gpu", "nodes"):
        if key not in data:
            continue
        resources = data.get("resources")
        if resources is None:
            resources = LineDict()
            resources.line = data.key_line(key)
            data["resources"] = resources
            data.key_lines["resources"] = resources.line
        if isinstance(resources, LineDict) and key not in resources:
            resources[key] = data[key]
            resources.key_lines[key] = data.key_line(key)
        del data[key]


def _prepare_resources(resources: LineDict, where: Where) -> LineDict:
    """`v100/gpu: 2` (2022-03 docs) → `gpu: {name: V100, count: 2}`."""
    result = LineDict().copy_lines(resources)
    for key, value in resources.items():
        match = _GPU_KEY.match(key) if isinstance(key, str) else None
        if match is None:
            result[key] = value
            continue
        if "gpu" in resources:
            raise where.at(resources.key_line(key)).error(
                f"'resources.{key}' and 'resources.gpu' are both given"
            )
        gpu = LineDict({"name": match.group("name").upper(), "count": value})
        gpu.line = resources.key_line(key)
        gpu.key_lines = {"name": gpu.line, "count": gpu.line}
        result["gpu"] = gpu
        result.key_lines["gpu"] = gpu.line
    _check_keys(result, field_names(RawResources), where, "resources.")
    return result


def _check_keys(data: LineDict, known: list[str], where: Where, prefix: str) -> None:
    for key in data:
        if key not in known:
            raise where.at(data.key_line(key)).error(
                f"unknown key '{prefix}{key}'",
                hint=did_you_mean(str(key), known) or "known keys: " + ", ".join(known),
            )
