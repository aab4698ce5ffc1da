"""Typed raw workflow (`RawWorkflow`) → `WorkflowSpec`: every spelling mapped to one meaning."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from dstack.config.files import LineDict
from dstack.config.location import Where, show
from dstack.config.schema import (
    RawArtifact,
    RawCache,
    RawDep,
    RawGpu,
    RawResources,
    RawRetry,
    RawTrigger,
    RawWorkflow,
)
from dstack.errors import ConfigError
from dstack.models.names import NAME_RULE, name_problem
from dstack.models.paths import PathError, check_declared
from dstack.models.providers import ALIASES, PROVIDER_NAMES
from dstack.models.resources import GpuRequest, ResourcesSpec, parse_memory_mib
from dstack.models.workflow import (
    ArtifactSpec,
    DepKind,
    DepRef,
    RegistryAuth,
    RepoProviderSpec,
    WorkflowSpec,
)

_PYTHON_IN_PROVIDER = re.compile(r"^python(?:==|[:/])?(?P<version>\d+(?:\.\d+)?)$")
_PYTHON_VERSION = re.compile(r"^\d+(?:\.\d+)?$")
# keys that are not a parameter of a `.dstack/providers.yaml` provider: how the workflow is
# named and found, and its env (which the job gets as it is)
_NOT_PARAMS = ("name", "provider", "help", "env", "environment")


def warn(message: str) -> None:
    """A warning line on stderr (through `logging`, imported only when there is one: it is
    start-up time for every command that reads a workflow)."""
    import logging  # ~3 ms: see above

    logging.getLogger(__name__).warning("Warning: %s", message)


def provider_word(value: Any) -> str | None:
    """The name a raw `provider` value gives: `torchrun@experimental --x` → `torchrun`."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str) or not value.split():
        return None
    return value.split()[0].split("@", 1)[0]


def is_builtin(name: str) -> bool:
    """A built-in provider's name, alias, or `python3.9` (python with a version glued on)."""
    return name in PROVIDER_NAMES or name in ALIASES or bool(_PYTHON_IN_PROVIDER.match(name))


def repo_provider_of(
    raw: Mapping[str, Any], custom: Mapping[str, RepoProviderSpec], where: Where | None = None
) -> RepoProviderSpec | None:
    """The `.dstack/providers.yaml` provider the raw workflow names, if any: a built-in name
    wins over it (with a warning, when `where` says which workflow asks)."""
    name = provider_word(raw.get("provider"))
    if name is None or name not in custom:
        return None
    if is_builtin(name):
        if where is not None:
            warn(
                f"{where.file}:{where.line}: provider '{name}' is the built-in one; the provider"
                f" of that name in {custom[name].source} is not used"
            )
        return None
    return custom[name]


def workflow_params(data: Mapping[str, Any]) -> dict[str, str]:
    """The workflow's keys for a `.dstack/providers.yaml` provider: scalars as text (`true`,
    `3`), lists and mappings as JSON; not its name, provider, help or env."""
    import json  # only for workflows of such providers

    params: dict[str, str] = {}
    for key, value in data.items():
        if key in _NOT_PARAMS:
            continue
        if isinstance(value, dict | list):
            params[str(key)] = json.dumps(value, default=str)
        else:
            params[str(key)] = "" if value is None else _text(value)
    return params


def validate_raw(data: LineDict, where: Where) -> RawWorkflow:
    """Type the prepared mapping; a wrong type becomes one `ConfigError` line."""
    try:
        return RawWorkflow.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, data, where) from None


def _translate(exc: ValidationError, data: LineDict, where: Where) -> ConfigError:
    error = exc.errors()[0]
    node: Any = data
    line = data.line
    keys: list[str] = []
    for part in error["loc"]:
        if isinstance(node, dict) and part in node:
            if isinstance(node, LineDict):
                line = node.key_line(part)
            keys.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            keys[-1] += f"[{part}]"
            node = node[part]
            line = node.line if isinstance(node, LineDict) else line
        elif error["type"] == "missing" and isinstance(part, str):
            keys.append(part)
            break
    path = ".".join(keys)
    if error["type"] == "missing":
        return where.at(line).error(f"'{path}' is missing")
    expected = _describe(keys) or error["msg"]
    return where.at(line).error(f"invalid '{path}': expected {expected}, got {show(node)}")


