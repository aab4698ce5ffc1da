"""`dstack run WORKFLOW_OR_PROVIDER [ARGS]...`"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dstack.cli.context import (
    cli_config,
    cli_env,
    client_for,
    home_layout,
    local_runner_executor,
    remote_option,
    start_local_server,
)
from dstack.cli.follow import exit_code_of, reconnect_option
from dstack.cli.render import print_runs
from dstack.errors import ConfigError, NotFoundError
from dstack.models.names import check_name

if TYPE_CHECKING:
    from dstack.api.client import Client
    from dstack.api.submit import UploadHooks
    from dstack.config import RepoConfig
    from dstack.models.run import Run
    from dstack.providers.plan import RunPlan
    from dstack.repo.git import RepoState

HELP = """Run a workflow of this repository, or a provider directly.

\b
  dstack run train                      # a workflow from .dstack/workflows.yaml
  dstack run train --epochs 100         # override a variable of the workflow
  dstack run train --help               # the workflow's variables and their defaults
  dstack run bash -c "nvidia-smi"       # a provider, without a workflow
  dstack run python --gpu 1 train.py --lr 0.1

Everything after WORKFLOW belongs to the workflow: declared variables (`--name value`), and
the rest is passed on as `${{ run.args }}` — except dstack's own -d, -t, -y, --reload,
--explain, --timestamps, --runner and --remote[=NAME], which may also follow a workflow's
name (use `--` to pass them on instead). An argument the workflow cannot take (an unknown
--variable, or any argument when it places none) is an error. `--remote` submits to the
default remote server (see `dstack config`). For a provider, dstack's options go before the
provider's name; the provider's own (--gpu, --dep, ...) may also follow a script, up to
`--`. Local changes (changed and untracked files, less those .dstackignore lists) are
uploaded with the run: their size is shown, and above DSTACK_UPLOAD_CONFIRM_SIZE (10MB) the
command asks first on a terminal (-y skips the question). With -d, stdout is the run's name
alone. The command shows the logs live, and the URL of each app the run serves once it
answers (`dstack attach RUN` shows them again), and exits with the run's exit code. While
the server is unreachable it reconnects, for up to --reconnect-timeout seconds (then exit
75).
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
@click.option("--reload", is_flag=True, help="Run every job, even when an earlier result fits.")
@click.option("--explain", is_flag=True, help="Say for each job why it runs or what it reuses.")
@click.option("-y", "--yes", is_flag=True, help="Upload local changes of any size without asking.")
@click.option(
    "--timestamps", is_flag=True, help="Start each log line with its time (UTC, ISO 8601)."
)
@click.option(
    "--runner", "show_runner", is_flag=True, help="Also the runner's own messages, on stderr."
)
@click.option("-h", "--help", "show_help", is_flag=True, help="Show this message and exit.")
@remote_option
@reconnect_option
@click.pass_context
def run(
    ctx: click.Context,
    name: str | None,
    args: tuple[str, ...],
    detach: bool,
    tag: str | None,
    reload: bool,
    explain: bool,
    yes: bool,
    timestamps: bool,
    show_runner: bool,
    show_help: bool,
    remote: str | None,
    reconnect_timeout: float,
) -> None:
    name, args, remote = _remote_or_workflow(name, args, remote)
    if show_help or name is None:
        click.echo(ctx.get_help())
        return
    argv = list(args)
    cwd = Path.cwd()
    if remote is None and _may_run_locally(argv) and _may_name_a_workflow(cwd, name):
        start_local_server()  # while the planner is imported, and git and the planner work
    # The planner, git and the client are imported below, once needed: `dstack run --help`
    # and a workflow's `--help` answer without them (about 150 ms).
    from dstack.cli.plan import load_repo_config, make_plan

    loaded = load_repo_config(cwd)
    config = loaded[0]
    if config is not None and name in config.workflow_names():
        if argv in (["-h"], ["--help"]):
            click.echo(workflow_help(config, name))
            return
        argv, late = split_run_options(argv, set(config.variable_defaults(name)))
        detach = detach or bool(late.get("detach"))
        reload = reload or bool(late.get("reload"))
        explain = explain or bool(late.get("explain"))
        yes = yes or bool(late.get("yes"))
        timestamps = timestamps or bool(late.get("timestamps"))
        show_runner = show_runner or bool(late.get("runner"))
        late_remote = late.get("remote")
        if isinstance(late_remote, str) and remote is None:
            remote = late_remote
        late_tag = late.get("tag")
        tag = tag or (late_tag if isinstance(late_tag, str) else None)
    if tag is not None:
        check_name(tag, "tag")
    if remote is None and config is not None and name in config.workflow_names():
        start_local_server()  # while git and the planner work (a cold start: about a second)
    from dstack.repo.git import probe_repo, read_repo_state  # see above

    probe = probe_repo(cwd)
    plan, subdir = make_plan(cwd, name, argv, os.environ, loaded=loaded, repo_root=probe.root)
    state = read_repo_state(probe.root, probe=probe)

    import dstack.api.submit  # noqa: F401  (needed next; imported while a server starts)

    client = client_for(remote)
    asked = cli_env().executor
    if remote is None and asked is not None:
        _check_local_executor(client, asked)
    from dstack.cli.upload import UploadPrompt  # see above

    hooks = UploadPrompt(threshold=cli_env().upload_confirm_bytes, yes=yes)
    try:
        submitted = _submit(client, plan, state, subdir, tag, reload, explain, hooks)
    except NotFoundError as exc:
        raise _on_remote(exc, remote) from None
    _print_submitted(submitted)
    if detach:
        # stdout holds the name alone: `name=$(dstack run -d train)`
        click.echo(submitted.name)
        return
    final = _attach(
        client,
        submitted,
        remote,
        reconnect_timeout,
        timestamps=timestamps,
        runner=show_runner,
    )

    sys.exit(exit_code_of(final))


