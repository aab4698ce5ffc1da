"""`dstack run <provider> ...`: a workflow built from command-line arguments.

Rule for where options go: dstack's options (`--gpu`, `--dep`, `-e`, ...) may come anywhere
before `--`; what follows `--` is passed on untouched. For providers that take a script or an
app (`python`, `torchrun`, `streamlit`, `gradio`, `fastapi`) the arguments after it that are
not dstack's long options (`--gpu 1`, `--dep=prepare:latest`) are passed to it, in order: the
early docs' `dstack run python train.py --epoch 100 --dep prepare:latest --gpu 1` gives the
script `--epoch 100` and dstack the rest. Short options (`-e`, `-a`, ...) are dstack's only
before the script: scripts use them too often. For the others (`bash`, `docker`, `lab`,
`notebook`, `code`) options may come anywhere; after `--` the rest is passed through (for
`bash`: appended to the last command).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
from pydantic import ValidationError

from dstack.errors import ConfigError
from dstack.models.paths import PathError, check_declared
from dstack.models.resources import GpuRequest, ResourcesSpec, parse_memory_mib
from dstack.models.workflow import ArtifactSpec, DepKind, DepRef, SourceLocation, WorkflowSpec
from dstack.providers.base import Provider
from dstack.providers.registry import get_provider

CLI_SOURCE = "command line"

_SHARED_HELP = {
    "requirements": "Install this requirements file with pip first.",
    "env": "Environment variable K=V (K alone: take it from your environment). Repeatable.",
    "artifact": "Folder to save as an artifact. Repeatable.",
    "dep": "Use the artifacts of X or X:latest (the last run of workflow X), :TAG or X:TAG."
    " Repeatable.",
    "working_dir": "Working directory, relative to the repository.",
    "interruptible": "Allow spot/preemptible machines.",
    "cpu": "Number of CPUs.",
    "memory": "Memory, e.g. 16GB.",
    "gpu": "Number of GPUs.",
    "gpu_name": "GPU model, e.g. A100 (implies --gpu 1 if not given).",
    "gpu_memory": "Minimum memory per GPU, e.g. 16GB.",
    "shm_size": "Size of /dev/shm, e.g. 8GB.",
    "ports": "Number of extra ports to open ($PORT_0, $PORT_1, ...).",
    "python": "Python version, e.g. 3.10.",
    "nodes": "Number of machines the run takes (torchrun: one torchrun per node).",
}


def _shared_options() -> list[click.Parameter]:
    h = _SHARED_HELP
    return [
        click.Option(["-r", "--requirements"], help=h["requirements"]),
        click.Option(["-e", "--env"], multiple=True, help=h["env"]),
        click.Option(["-a", "--artifact", "artifacts"], multiple=True, help=h["artifact"]),
        click.Option(["--dep", "deps"], multiple=True, help=h["dep"]),
        click.Option(["-w", "--working-dir"], help=h["working_dir"]),
        click.Option(["-i", "--interruptible"], is_flag=True, help=h["interruptible"]),
        click.Option(["--cpu"], type=click.IntRange(min=1), help=h["cpu"]),
        click.Option(["--memory"], help=h["memory"]),
        click.Option(["--gpu"], type=click.IntRange(min=0), help=h["gpu"]),
        click.Option(["--gpu-name"], help=h["gpu_name"]),
        click.Option(["--gpu-memory"], help=h["gpu_memory"]),
        click.Option(["--shm-size"], help=h["shm_size"]),
        click.Option(["-p", "--ports"], type=click.IntRange(min=0), default=0, help=h["ports"]),
        click.Option(["--python"], help=h["python"]),
        click.Option(["--nodes"], type=click.IntRange(min=1), default=1, help=h["nodes"]),
    ]


def _epilog(provider: Provider) -> str:
    if provider.positional in ("file", "app"):
        return (
            "The script gets the arguments after it, except dstack's long options (--gpu,"
            " --dep, ...), which may come anywhere; after -- everything is the script's."
            " Example: dstack run python train.py --epochs 3 --gpu 1 -- --seed 2"
        )
    return "Options may come anywhere; after -- the rest is passed through."


def provider_command(provider: Provider) -> click.Command:
    """The click command that parses `dstack run <provider> ...` (also used for its help)."""
    params = _shared_options()
    if provider.name in ("bash", "docker"):
        command = click.Option(
            ["-c", "--command", "commands"], multiple=True, help="Command to run. Repeatable."
        )
        params.insert(0, command)
    params.append(click.Argument(["args"], nargs=-1, metavar=provider.usage or ""))
    return click.Command(
        provider.name,
        params=params,
        help=provider.summary,
        epilog=_epilog(provider),
        add_help_option=True,
        context_settings={
            "allow_interspersed_args": provider.positional not in ("file", "app"),
            "help_option_names": ["-h", "--help"],
        },
    )


def provider_usage(provider_name: str) -> str:
    """`dstack run python [OPTIONS] FILE [ARGS]...`"""
    provider = get_provider(provider_name)
    return f"dstack run {provider.name} [OPTIONS] {provider.usage}".rstrip()


def parse_provider_args(provider: str, argv: list[str]) -> WorkflowSpec:
    """The workflow `dstack run <provider> ARGV...` describes.

    Raises `ConfigError` (with the usage as hint) on bad arguments; `--help` prints the
    provider's help and raises `click.exceptions.Exit(0)`.
    """
    impl = get_provider(provider)
    command = provider_command(impl)
    if impl.positional in ("file", "app"):
        argv = hoist_options(command, argv)
    try:
        ctx = command.make_context(f"dstack run {impl.name}", list(argv))
    except click.UsageError as exc:
        raise ConfigError(
            f"dstack run {impl.name}: {exc.format_message()}", hint=provider_usage(impl.name)
        ) from exc
    return _workflow_from_params(impl, ctx.params)


def hoist_options(command: click.Command, argv: list[str]) -> list[str]:
    """`[OPTS] SCRIPT ARGS...` with dstack's long options among ARGS moved before SCRIPT.

    Up to the script, click reads the options as usual. After it, `--gpu 1` or `--gpu=1`
    (any long option of `command`) is dstack's, up to a `--`; everything else, and all that
    follows `--`, is the script's. Returns `OPTS HOISTED -- SCRIPT ARGS...`.
    """
    takes_value: dict[str, bool] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in param.opts:
                takes_value[name] = not param.is_flag
    start = _script_index(argv, takes_value)
    if start is None:
        return list(argv)
    hoisted: list[str] = []
    script_args: list[str] = []
    rest = iter(argv[start + 1 :])
    for arg in rest:
        if arg == "--":
            script_args += rest
            break
        name, eq, _ = arg.partition("=")
        if not name.startswith("--") or name not in takes_value:
            script_args.append(arg)
            continue
        hoisted.append(arg)
        if takes_value[name] and not eq:
            value = next(rest, None)
            if value is not None:
                hoisted.append(value)
    return [*argv[:start], *hoisted, "--", argv[start], *script_args]


def _script_index(argv: list[str], takes_value: dict[str, bool]) -> int | None:
    """Where the script (the first positional argument) is in `argv`; None if there is none
    or a `--` comes first (then click reads it as given)."""
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return None
        if arg.startswith("-") and arg != "-":
            index += 2 if takes_value.get(arg) else 1
            continue
        return index
    return None


def _workflow_from_params(provider: Provider, params: dict[str, Any]) -> WorkflowSpec:
    fields = _positional_fields(provider, list(params["args"]), list(params.get("commands", ())))
    fields.update(
        requirements=params["requirements"],
        env=_parse_env(params["env"]),
        artifacts=[_artifact(provider, a) for a in params["artifacts"]],
        deps=[_cli_dep(d) for d in params["deps"]],
        working_dir=params["working_dir"],
        resources=_resources(params),
        port_count=params["ports"],
        python=params["python"],
    )
    try:
        return WorkflowSpec(
            name=provider.name,
            provider=provider.name,
            source=SourceLocation(file=CLI_SOURCE),
            **fields,
        )
    except ValidationError as exc:
        raise ConfigError(
            f"dstack run {provider.name}: {exc.errors()[0]['msg']}",
            hint=provider_usage(provider.name),
        ) from exc


def _artifact(provider: Provider, path: str) -> ArtifactSpec:
    try:
        return ArtifactSpec(path=check_declared(path))
    except PathError as exc:
        raise ConfigError(
            f"dstack run {provider.name}: invalid --artifact: {exc}",
            hint="use a path relative to the working directory (no '..'), under ~, "
            "or an absolute path in the container",
        ) from None


def _positional_fields(provider: Provider, args: list[str], commands: list[str]) -> dict[str, Any]:
    """Map the positional arguments onto the workflow fields the provider reads."""

    def missing(what: str) -> ConfigError:
        return ConfigError(
            f"dstack run {provider.name}: missing {what}", hint=provider_usage(provider.name)
        )

    if provider.name == "bash":
        if not commands:
            raise missing("a command (-c COMMAND)")
        return {"commands": commands, "args": args}
    if provider.positional is None:
        if args:
            raise ConfigError(
                f"dstack run {provider.name}: unexpected argument '{args[0]}'",
                hint=provider_usage(provider.name),
            )
        return {}
    if provider.positional == "args":  # every positional argument is an argument
        return {"args": args}
    if not args:
        raise missing(provider.usage.split()[0])
    first, rest = args[0], args[1:]
    if provider.positional == "image":
        if rest:
            raise ConfigError(
                f"dstack run docker: unexpected argument '{rest[0]}'",
                hint="give commands with -c, e.g. dstack run docker ubuntu -c 'echo hi'",
            )
        return {"image": first, "commands": commands}
    return {provider.positional: first, "args": rest}


def _parse_env(items: Sequence[str]) -> dict[str, str | None]:
    env: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError(f"invalid -e '{item}'", hint="write -e NAME=VALUE or -e NAME")
        env[key] = value if sep else None
    return env


def parse_dep(text: str) -> DepRef:
    """`X` (run workflow X), `X:latest`, `:TAG`, `X:TAG` → a `DepRef`."""
    workflow, sep, tag = text.strip().partition(":")
    if not sep and workflow:
        return DepRef(kind=DepKind.WORKFLOW, workflow=workflow)
    if sep and tag == "latest" and workflow:
        return DepRef(kind=DepKind.LATEST, workflow=workflow)
    if sep and tag and ":" not in tag:
        return DepRef(kind=DepKind.TAG, workflow=workflow or None, tag=tag)
    raise ConfigError(
        f"invalid dependency '{text}'", hint="write X, X:latest, :TAG or X:TAG (X: a workflow)"
    )


def _cli_dep(text: str) -> DepRef:
    """On the command line nothing else runs first: a bare `X` means the last run of X."""
    dep = parse_dep(text)
    if dep.kind is DepKind.WORKFLOW:
        return dep.model_copy(update={"kind": DepKind.LATEST})
    return dep


def _size(params: dict[str, Any], key: str, option: str) -> int | None:
    value = params[key]
    if value is None:
        return None
    return _parse(value, option, parse_memory_mib)


def _parse(value: str, option: str, parser: Callable[[str], int]) -> int:
    try:
        return parser(value)
    except ValueError as exc:
        raise ConfigError(f"invalid {option} '{value}': {exc}", hint="write e.g. 16GB") from exc


def _resources(params: dict[str, Any]) -> ResourcesSpec:
    gpu: GpuRequest | None = None
    gpu_memory = _size(params, "gpu_memory", "--gpu-memory")
    if params["gpu"] is not None or params["gpu_name"] or gpu_memory is not None:
        count = params["gpu"] if params["gpu"] is not None else 1
        gpu = GpuRequest(count=count, name=params["gpu_name"], memory_mib=gpu_memory)
    return ResourcesSpec(
        cpu=params["cpu"],
        memory_mib=_size(params, "memory", "--memory"),
        gpu=gpu,
        shm_size_mib=_size(params, "shm_size", "--shm-size"),
        interruptible=params["interruptible"],
        nodes=params["nodes"],
    )