def _describe(keys: list[str]) -> str | None:
    model: type[BaseModel] | None = RawWorkflow
    description = None
    for key in (k.split("[")[0] for k in keys):
        if model is None:
            break
        info = next(
            (f for n, f in model.model_fields.items() if key in (n, f.alias)),
            None,
        )
        if info is None:
            break
        description = info.description
        model = _nested_model(info.annotation)
    return description


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def to_spec(
    raw: RawWorkflow,
    data: LineDict,
    where: Where,
    repo_provider: RepoProviderSpec | None = None,
) -> WorkflowSpec:
    """Build the final spec; ``repo_provider``: the `.dstack/providers.yaml` provider it uses."""
    here = _KeyWhere(data, where)
    provider, glued_python, extra_args = _provider(raw, here, repo_provider)
    python = _python_version(raw.python, here.at("python"))
    version = _python_version(raw.version, here.at("version"))
    try:
        return WorkflowSpec(
            name=_workflow_name(raw.name, here.at("name")),
            provider=provider,
            help=raw.help,
            source=where.source,
            image=raw.image,
            commands=raw.commands,
            setup=[*raw.setup, *raw.before_run],
            entrypoint=raw.entrypoint,
            file=_script(raw, here),
            app=raw.app,
            args=[*_args(raw.args), *extra_args],
            python=python or version or glued_python,
            requirements=raw.requirements,
            env=_env(raw, here),
            artifacts=_artifacts(raw.artifacts, here.at("artifacts")),
            cache=_cache(raw.cache, here.at("cache")),
            deps=_deps(raw, here),
            triggers=_triggers(raw.triggers),
            resources=_resources(raw.resources, here.sub("resources")),
            port_count=_port_count(raw.ports, here.at("ports")),
            ports=_ports(raw.ports, here.at("ports")),
            working_dir=raw.working_dir,
            registry_auth=_registry_auth(raw),
            ssh=raw.ssh,
            retry=_retry(raw.retry),
            labels={key: _text(value) for key, value in (raw.labels or {}).items()},
            repo_provider=repo_provider,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        raise where.error(f"invalid '{key}': {error['msg']}") from None


def _workflow_name(name: str, where: Where) -> str:
    """The one name rule (`dstack.models.names`): the server refuses any other name."""
    problem = name_problem(name)
    if problem is not None:
        raise where.error(f"invalid workflow name {name[:40]!r}: {problem}", hint=NAME_RULE)
    return name


class _KeyWhere:
    """Errors at the line of a key of the workflow mapping (or of a nested mapping)."""

    def __init__(self, data: LineDict, where: Where) -> None:
        self.data = data
        self.where = where

    def at(self, key: str) -> Where:
        return self.where.at(self.data.key_line(key))

    def sub(self, key: str) -> _KeyWhere:
        nested = self.data.get(key)
        if isinstance(nested, LineDict):
            return _KeyWhere(nested, self.at(key))
        return _KeyWhere(LineDict(), self.at(key))


def _provider(
    raw: RawWorkflow, here: _KeyWhere, repo_provider: RepoProviderSpec | None
) -> tuple[str, str | None, list[str]]:
    """Provider name, a Python version glued to it (`python3.9`), extra words (arguments)."""
    value = raw.provider
    if isinstance(value, list):
        if len(value) != 1:
            raise here.at("provider").error("'provider' must be one name, not a list")
        value = value[0]
    if value is None or not value.strip():
        if raw.image:
            return "docker", None, []
        raise here.at("name").error(
            "no 'provider' and no 'image'", hint="add e.g. 'provider: bash' and 'commands:'"
        )
    name, *extra = value.split()
    name = name.split("@", 1)[0]  # `torchrun@experimental`: the branch is not selectable
    if repo_provider is not None:  # `repo_provider_of` chose it: no built-in has that name
        return repo_provider.name, None, extra
    glued = _PYTHON_IN_PROVIDER.match(name)
    if glued:
        return "python", glued.group("version"), extra
    return ALIASES.get(name, name), None, extra


def _python_version(value: Any, where: Where) -> str | None:
    """`3.9`, `"3.9"`, `3` and `[3.9]`; the float 3.1 is how YAML reads `3.10`."""
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1:
        return _python_version(value[0], where)
    if isinstance(value, float) and not isinstance(value, bool):
        text = "3.10" if value == 3.1 else repr(value)
    elif isinstance(value, int | str) and not isinstance(value, bool):
        text = str(value).strip()
    else:
        text = ""
    if not _PYTHON_VERSION.match(text):
        raise where.error(
            f"invalid Python version {show(value)}", hint='write it as a string, e.g. "3.10"'
        )
    return text


def _script(raw: RawWorkflow, here: _KeyWhere) -> str | None:
    given = {
        key: value
        for key in ("file", "python_script", "script", "target")
        if (value := getattr(raw, key)) is not None
    }
    if len(set(given.values())) > 1:
        keys = sorted(given)
        raise here.at(keys[1]).error(f"give only one of {', '.join(keys)}")
    return next(iter(given.values()), None)


def _retry(value: int | RawRetry | None) -> int | None:
    """`retry: 2` and `retry: {limit: 2}` mean the same; None: not set (the server's default,
    `models.job.retry_limit`)."""
    if value is None:
        return None
    return value if isinstance(value, int) else value.limit


def _args(value: list[Any] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [_text(item) for item in value]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _env(raw: RawWorkflow, here: _KeyWhere) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    if isinstance(raw.env, list):
        for item in raw.env:
            key, eq, value = item.partition("=")
            if not key.strip():
                raise here.at("env").error(
                    f"invalid 'env' item {show(item)}", hint="use NAME=value"
                )
            env[key.strip()] = value if eq else None
    elif isinstance(raw.env, dict):
        env.update({k: None if v is None else _text(v) for k, v in raw.env.items()})
    for name, setting in (raw.environment or {}).items():
        env[name] = None if setting is None else _text(setting)
    return env


def _artifacts(items: list[str | RawArtifact] | None, where: Where) -> list[ArtifactSpec]:
    raws = [RawArtifact(path=item) if isinstance(item, str) else item for item in items or []]
    return [ArtifactSpec(path=_path(raw.path, where, "artifacts"), mount=raw.mount) for raw in raws]


def _cache(items: list[str | RawCache] | None, where: Where) -> list[str]:
    paths = [item if isinstance(item, str) else item.path for item in items or []]
    return [_path(path, where, "cache") for path in paths]


def _path(path: str, where: Where, key: str) -> str:
    """`path` when the one path check accepts it, else a `ConfigError` at the key's line."""
    try:
        return check_declared(path)
    except PathError as exc:
        raise where.error(
            f"invalid '{key}' item: {exc}",
            hint="use a path relative to the working directory (no '..'), under ~, "
            "or an absolute path in the container",
        ) from None


def split_repo(text: str) -> tuple[str | None, str]:
    """`owner/repo/name` → (`owner/repo`, `name`); a name without that prefix → (None, name)."""
    parts = text.split("/")
    if len(parts) >= 3:
        return "/".join(parts[:2]), "/".join(parts[2:])
    return None, text


def parse_dep(text: str) -> DepRef:
    """`X`, `X:latest`, `X:tag`, `:tag`, each with an optional `owner/repo/` prefix."""
    repo, text = split_repo(text)
    workflow, colon, tag = text.partition(":")
    if not colon:
        return DepRef(kind=DepKind.WORKFLOW, workflow=workflow, repo=repo)
    if tag == "latest":
        return DepRef(kind=DepKind.LATEST, workflow=workflow, repo=repo)
    return DepRef(kind=DepKind.TAG, workflow=workflow or None, tag=tag, repo=repo)


def _deps(raw: RawWorkflow, here: _KeyWhere) -> list[DepRef]:
    deps = [_dep(item, here.at("deps")) for item in raw.deps or []]
    deps += [_dep(item, here.at("depends-on")) for item in raw.depends_on or []]
    return deps


def _dep(item: str | RawDep, where: Where) -> DepRef:
    if isinstance(item, RawDep):
        if (item.workflow is None) == (item.tag is None):
            raise where.error("each deps item needs exactly one of 'workflow' or 'tag'")
        if item.tag is not None:
            repo, tag = split_repo(item.tag.strip())
            if not tag:
                raise where.error("a deps item has an empty 'tag'")
            return DepRef(kind=DepKind.TAG, tag=tag, repo=repo)
        item = str(item.workflow)
    dep = parse_dep(item.strip())
    if not (dep.workflow or dep.tag) or (dep.kind is DepKind.TAG and not dep.tag):
        raise where.error(f"invalid dependency {show(item)}", hint="write X, X:latest or :tag")
    return dep


def _triggers(items: list[str | RawTrigger] | None) -> list[str]:
    patterns: list[str] = []
    for item in items or []:
        patterns.extend([item] if isinstance(item, str) else item.repo.include)
    return patterns


def _resources(raw: RawResources | None, here: _KeyWhere) -> ResourcesSpec:
    if raw is None:
        return ResourcesSpec()
    return ResourcesSpec(
        cpu=raw.cpu or None,
        memory_mib=_size(raw.memory, here.at("memory"), "memory"),
        gpu=_gpu(raw.gpu, here.sub("gpu")),
        shm_size_mib=_size(raw.shm_size, here.at("shm_size"), "shm_size"),
        interruptible=bool(raw.interruptible),
        local=bool(raw.local),
        nodes=raw.nodes or 1,
    )


def _gpu(value: int | RawGpu | None, here: _KeyWhere) -> GpuRequest | None:
    if value is None:
        return None
    if isinstance(value, int):
        return GpuRequest(count=value) if value > 0 else None
    count = 1 if value.count is None else value.count
    if count == 0:
        return None
    return GpuRequest(
        count=count,
        name=value.name,
        memory_mib=_size(value.memory, here.at("memory"), "gpu.memory"),
    )


def _size(value: str | int | None, where: Where, key: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_memory_mib(value)
    except ValueError as exc:
        raise where.error(f"invalid 'resources.{key}': {exc}", hint="write e.g. 16GB") from None


def _port_count(value: int | list[int | str] | None, where: Where) -> int:
    if isinstance(value, list) or value is None:
        return 0
    if isinstance(value, bool) or value < 0:
        raise where.error(f"invalid 'ports' {show(value)}", hint="a number of ports, or a list")
    return value


def _ports(value: int | list[int | str] | None, where: Where) -> list[int]:
    if not isinstance(value, list):
        return []
    ports: list[int] = []
    for item in value:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit() or not 0 < int(text) < 65536:
            raise where.error(f"invalid port {show(item)}", hint="ports: [8000, 8001]")
        ports.append(int(text))
    return ports


def _registry_auth(raw: RawWorkflow) -> RegistryAuth | None:
    if raw.registry_auth is None:
        return None
    return RegistryAuth(**raw.registry_auth.model_dump())
