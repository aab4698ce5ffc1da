"""The arguments after a workflow's name: mistakes in them are errors, not silent arguments.

`dstack run train --epocs 2` must not run with the default epochs, and `dstack run evaluate
--epochs 2` must not ignore a variable that only `train` declares.
"""

from __future__ import annotations

import difflib

from dstack.config.repo_config import VARIABLES_FILE, RepoConfig
from dstack.config.variables import split_overrides
from dstack.errors import ConfigError


def check_run_arguments(config: RepoConfig, name: str, argv: list[str], *, consumes: bool) -> None:
    """Raise `ConfigError` for an argument before `--` that workflow `name` cannot mean.

    `consumes`: the workflow passes its arguments on (a script's provider, `${{ run.args }}`).
    Then only an option close to one of its variables, or a variable of another workflow, is
    refused (`--` passes it on anyway); otherwise every argument that sets no variable is.
    """
    declared = config.declared_variables(name)
    before = argv[: argv.index("--")] if "--" in argv else argv
    _, loose = split_overrides(before, declared, config.workflows[name].where)
    for arg in loose:
        if arg.startswith("--") and len(arg) > 2:
            _check_option(config, name, arg[2:].partition("=")[0], consumes)
        elif not consumes:
            raise ConfigError(
                f"workflow '{name}' takes no arguments, got '{arg}'",
                hint=_variables_hint(config, name)
                + "; its commands may place arguments with ${{ run.args }}",
            )


def _check_option(config: RepoConfig, name: str, key: str, consumes: bool) -> None:
    declared = list(config.declared_variables(name))
    close = difflib.get_close_matches(key, declared, n=1, cutoff=0.6)
    pass_on = f"to pass --{key} on to the script, put it after --: dstack run {name} -- --{key}"
    owners = [w for w, section in config.variables.items() if key in section and w != "global"]
    if owners:
        where = ", ".join(f"'{w}'" for w in owners)
        hints = [f"declare it under 'variables: {name}:' (or 'global:') to use it here"]
        if close:
            hints.insert(0, f"did you mean --{close[0]}?")
        raise ConfigError(
            f"--{key} is a variable of workflow {where} ({VARIABLES_FILE}), not of '{name}'",
            hint="; ".join(hints + ([pass_on] if consumes else [])),
        )
    if close:
        raise ConfigError(
            f"unknown variable --{key} for workflow '{name}'; did you mean --{close[0]}?",
            hint=pass_on if consumes else _variables_hint(config, name),
        )
    if not consumes:
        raise ConfigError(
            f"unknown variable --{key} for workflow '{name}'", hint=_variables_hint(config, name)
        )


def _variables_hint(config: RepoConfig, name: str) -> str:
    declared = config.declared_variables(name)
    if not declared:
        return f"workflow '{name}' declares no variables (see {VARIABLES_FILE})"
    return f"variables of '{name}': " + ", ".join(f"--{k}" for k in declared)
