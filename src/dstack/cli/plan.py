"""`dstack plan`: the jobs a run would start, in order, without starting anything."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dstack.api.submit import explain
from dstack.cli.context import cli_env, client_for, remote_option
from dstack.config import find_dstack_root, load_config
from dstack.errors import ConfigError, NotFoundError, RepoError
from dstack.providers import canonical_name
from dstack.providers.images import ImageSettings, resolve_image
from dstack.providers.plan import plan_provider, plan_workflow
from dstack.providers.registry import known_names
from dstack.repo.git import changed_paths, find_repo_root, read_repo_state

if TYPE_CHECKING:
    from dstack.config import RepoConfig
    from dstack.models.job import JobSpec
    from dstack.models.runs_api import PlanResponse
    from dstack.providers.images import ImageSettings
    from dstack.providers.plan import PlannedJob, RunPlan

HELP = """Show the jobs `dstack run NAME ARGS...` would start, without starting them.

NAME is a workflow of this repository, else a provider (bash, python, docker, ...). For each
job: its workflow, provider, image (the default one when the workflow names none), commands,
resources, ports, artifacts and dependencies, and which jobs the server would reuse from
earlier runs (the local one, or a remote with --remote). --json prints the plan as JSON.
--json and --remote are taken wherever they appear (use `--` to pass them on instead).
"""


@click.command(
    help=HELP,
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        # the arguments keep their `--` (it separates dstack's options from the script's)
        "allow_interspersed_args": False,
    },
)
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@remote_option
def plan(name: str, args: tuple[str, ...], as_json: bool, remote: str | None) -> None:
    cwd = Path.cwd()
    argv, late_json, late_remote = _take_own(list(args))
    as_json = as_json or late_json
    if remote is None:
        remote = late_remote
    run_plan, subdir = make_plan(cwd, name, argv, os.environ)
    try:
        answer = _explain(cwd, run_plan, subdir, remote)
        problem = None
    except NotFoundError as exc:  # a tag or an earlier run the plan needs does not exist
        answer, problem = None, exc
    if as_json:
        data = run_plan.model_dump(mode="json")
        if answer is not None:
            for job, explanation in zip(data["jobs"], answer.jobs, strict=True):
                job["cache"] = explanation.model_dump(mode="json")
        if problem is not None:
            data["error"] = problem.message
        click.echo(json.dumps(data, indent=2))
    else:
        env = cli_env()
        click.echo(render_plan(run_plan, ImageSettings(**env.images), executor=env.executor))
        if answer is not None:
            click.echo("")
            click.echo(render_explanations(answer))
    if problem is not None:
        raise problem


def _take_own(argv: list[str]) -> tuple[list[str], bool, str | None]:
    """`--json` and `--remote[=NAME]` anywhere before `--` are plan's own options, as they
    are `dstack run`'s (`--remote` alone: the default remote; a name: `--remote=NAME`)."""
    end = argv.index("--") if "--" in argv else len(argv)
    head: list[str] = []
    as_json, remote = False, None
    for arg in argv[:end]:
        key, _, value = arg.partition("=")
        if arg == "--json":
            as_json = True
        elif key == "--remote":
            remote = value
        else:
            head.append(arg)
    return [*head, *argv[end:]], as_json, remote


def _explain(cwd: Path, run_plan: RunPlan, subdir: str, remote: str | None) -> PlanResponse | None:
    """Ask the server (`client_for(remote)`) which jobs would be cached; None outside a git
    repository."""
    try:
        state = read_repo_state(cwd)
    except RepoError:
        return None
    return readable(explain(client_for(remote), run_plan, state, subdir=subdir), state.root)


_CODE_CHANGED = re.compile(r"code changed \(([0-9a-f]+)\.\.([0-9a-f]+)\)")


def readable(answer: PlanResponse, root: Path) -> PlanResponse:
    """Replace `code changed (OLD..NEW)` by the files that changed, when git can tell."""

    def files(match: re.Match[str]) -> str:
        old, new = match.groups()
        paths = changed_paths(root, old, new)
        return f"code changed: {paths}" if paths else f"code changed ({old[:8]}..{new[:8]})"

    jobs = [
        j.model_copy(update={"reason": _CODE_CHANGED.sub(files, j.reason)}) for j in answer.jobs
    ]
    return answer.model_copy(update={"jobs": jobs})


def render_explanations(answer: PlanResponse) -> str:
    """`prepare   cached (from run wise-cat-1)` / `train     runs: code changed`."""
    names = [e.workflow_name or f"job {e.index}" for e in answer.jobs]
    width = max(len(n) for n in names) + 2
    lines = ["Cache:"]
    for name, e in zip(names, answer.jobs, strict=True):
        verdict = f"cached (from run {e.cached_from})" if e.cached_from else f"runs: {e.reason}"
        lines.append(f"  {name:<{width}}{verdict}")
    placed = [
        (n, e.runners) for n, e in zip(names, answer.jobs, strict=True) if e.runners is not None
    ]
    if placed:
        lines += ["", "Runners that fit:"]
        width = max(len(n) for n, _ in placed) + 2
        for name, runners in placed:
            lines.append(f"  {name:<{width}}{', '.join(runners or []) or '(none registered)'}")
    return "\n".join(lines)


