"""The `dstack` command: a lazy group, so `dstack --help` imports no heavy library.

Every command lives in its own module and is imported only when invoked. This is also the
only place errors are printed: one line plus the hint, exit code 1 or the error's own
(`DstackError.exit_code`; `--debug` adds the traceback).
"""

from __future__ import annotations

import gc
import importlib
import sys
import types
from typing import Any

import click

from dstack import __version__
from dstack.errors import DstackError

# name -> (module:attribute, one-line help shown by `dstack --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "workflows": ("dstack.cli.workflows:workflows", "List the workflows of this repository."),
    "plan": ("dstack.cli.plan:plan", "Show the jobs a run would start, without starting them."),
    "run": ("dstack.cli.run:run", "Run a workflow or a provider."),
    "ps": ("dstack.cli.ps:ps", "List runs, or show one run's jobs."),
    "logs": ("dstack.cli.logs:logs", "Show the output of a run."),
    "attach": ("dstack.cli.attach:attach", "Follow a running run's logs and show its apps."),
    "rerun": ("dstack.cli.rerun:rerun", "Run a run again, exactly as it was submitted."),
    "stop": ("dstack.cli.stop:stop", "Stop runs."),
    "rm": ("dstack.cli.rm:rm", "Remove finished runs."),
    "runners": ("dstack.cli.runners:runners", "List the runners; `runners token` makes a token."),
    "secrets": ("dstack.cli.secrets:secrets", "List, add, update and delete secrets."),
    "users": ("dstack.cli.users:users", "List, add and delete users of a server (admin)."),
    "backends": ("dstack.cli.backends:backends", "Add, list and delete cloud backends (admin)."),
    "aws": ("dstack.cli.aws:aws", "`aws configure`: let the server create runners on AWS."),
    "offers": ("dstack.cli.offers:offers", "List the machines the backends offer, cheapest first."),
    "tags": ("dstack.cli.tags:tags", "List, add and delete tags of runs."),
    "ls": ("dstack.cli.ls:ls", "List the artifacts of a run or tag."),
    "cp": ("dstack.cli.cp:cp", "Copy artifacts of a run or tag to a local folder."),
    "prune": ("dstack.cli.prune:prune", "Empty saved workflow caches."),
    "server": (
        "dstack.cli.server:server",
        "Run a server in the foreground; `server status | stop`: the local one.",
    ),
    "config": ("dstack.cli.config:config", "Add, list or delete remote servers."),
    "init": ("dstack.cli.init:init", "Let runners clone this repository (token or SSH key)."),
    "push": ("dstack.cli.push:push", "Copy a local run and its artifacts to a remote."),
    "pull": ("dstack.cli.pull:pull", "Copy a remote run and its artifacts here."),
    "ui": ("dstack.cli.ui:ui", "Open the server's web UI in the browser, signed in."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        if ctx.resilient_parsing:  # shell completion (and only it) parses this way
            # completion: ~10 ms only the TAB key needs
            from dstack.cli.complete import attach_completers

            attach_completers(cmd_name, command)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not ctx.resilient_parsing:
            # context: ~6 ms (and its imports) only commands with --remote need
            from dstack.cli.context import remote_words

            rest = remote_words(rest, command)
        return name, command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="dstack")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run ML workflows from your Git repository, here or on remote runners."""
    ctx.obj = {"debug": debug}


def _skip_unused_imports() -> None:
    """Keep out modules that libraries import for features the CLI never uses; they would
    cost more start-up time than the rest of httpx. httpcore imports `trio` (when installed)
    only to support trio event loops, and httpx imports `httpx._main` (with pygments and
    much of rich) only for its own command line. A `None` entry in `sys.modules` makes the
    import raise ImportError, which both libraries handle as "not installed". pydantic's
    plugin loader is replaced by `_NoPydanticPlugins`."""
    for name in ("trio", "httpx._main"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    sys.modules.setdefault(_NoPydanticPlugins.NAME, _NoPydanticPlugins(_NoPydanticPlugins.NAME))


class _NoPydanticPlugins(types.ModuleType):
    """pydantic's plugin loader as the CLI has it: no plugins. The real one imports
    `importlib.metadata` and reads the entry points of every installed distribution when the
    first model is built (about 20 ms of every command that validates anything), to find
    plugins that observe validation (tracing services); the CLI wants none. A name other
    than `get_plugins` (a pydantic that changed its loader) is the real module's."""

    NAME = "pydantic.plugin._loader"

    @staticmethod
    def get_plugins() -> tuple[()]:
        return ()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # what the import system asks of any module
            raise AttributeError(name)
        if sys.modules.get(self.NAME) is self:
            del sys.modules[self.NAME]
        return getattr(importlib.import_module(self.NAME), name)


def main(argv: list[str] | None = None) -> Any:
    _skip_unused_imports()

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        return cli.main(args, prog_name="dstack", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DstackError as exc:
        if debug:
            import traceback  # only with --debug: `dstack --help` is start-up time

            traceback.print_exc()
        click.echo(f"Error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def entry() -> None:
    """The `dstack` program: `main`, then an exit without a walk over every object.

    Interpreter shutdown runs full garbage collections over every object still alive; after
    pydantic's schemas and httpx are imported that is about 35 ms, a tenth of a short
    command. What is alive at exit is freed by the exit itself: frozen, it is out of the
    collector's sight. (Only here, not in `main`, which tests call in their own process.)

    Until then, the collector runs every 50,000 allocations instead of every 700: a command's
    start makes tens of thousands of objects that stay (modules, pydantic's schemas) and
    almost no cycles, and each collection walked them again (about 10 ms of CPU of a
    `dstack run`); what a long `dstack logs -f` makes is still collected.
    """
    gc.set_threshold(50_000, 10, 10)
    try:
        sys.exit(main())
    finally:
        gc.freeze()


if __name__ == "__main__":
    entry()