def _submit(
    client: Client,
    plan: RunPlan,
    state: RepoState,
    subdir: str,
    tag: str | None,
    reload: bool,
    explain: bool,
    hooks: UploadHooks,
) -> Run:
    from dstack.api.submit import submit  # see above

    if explain:
        from dstack.api.submit import explain as explain_plan  # see above
        from dstack.cli.plan import readable, render_explanations  # see above

        answer = readable(
            explain_plan(client, plan, state, subdir=subdir, reload=reload), state.root
        )
        click.echo(render_explanations(answer), err=True)
    return submit(
        client,
        plan,
        state,
        subdir=subdir,
        cache_dir=home_layout().cache_dir,
        tag=tag,
        reload=reload,
        hooks=hooks,
    )


def _check_local_executor(client: Client, asked: str) -> None:
    """`DSTACK_EXECUTOR` reaches the local server's runner only when the server starts: a
    server started earlier with the other executor would run the job there, silently.

    The server's `server.json` names the executor it started its runner with: when that is
    the one asked for, no request is needed."""
    if local_runner_executor() == asked:
        return
    # settings: only when a local executor was asked for
    from dstack.settings import EXECUTOR

    runners = client.list_runners()
    local = [r for r in runners if r.name == "local" and r.status in ("ready", "busy")]
    if not local or asked in local[0].executors:
        return
    running = ", ".join(local[0].executors)
    raise ConfigError(
        f"{EXECUTOR}={asked}, but the local server's runner runs jobs with the {running}"
        " executor (the server was started earlier, with another setting)",
        hint=f"restart it: `dstack server stop`, then run again with {EXECUTOR}={asked}"
        f" (its running jobs stop); or unset {EXECUTOR}",
    )


_RUN_IT_FIRST = "run it first: dstack run "


