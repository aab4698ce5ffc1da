"""`dstack run WORKFLOW_OR_PROVIDER [ARGS]...`"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.config import RepoConfig
    from dstack.models.run import Run
    from dstack.providers.plan import RunPlan

HELP = """Run a workflow of this repository, or a provider directly.

\b
  dstack run train                      # a workflow from .dstack/workflows.yaml
  dstack run train --epochs 100         # override a variable of the workflow
  dstack run train --help               # the workflow's variables and their defaults
  dstack run bash -c "nvidia-smi"       # a provider, without a workflow
  dstack run python --gpu 1 train.py --lr 0.1

dstack's own options go before WORKFLOW; everything after it belongs to the workflow:
declared variables (`--name value`), and the rest is passed on as `${{ run.args }}`.
The command shows the logs live and exits with the run's exit code.
"""


@click.command(
    help=HELP,
    add_help_option=False,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-d", "--detach", is_flag=True, help="Submit and return at once.")
@click.option("-t", "--tag", "tag", metavar="TAG", help="Tag the run when it succeeds.")
@click.option("-h", "--help", "show_help", is_flag=True, help="Show this message and exit.")
@click.pass_context
def run(
    ctx: click.Context,
    name: str | None,
    args: tuple[str, ...],
    detach: bool,
    tag: str | None,
    show_help: bool,
) -> None:
    if show_help or name is None:
        click.echo(ctx.get_help())
        return
    argv = list(args)
    cwd = Path.cwd()
    config, dstack_root = _load_config(cwd)
    if config is not None and name in config.workflow_names() and argv in (["-h"], ["--help"]):
        click.echo(workflow_help(config, name))
        return
    from dstack.repo.git import find_repo_root, read_repo_state

    repo_root = find_repo_root(cwd)
    plan, subdir = _plan(config, dstack_root, repo_root, cwd, name, argv)
    state = read_repo_state(repo_root)

    from dstack.api.submit import submit
    from dstack.cli.context import dstack_home, local_client

    client = local_client()
    submitted = submit(
        client, plan, state, subdir=subdir, cache_dir=dstack_home() / "cache", tag=tag
    )
    _print_submitted(submitted)
    if detach:
        return
    final = _attach(client, submitted.name)
    from dstack.cli.follow import exit_code_of

    sys.exit(exit_code_of(final))


def _load_config(cwd: Path) -> tuple[RepoConfig | None, Path | None]:
    from dstack.config import find_dstack_root, load_config
    from dstack.errors import ConfigError

    try:
        root = find_dstack_root(cwd)
    except ConfigError:
        return None, None
    return load_config(root), root


def _plan(
    config: RepoConfig | None,
    dstack_root: Path | None,
    repo_root: Path,
    cwd: Path,
    name: str,
    argv: list[str],
) -> tuple[RunPlan, str]:
    from dstack.errors import ConfigError
    from dstack.providers import PROVIDERS, canonical_name
    from dstack.providers.plan import plan_provider, plan_workflow

    if config is not None and dstack_root is not None and name in config.workflow_names():
        subdir = _relative(dstack_root, repo_root)
        return plan_workflow(config, name, argv, subdir=subdir, environ=os.environ), subdir
    if canonical_name(name) is not None:
        subdir = _relative(cwd, repo_root)
        return plan_provider(name, argv, subdir=subdir, environ=os.environ), subdir
    known = sorted(config.workflow_names()) if config is not None else []
    where = f"workflows: {', '.join(known)}" if known else "no .dstack/ workflows found here"
    raise ConfigError(
        f"'{name}' is neither a workflow nor a provider ({where})",
        hint=f"providers: {', '.join(sorted(PROVIDERS))}; see `dstack workflows`",
    )


def _relative(path: Path, root: Path) -> str:
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    return "" if rel == "." else rel


def workflow_help(config: RepoConfig, name: str) -> str:
    """Usage of one workflow: its help text and variables with their defaults."""
    lines = [f"Usage: dstack run {name} [--VARIABLE VALUE]... [ARGS]..."]
    help_text = config.help(name)
    if help_text:
        lines += ["", f"  {help_text}"]
    variables = config.variable_defaults(name)
    if variables:
        lines += ["", "Variables:"]
        width = max(len(k) for k in variables) + 2
        lines += [f"  --{k:<{width}} default: {v}" for k, v in variables.items()]
    else:
        lines += ["", "This workflow declares no variables; arguments go to ${{ run.args }}."]
    return "\n".join(lines)


def _print_submitted(submitted: Run) -> None:
    from dstack.cli.render import console, runs_table

    console(stderr=True).print(runs_table([submitted]))


def _attach(client: Client, run_name: str) -> Run:
    from dstack.cli.follow import RunFollower

    follower = RunFollower(client, run_name)
    while True:
        try:
            return follower.follow()
        except KeyboardInterrupt:
            if not _ask_to_stop(client, run_name):
                click.echo(
                    f"\nDetached. The run keeps going: `dstack logs -f {run_name}`,"
                    f" `dstack stop {run_name}`.",
                    err=True,
                )
                sys.exit(0)


def _ask_to_stop(client: Client, run_name: str) -> bool:
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return False
    try:
        stop = click.confirm(f"\nStop the run {run_name}?", default=False, err=True)
    except click.exceptions.Abort:
        return False
    if stop:
        client.stop_run(run_name, abort=False)
        click.echo("Stopping... (Ctrl+C again to detach)", err=True)
    return stop