def make_plan(
    cwd: Path,
    name: str,
    argv: list[str],
    environ: Mapping[str, str],
    *,
    loaded: tuple[RepoConfig | None, Path | None] | None = None,
    repo_root: Path | None = None,
) -> tuple[RunPlan, str]:
    """Plan `name` as a workflow of the repository at `cwd` if it is one, else as a provider.

    `loaded` is what `load_repo_config(cwd)` returned, and `repo_root` what
    `find_repo_root(cwd)` did, when the caller has them already (each spares reading it
    twice). Returns the plan and the folder it is relative to inside the repository (the
    folder holding `.dstack/` for a workflow, `cwd` for a provider; "" outside git).
    """
    config, dstack_root = loaded if loaded is not None else load_repo_config(cwd)
    if config is not None and dstack_root is not None and name in config.workflow_names():
        subdir = _subdir(dstack_root, repo_root)
        return plan_workflow(config, name, argv, subdir=subdir, environ=environ), subdir
    if canonical_name(name) is not None:
        subdir = _subdir(cwd, repo_root)
        return plan_provider(name, argv, subdir=subdir, environ=environ), subdir
    raise unknown_name(name, config.workflow_names() if config is not None else [])


def unknown_name(name: str, workflows: list[str]) -> ConfigError:
    """`no workflow 'trian'; did you mean 'train'?` (a workflow or a provider, by difflib)."""
    # difflib: ~1 ms, only for an unknown name
    import difflib

    close = difflib.get_close_matches(name, [*workflows, *known_names()], n=1, cutoff=0.6)
    if close:
        return ConfigError(
            f"no workflow '{name}'; did you mean '{close[0]}'?",
            hint="`dstack workflows` lists the workflows of this repository",
        )
    known = ", ".join(workflows)
    return ConfigError(
        f"no workflow '{name}': it is neither a workflow of this repository nor a provider",
        hint=f"workflows: {known or '(none)'}; providers: {', '.join(known_names())}",
    )


def load_repo_config(cwd: Path) -> tuple[RepoConfig | None, Path | None]:
    """The configuration of the `.dstack/` folder above `cwd`, or (None, None) when none."""
    try:
        root = find_dstack_root(cwd)
    except ConfigError:
        return None, None
    return load_config(root), root


def _subdir(folder: Path, repo_root: Path | None = None) -> str:
    """`folder` relative to the repository root; "" outside git (nothing to be relative to).

    `repo_root` is the root of a folder below `folder` (the current one): no repository
    starts between the two, so it is `folder`'s root too when it holds `folder`."""
    folder = folder.resolve()
    if repo_root is not None and folder.is_relative_to(repo_root):
        root = repo_root
    else:
        try:
            root = find_repo_root(folder)
        except RepoError:
            return ""
    rel = folder.relative_to(root).as_posix()
    return "" if rel == "." else rel


def render_plan(run_plan: RunPlan, images: ImageSettings, executor: str | None = None) -> str:
    """The plan as text: a header, then one block per job; `executor`: `$DSTACK_EXECUTOR`
    (the process executor uses no image: none is shown)."""
    count = len(run_plan.jobs)
    target = (
        f"workflow '{run_plan.workflow_name}'"
        if run_plan.workflow_name
        else f"dstack run {run_plan.provider}"
    )
    lines = [f"Plan for {target}: {count} job{'s' if count != 1 else ''}"]
    if run_plan.variables:
        values = ", ".join(f"{k}={v}" for k, v in run_plan.variables.items())
        lines.append(f"Variables: {values}")
    if run_plan.run_args:
        lines.append(f"Arguments: {' '.join(run_plan.run_args)}")
    for index, job in enumerate(run_plan.jobs):
        lines += ["", *_job_lines(run_plan, index, job, images, executor)]
    return "\n".join(lines)


def _job_lines(
    run_plan: RunPlan, index: int, job: PlannedJob, images: ImageSettings, executor: str | None
) -> list[str]:
    spec = job.spec
    fields = [
        ("provider", spec.provider),
        ("image", _image(spec, images, executor)),
        ("working dir", spec.working_dir),
        ("commands", _commands(spec)),
        ("resources", spec.resources.describe()),
        ("ports", _ports(spec)),
        ("artifacts", ", ".join(a.path + (" (mount)" if a.mount else "") for a in spec.artifacts)),
        ("env", ", ".join(spec.env)),
        ("depends on", _deps(run_plan, job)),
    ]
    if spec.resources.nodes > 1:
        role = " (primary: MASTER_ADDR)" if spec.node_rank == 0 else ""
        fields.insert(0, ("node", f"{spec.node_rank} of {spec.resources.nodes}{role}"))
    lines = [f"Job {index}: {job.workflow_name or run_plan.provider}"]
    for label, value in fields:
        first, *rest = (value or "-").splitlines() or ["-"]
        lines.append(f"  {label + ':':<13}{first}")
        lines += [f"  {'':<13}{line}" for line in rest]
    return lines


def _image(spec: JobSpec, images: ImageSettings, executor: str | None) -> str:
    if executor == "process":
        if spec.image:
            return f"{spec.image} (not used: the process executor runs jobs on the host)"
        return "- (the process executor runs jobs on the host)"
    image = resolve_image(spec, images)
    return image if spec.image else f"{image} (default)"


def _commands(spec: JobSpec) -> str:
    lines = list(spec.commands) or ["(the image's default command)"]
    if spec.entrypoint:
        lines.insert(0, f"entrypoint: {' '.join(spec.entrypoint)}")
    return "\n".join(lines)


def _ports(spec: JobSpec) -> str:
    apps = {app.port_index: app.name for app in spec.apps}
    parts = []
    for i, port in enumerate(spec.ports):
        text = f"$PORT_{i}" + (f"={port.port}" if port.port else "")
        if i in apps:
            text += f" ({apps[i]})"
        parts.append(text)
    return ", ".join(parts)


def _deps(run_plan: RunPlan, job: PlannedJob) -> str:
    names = [f"job {i} ({run_plan.jobs[i].workflow_name})" for i in job.deps]
    names += [str(dep) for dep in job.external_deps]
    return ", ".join(names)