def _on_remote(exc: NotFoundError, remote: str | None) -> NotFoundError:
    """On a remote, a dependency that ran only locally must run there (or be pushed)."""
    if remote is None or not (exc.hint or "").startswith(_RUN_IT_FIRST):
        return exc
    workflow = (exc.hint or "").removeprefix(_RUN_IT_FIRST).split()[0]
    flag = f"--remote={remote}" if remote else "--remote"
    return NotFoundError(
        f"{exc.message} on the remote",
        hint=f"run it first: dstack run {workflow} {flag}; or copy a local run of it there:"
        f" dstack push RUN {flag.replace('=', ' ')}",
    )


def _remote_or_workflow(
    name: str | None, args: tuple[str, ...], remote: str | None
) -> tuple[str | None, tuple[str, ...], str | None]:
    """`dstack run --remote train`: click reads `train` as the remote's name. When no remote
    has that name, it is the workflow (or provider) and `--remote` means the default remote."""
    if not remote:
        return name, args, remote
    if cli_config().find(remote) is not None:
        return name, args, remote
    rest = (name, *args) if name is not None else args
    return remote, rest, ""


def _may_run_locally(argv: list[str]) -> bool:
    """Whether a run's arguments leave it on the local server, as far as can be told before
    the workflows are read: not a workflow's `--help`, no late `--remote`."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    if words in (["-h"], ["--help"]):
        return False
    return not any(word.partition("=")[0] == "--remote" for word in words)


def _may_name_a_workflow(cwd: Path, name: str) -> bool:
    """Whether `name` stands as a word in a workflow file of the `.dstack/` folder above
    `cwd`: a look at the text, before the planner is imported, so that a mistyped name
    starts no local server (one that only appears in a comment still does, as before)."""
    # light (pathlib and YAML's module): imported before the planner, which reads the files
    from dstack.config.files import find_dstack_root, workflow_files

    try:
        root = find_dstack_root(cwd)
    except ConfigError:
        return False
    word = re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])")
    for path in workflow_files(root):
        try:
            if word.search(path.read_text(errors="replace")):
                return True
        except OSError:  # the planner says what is wrong with it
            return True
    return False


_LATE_FLAGS = {
    "-d": "detach",
    "--detach": "detach",
    "--reload": "reload",
    "--explain": "explain",
    "-y": "yes",
    "--yes": "yes",
    "--timestamps": "timestamps",
    "--runner": "runner",
}
_LATE_VALUES = {"-t": "tag", "--tag": "tag"}


def split_run_options(
    argv: list[str], variables: set[str]
) -> tuple[list[str], dict[str, str | bool]]:
    """Take `dstack run`'s own options out of a workflow's arguments.

    `dstack run train --epochs 3 -d` means what `dstack run -d train --epochs 3` does, unless
    the workflow declares a variable of that name; everything after `--` is left alone.
    """
    rest: list[str] = []
    found: dict[str, str | bool] = {}
    items = iter(argv)
    for arg in items:
        if arg == "--":
            rest += [arg, *items]
            break
        key, _, value = arg.partition("=")
        if key.lstrip("-") in variables:
            rest.append(arg)
        elif key == "--remote":
            # `--remote` alone means the default remote; a name needs `--remote=NAME`.
            found["remote"] = value
        elif arg in _LATE_FLAGS:
            found[_LATE_FLAGS[arg]] = True
        elif key in _LATE_VALUES:
            tag = value if value else next(items, None)
            if not tag:
                raise ConfigError(f"{key} needs a tag name", hint="dstack run train -t v1")
            found[_LATE_VALUES[key]] = tag
        else:
            rest.append(arg)
    return rest, found


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
    print_runs([submitted], stderr=True)


def _attach(
    client: Client,
    submitted: Run,
    remote: str | None,
    reconnect_timeout: float,
    *,
    timestamps: bool,
    runner: bool,
) -> Run:
    from dstack.cli.attach import attach_run  # `-d` skips the app announcer (about 15 ms)

    return attach_run(
        client,
        submitted,
        remote=remote,
        reconnect_timeout=reconnect_timeout,
        timestamps=timestamps,
        runner=runner,
    )
